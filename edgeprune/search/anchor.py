"""Anchored cost model: price a channel configuration without converting it.

One real conversion (the *anchor*) gives a .tflite whose ops and tensors carry the Keras layer
names (``model/block1a_conv/Conv2D;…``). To price another channel configuration of the same
architecture, every activation tensor's channel axis is set to its layer's new channel count
(tensors no name maps take their input's count through elementwise ops), weights and biases
follow their op's input/output channels, MACs and byte counts are recomputed, and the target's
own estimator runs on that synthetic graph. So a proposal is priced by exactly the latency,
RAM and flash rules the check stage applies, including channel tiling and the arena plan; what
it cannot see (converter re-fusions, quantization-parameter bytes) is checked on the next
anchor, and the search records predicted against actual.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.targets import TargetProfile
from edgeprune.tflite.graph import OpInfo, TensorInfo, TfliteGraph, parse_tflite

log = logging.getLogger(__name__)
QUANTITIES = ("latency_ms", "ram_bytes", "flash_bytes")
# Per output channel of a per-axis quantized tensor: a float32 scale and an int64 zero point.
_QUANT_BYTES_PER_CHANNEL = 12


@dataclass(frozen=True)
class Costs:
    """What a budget is checked against; None where the target has no estimate."""

    latency_ms: float | None
    ram_bytes: float | None
    flash_bytes: float

    def get(self, quantity: str) -> float | None:
        return getattr(self, quantity)

    def to_dict(self) -> dict[str, float | None]:
        return {
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 5),
            "ram_bytes": None if self.ram_bytes is None else int(self.ram_bytes),
            "flash_bytes": int(self.flash_bytes),
        }


def estimate_costs(tflite: bytes, target: TargetProfile) -> Costs:
    """The target's estimates of a real .tflite (flash is the file size)."""
    from edgeprune.estimate import estimate_target

    est = estimate_target(tflite, target)
    values = {m.quantity: m.value for m in est.measurements}
    return Costs(values.get("latency_ms"), values.get("ram_bytes"), float(len(tflite)))


class AnchoredCostModel:
    """Prices channel configurations (Keras layer name -> output channels) from one anchor."""

    def __init__(self, tflite: bytes, target: TargetProfile, channels: Mapping[str, int]):
        self.tflite = tflite
        self.target = target
        self.graph = parse_tflite(tflite, name="anchor.tflite")
        self.channels = dict(channels)  # the anchor model's output channels per layer
        self.costs = estimate_costs(tflite, target)
        self._layer_of = {t.index: _layer_in_name(t.name, self.channels)
                          for t in self.graph.tensors if not t.is_constant}

    def predict(self, channels: Mapping[str, int]) -> Costs:
        """Estimated costs of the same architecture with ``channels`` output channels."""
        graph = self.reshaped(channels)
        from edgeprune.estimate.result import ESTIMATORS

        fn = ESTIMATORS.get(self.target.hardware.kind)
        latency = ram = None
        if fn is not None and self.target.estimator is not None:
            est = fn(self.tflite, graph, self.target)
            latency, ram = est.latency_ms, est.ram_bytes
        return Costs(latency, ram, float(graph.model_bytes))

    def rounding_cost(self, channels: Mapping[str, int]) -> float:
        """What cost-aware rounding minimises: the estimated latency where the target has a
        latency estimator, else the MACs (a proxy every runtime pays)."""
        if has_latency_estimate(self.target):
            return self.predict(channels).latency_ms or 0.0
        return float(self.reshaped(channels).total_macs)

    def reshaped(self, channels: Mapping[str, int]) -> TfliteGraph:
        """The anchor graph with every channel axis set from ``channels``."""
        g = self.graph
        last: dict[int, int] = {}  # tensor -> new channel count, where it changes
        tensors = list(g.tensors)

        def new_last(t: int) -> int:
            return last.get(t, g.tensors[t].shape[-1] if g.tensors[t].shape else 0)

        for op in g.ops:
            acts = [t for t in op.inputs if t >= 0 and not g.tensors[t].is_constant]
            for t in op.outputs:
                info = g.tensors[t]
                if not info.shape:
                    continue
                layer = self._layer_of.get(t)
                if layer is not None and info.shape[-1] == self.channels[layer]:
                    last[t] = int(channels.get(layer, info.shape[-1]))
                elif acts and g.tensors[acts[0]].shape[-1:] == info.shape[-1:]:
                    last[t] = new_last(acts[0])  # elementwise, quantize, pooling, …
            self._reshape_constants(op, acts, new_last, tensors)
        for t, c in last.items():
            tensors[t] = _with_shape(tensors[t], (*tensors[t].shape[:-1], c))
        ops = tuple(_recount(op, tensors) for op in g.ops)
        delta = _constant_bytes(tensors) - _constant_bytes(g.tensors)
        delta += _QUANT_BYTES_PER_CHANNEL * sum(
            len(t.scale) - len(o.scale) for t, o in zip(tensors, g.tensors, strict=True)
            if t.is_constant and len(o.scale) > 1)
        return dataclasses.replace(g, ops=ops, tensors=tuple(tensors),
                                   model_bytes=g.model_bytes + delta)

    def _reshape_constants(self, op: OpInfo, acts: list[int], new_last: Any,
                           tensors: list[TensorInfo]) -> None:
        """Weights and biases follow the op's new input and output channels."""
        g = self.graph
        if not op.outputs or not g.tensors[op.outputs[0]].shape:
            return
        out_old = g.tensors[op.outputs[0]].shape[-1]
        out_new = new_last(op.outputs[0])
        in_old = g.tensors[acts[0]].shape[-1] if acts and g.tensors[acts[0]].shape else None
        in_new = new_last(acts[0]) if acts else None
        for pos, t in enumerate(op.inputs):
            if t < 0 or not g.tensors[t].is_constant or not g.tensors[t].shape:
                continue
            shape = list(g.tensors[t].shape)
            if op.op_type in ("CONV_2D", "FULLY_CONNECTED") and pos == 1 and len(shape) in (2, 4):
                if shape[0] == out_old:
                    shape[0] = out_new
                if in_old is not None and shape[-1] == in_old:
                    shape[-1] = in_new
            elif shape[-1] == out_old:  # depthwise filter [1,h,w,C], biases, per-channel consts
                shape[-1] = out_new
            if tuple(shape) != g.tensors[t].shape:
                tensors[t] = _with_shape(g.tensors[t], tuple(shape))


