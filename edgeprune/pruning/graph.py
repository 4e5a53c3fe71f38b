"""Channel dependency graph: which channels must be pruned together.

Every tensor's last (channel) axis gets one *atom* per position. A producer (Conv, Dense, …)
creates fresh atoms for its output channels; pass-through layers (BN, activations, pooling …)
hand their input atoms on; elementwise merges (Add, Multiply …) union the atoms of their inputs
(union-find); Concatenate concatenates atom lists; Flatten repeats them (position h*W*C + w*C + c
carries channel c's atom). Removing a channel means removing one union-find class everywhere it
appears: kernel columns of its producers, rows of its consumers, BN entries, and so on.

Atoms that touch a model output, a kept layer or a boundary (a layer we cannot reason about) are
*frozen*. A *group* is a set of producers whose channels are coupled; its channels are the
union-find classes it owns. Rules per layer type live in ``handlers.py``, registered there by
Keras class name, so this module imports no TensorFlow and also names Keras 3 classes.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeprune.errors import BadInputError
from edgeprune.pruning.handlers import HANDLERS, Handler
from edgeprune.pruning.ir import FlatModel, Op, flatten_model

log = logging.getLogger(__name__)

UNKNOWN_LAYER_MODES = ("boundary", "error")


@dataclass(frozen=True)
class Member:
    """A layer's view on group channels: ``key`` is the tensor whose slots carry the channels.

    kind: ``producer`` (output of a Conv/Dense), ``bn`` (input of a BatchNormalization),
    ``act`` (a post-activation output), ``out`` (a pre-activation output).
    """

    kind: str
    layer: str
    key: str


@dataclass
class ChannelGroup:
    id: int
    roots: np.ndarray  # union-find class per group channel
    prunable: np.ndarray  # bool per group channel
    layers: list[str]  # producers whose output channels are this group
    frozen_by: list[str] = field(default_factory=list)  # why channels are not prunable

    @property
    def size(self) -> int:
        return len(self.roots)

    @property
    def n_prunable(self) -> int:
        return int(self.prunable.sum())

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.id,
            "layers": list(self.layers),
            "channels": self.size,
            "prunable": self.n_prunable,
            "frozen_by": list(self.frozen_by),
        }


@dataclass
class ChannelGraph:
    flat: FlatModel
    keep: frozenset[str] = frozenset()
    unknown_layers: str = "boundary"
    atoms: dict[str, np.ndarray | None] = field(default_factory=dict)
    members: list[Member] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    boundaries: list[str] = field(default_factory=list)
    groups: list[ChannelGroup] = field(default_factory=list)
    _parent: list[int] = field(default_factory=list)
    _frozen: list[bool] = field(default_factory=list)
    _why: dict[int, set[str]] = field(default_factory=dict)  # root -> why it is frozen
    _spaces: dict[str, np.ndarray] = field(default_factory=dict)  # producer -> its atoms
    _first_call: dict[str, Op] = field(default_factory=dict)
    _mismatch: bool = False
    roots: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    root_gid: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    root_pos: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    # --- atoms and union-find -------------------------------------------------------------
    def new_atoms(self, n: int, frozen: bool = False, why: str = "") -> np.ndarray:
        start = len(self._parent)
        self._parent.extend(range(start, start + n))
        self._frozen.extend([frozen] * n)
        if frozen and why:
            self._why.update({a: {why} for a in range(start, start + n)})
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, a: int) -> int:
        parent = self._parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def unify(self, x: np.ndarray, y: np.ndarray) -> None:
        """Couple channel i of ``x`` with channel i of ``y``."""
        for a, b in zip(x.tolist(), y.tolist(), strict=True):
            ra, rb = self.find(a), self.find(b)
            if ra != rb:
                self._parent[rb] = ra
                self._frozen[ra] = self._frozen[ra] or self._frozen[rb]
                if rb in self._why:
                    self._why.setdefault(ra, set()).update(self._why.pop(rb))

    def freeze(self, atoms: np.ndarray | None, why: str = "") -> None:
        """Mark channels unprunable; ``why`` is shown by ``analyze`` and in the report."""
        if atoms is None:
            return
        for a in atoms.tolist():
            root = self.find(a)
            self._frozen[root] = True
            if why:
                self._why.setdefault(root, set()).add(why)

    def get(self, key: str) -> np.ndarray | None:
        return self.atoms.get(key)

    def set(self, key: str, atoms: np.ndarray | None) -> None:
        n = self.flat.channels(key)
        if atoms is not None and (n is None or len(atoms) != n):
            # A rule produced a mapping that disagrees with the static shape: do not trust it
            # (run() turns the op into a boundary).
            self._mismatch = True
            atoms = self.new_atoms(n, frozen=True, why="shape mismatch") if n else None
        self.atoms[key] = atoms

    # --- helpers for handlers -------------------------------------------------------------
    def layer_space(self, op: Op, n: int) -> np.ndarray:
        """Output atoms of a producer; a shared layer reuses them on every call."""
        if op.name not in self._spaces:
            self._spaces[op.name] = self.new_atoms(n)
        return self._spaces[op.name]

    def member(self, kind: str, op: Op, key: str) -> None:
        if self.get(key) is not None and op.call_index == 0:
            self.members.append(Member(kind, op.name, key))

    def passthrough(self, op: Op, kind: str | None = None) -> None:
        """Output channel i is input channel i (channel-wise layers)."""
        atoms = self.get(op.inputs[0]) if op.inputs else None
        if atoms is None or self.flat.channels(op.outputs[0]) != len(atoms):
            self.boundary(op, "its output channels do not match its input channels", warn=True)
            return
        self.set(op.outputs[0], atoms)
        if kind:
            self.member(kind, op, op.outputs[0])

    def boundary(
        self, op: Op, reason: str | None = None, warn: bool = False, why: str | None = None
    ) -> None:
        """Freeze the layer's input channels and give it frozen output channels."""
        why = why or f"boundary layer '{op.name}' ({op.type})"
        for key in op.inputs:
            self.freeze(self.get(key), why)
        for key in op.outputs:
            n = self.flat.channels(key)
            self.set(key, self.new_atoms(n, frozen=True, why=why) if n else None)
        if op.name not in self.boundaries:
            self.boundaries.append(op.name)
            if reason:
                msg = (
                    f"layer '{op.name}' ({op.type}) is a pruning boundary: {reason}; its input "
                    f"and output channels are kept"
                )
                if warn:
                    msg += f" (pass --keep {op.name} to make this explicit)"
                    log.warning(msg)
                self.notes.append(msg)

    # --- building ---------------------------------------------------------------------------
    def run(self) -> ChannelGraph:
        for spec in self.flat.inputs:
            n = self.flat.channels(spec.key)
            self.set(spec.key, self.new_atoms(n, frozen=True, why="model input") if n else None)
        for op in self.flat.ops:
            self._couple_shared_inputs(op)
            kept = self._kept_by(op)
            if kept:
                self.boundary(op, why=f"--keep {kept}")
                continue
            handler = _handler_for(op)
            if handler is None:
                self.unknown(op)
                continue
            self._mismatch = False
            handler(self, op)
            if self._mismatch:
                self.boundary(op, "its channel mapping does not match its shapes", warn=True)
        for key in self.flat.outputs:  # the model's outputs keep their meaning
            self.freeze(self.get(key), "model output")
        self._make_groups()
        return self

    def _kept_by(self, op: Op) -> str | None:
        """The ``--keep`` name that covers ``op`` (itself or a nested model around it)."""
        hits = self.keep & {op.name, op.layer.name, *op.scopes}
        return min(hits) if hits else None

    def _couple_shared_inputs(self, op: Op) -> None:
        # A shared layer has one set of weights, so every call must keep the same channels.
        first = self._first_call.setdefault(op.name, op)
        if first is op:
            return
        for k0, k1 in zip(first.inputs, op.inputs, strict=False):
            a0, a1 = self.get(k0), self.get(k1)
            if a0 is not None and a1 is not None and len(a0) == len(a1):
                self.unify(a0, a1)
            else:
                why = f"shared layer '{op.name}' called on inputs of different widths"
                self.freeze(a0, why)
                self.freeze(a1, why)

    def unknown(self, op: Op) -> None:
        """A layer without a rule: a boundary with a warning, or an error."""
        if self.unknown_layers == "error":
            raise BadInputError(
                f"layer '{op.name}' ({op.type})",
                "edgeprune cannot tell how this layer maps input channels to output channels",
                f"pass --keep {op.name} to keep its channels (it becomes a pruning boundary), "
                "or --unknown-layers boundary to do that for every such layer",
            )
        self.boundary(op, "edgeprune cannot tell how it maps channels", warn=True)

    def _make_groups(self) -> None:
        n = len(self._parent)
        self.roots = np.array([self.find(a) for a in range(n)], dtype=np.int64)
        frozen = np.array([self._frozen[r] for r in self.roots.tolist()], dtype=bool)
        # Producers sharing any channel class belong to one group (tiny union-find on names).
        owner: dict[int, str] = {}
        link: dict[str, str] = {name: name for name in self._spaces}

        def top(s: str) -> str:
            while link[s] != s:
                s = link[s]
            return s

        for name, atoms in self._spaces.items():
            for r in self.roots[atoms].tolist():
                if r in owner:
                    a, b = top(owner[r]), top(name)
                    if a != b:
                        link[b] = a
                else:
                    owner[r] = name
        comps: dict[str, list[str]] = {}
        for name in self._spaces:
            comps.setdefault(top(name), []).append(name)
        self.root_gid = np.full(n, -1, dtype=np.int64)
        self.root_pos = np.full(n, -1, dtype=np.int64)
        for gid, names in enumerate(comps.values()):
            roots: list[int] = []
            for name in names:
                for r in self.roots[self._spaces[name]].tolist():
                    if self.root_gid[r] < 0:
                        self.root_gid[r] = gid
                        self.root_pos[r] = len(roots)
                        roots.append(r)
            arr = np.array(roots, dtype=np.int64)
            why = sorted({w for r in arr[frozen[arr]].tolist() for w in self._why.get(r, ())})
            self.groups.append(ChannelGroup(gid, arr, ~frozen[arr], names, why))

    # --- queries ----------------------------------------------------------------------------
    def prunable_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.n_prunable > 0]

    def slots(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(group id, position in group) for every channel slot of a tensor."""
        atoms = self.get(key)
        if atoms is None:
            return None
        r = self.roots[atoms]
        return self.root_gid[r], self.root_pos[r]

    def keep_slots(self, key: str, removed: np.ndarray) -> np.ndarray | None:
        """Indices of the slots of ``key`` that survive; ``removed`` is a bool per atom root."""
        atoms = self.get(key)
        if atoms is None:
            return None
        return np.flatnonzero(~removed[self.roots[atoms]])

    def layer_channels(self, kept: dict[int, int]) -> dict[str, int]:
        """Output channels per layer (flat op name) when group ``g`` keeps ``kept[g]``
        channels (what a cost model prices; groups not in ``kept`` keep all)."""
        sizes = {g.id: g.size for g in self.groups}
        out: dict[str, int] = {}
        for op in self.flat.ops:
            if not op.outputs or op.name in out:
                continue
            base = self.flat.channels(op.outputs[0])
            slots = self.slots(op.outputs[0])
            if base is None:
                continue
            if slots is None or not kept:
                out[op.name] = int(base)
                continue
            gids = slots[0]
            n = float(np.sum(~np.isin(gids, list(kept))))
            for gid, k in kept.items():
                n += float(np.sum(gids == gid)) * k / sizes[gid]
            out[op.name] = round(n)
        return out


def _handler_for(op: Op) -> Handler | None:
    cls = type(op.layer)
    # Only Keras' own classes: a user class that happens to be called "Dense" is unknown, and so
    # is a custom layer revived from a SavedModel (Keras names it after the user's class).
    if not cls.__module__.startswith(("tf_keras.", "keras.")) or ".saving." in cls.__module__:
        return None
    return HANDLERS.get(cls.__name__)


def build_graph(
    model_or_flat: Any, keep: Sequence[str] = (), unknown_layers: str = "boundary"
) -> ChannelGraph:
    """Analyse a tf_keras model (or an already flattened one) into channel groups."""
    if unknown_layers not in UNKNOWN_LAYER_MODES:
        raise BadInputError(
            f"--unknown-layers {unknown_layers}",
            "not a known mode",
            f"use one of: {', '.join(UNKNOWN_LAYER_MODES)}",
        )
    flat = model_or_flat if isinstance(model_or_flat, FlatModel) else flatten_model(model_or_flat)
    check_keep(flat, keep)
    return ChannelGraph(flat, frozenset(keep), unknown_layers).run()


def check_keep(flat: FlatModel, keep: Iterable[str]) -> None:
    """Every ``--keep`` name must be a layer (or nested model) of the model."""
    known = {op.name for op in flat.ops} | {op.layer.name for op in flat.ops}
    known |= {s for op in flat.ops for s in op.scopes}
    for name in keep:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "check the layer names"
            raise BadInputError(
                f"--keep {name}",
                f"model '{flat.name}' has no layer named '{name}'",
                f"{hint} (`edgeprune analyze MODEL` lists the layers)",
            )