def has_latency_estimate(target: TargetProfile) -> bool:
    from edgeprune.estimate.result import ESTIMATORS

    return target.hardware.kind in ESTIMATORS and target.estimator is not None


class ChannelPricer:
    """Prices channel configurations of ``model`` (layer -> output channels) for cost-aware
    rounding (``prune_structured(cost=...)``), by ``AnchoredCostModel.rounding_cost``.

    The anchor conversion (seconds) happens on the first call only, so a cut whose rounding
    has no choice converts nothing. When it fails every configuration costs the same, which
    rounds half-up, and ``failure`` says why (the convert stage reports the real error)."""

    def __init__(self, model: Any, target: TargetProfile, quantize: str,
                 calib: np.ndarray | None, calib_samples: int = 50) -> None:
        self.model, self.target = model, target
        latency = has_latency_estimate(target)
        # Latency depends on the dtype (the build's mode); MACs do not (float converts faster).
        mode = ("int8" if quantize == "qat" else quantize) if latency else "none"
        if mode in ("int8", "int16x8") and calib is None:
            mode = "none"
        self.mode = mode
        self.calib = None if calib is None else calib[:calib_samples]
        self.basis = (f"{target.name}'s estimated latency ({mode} anchor)" if latency
                      else "MACs (the target has no latency estimator)")
        self.failure = ""
        self._model: AnchoredCostModel | None = None

    @property
    def note(self) -> str:
        """For the report, once rounding consulted the cost."""
        if self.failure:
            return f"cost-aware rounding unavailable ({self.failure}): kept counts rounded half-up"
        if self._model is None:
            return ""
        return f"cost-aware rounding priced channels by {self.basis}"

    def __call__(self, channels: Mapping[str, int]) -> float:
        if self.failure:
            return 0.0
        if self._model is None:
            try:
                self._model = self._anchor()
            except EdgepruneError as exc:
                self.failure = str(exc).splitlines()[0]
                log.warning("cost-aware rounding unavailable, rounding half-up: %s",
                            self.failure)
                return 0.0
        return self._model.rounding_cost(channels)

    def _anchor(self) -> AnchoredCostModel:
        from edgeprune.converter import to_tflite
        from edgeprune.pruning.graph import build_graph

        base = build_graph(self.model).layer_channels({})
        tflite = to_tflite(self.model, self.mode, self.calib, self.target)
        return AnchoredCostModel(tflite, self.target, base)


def _layer_in_name(name: str, layers: Mapping[str, int]) -> str | None:
    """The Keras layer a tensor name refers to (a path component), if any."""
    for part in name.split(";"):
        pieces = part.split("/")
        for i in range(len(pieces)):
            for j in (i + 2, i + 1):  # nested models: "inner/conv" before "conv"
                candidate = "/".join(pieces[i:j])
                if candidate in layers:
                    return candidate
    return None


def _with_shape(t: TensorInfo, shape: tuple[int, ...]) -> TensorInfo:
    bits = t.nbytes * 8 / t.elements if t.elements else 8
    n = math.prod(shape)
    scale = t.scale
    if len(t.scale) > 1 and t.quantized_dimension < len(shape):
        scale = t.scale[:1] * shape[t.quantized_dimension]
    return dataclasses.replace(t, shape=shape, nbytes=math.ceil(n * bits / 8), scale=scale)


def _constant_bytes(tensors: Any) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        if t.is_constant:
            seen.setdefault(t.buffer, t.nbytes)
    return sum(seen.values())


def _recount(op: OpInfo, tensors: list[TensorInfo]) -> OpInfo:
    from edgeprune.tflite import graph as tflite_graph

    ins = [tensors[t] if t >= 0 else None for t in op.inputs]
    outs = [tensors[t] for t in op.outputs]
    # The same MAC rules as parsing a real file (a private helper of the parser).
    macs, generic = tflite_graph._macs(op.op_type, ins, outs, op.options)
    used = {t for t in op.inputs if t >= 0}
    weight = sum(tensors[t].nbytes for t in used if tensors[t].is_constant)
    act = sum(tensors[t].nbytes for t in used if not tensors[t].is_constant)
    act += sum(tensors[t].nbytes for t in set(op.outputs))
    return dataclasses.replace(op, macs=macs, weight_bytes=weight, activation_bytes=act,
                               generic_macs=generic)
