"""Recipe: what ``build`` does, as a frozen dataclass validated at construction.

Resolution order (later wins): the target's ``[build]`` defaults < ``--recipe FILE.toml`` < CLI
options. Each layer is validated with the name of where a bad value came from.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeprune.dataspec import DataSpec, data_spec
from edgeprune.errors import RecipeError
from edgeprune.files import require_file

PRUNE_MODES = ("none", "magnitude", "m-by-n", "structured", "hybrid", "auto")
CRITERIA = ("l1", "l2", "bn", "apoz", "activation", "taylor")
QUANTIZE_MODES = ("int8", "int16x8", "float16", "dynamic", "qat", "none")
ALLOCATIONS = ("uniform", "global", "sensitivity")
L1_TARGETS = ("bn", "kernel")  # what --l1 penalises: batch-norm scales or conv/dense kernels
AFTER_PRUNE = ("finetune", "retrain")
EXPORT_FORMATS = ("onnx",)  # extra files of the emitted model (exporters/onnx.py)
OPTIMIZERS = ("adam", "sgd", "adamw")  # fine-tuning optimizers (training.make_optimizer)
LR_SCHEDULES = ("constant", "cosine")  # cosine: linear warm-up, then cosine decay to 0
SCHEDULES = ("oneshot", "gradual")  # channels cut at once, or in `steps` cuts (cubic)
CHANNEL_CUTTERS = ("structured", "hybrid", "auto")
GRADUAL_STEPS = 3  # cuts of schedule "gradual" when `steps` is not given
STRATEGIES = ("auto", "none", "mirrored", "multiworker")  # tf.distribute (distribute.py)


@dataclass(frozen=True)
class Recipe:
    prune: str = "none"
    sparsity: float = 0.5  # fraction removed (weights for magnitude, channels for structured)
    criterion: str = "l1"
    allocation: str = "uniform"  # how the channel ratio is spread over groups
    l1: float = 0.0  # λ of the L1 sparsity phase before channel selection (0: none)
    l1_on: str = "bn"
    l1_epochs: int = 0  # epochs of the L1 phase; 0: as many as `epochs`
    after_prune: str = "finetune"  # or "retrain": re-initialise the pruned architecture
    schedule: str = "oneshot"  # or "gradual": reach the channel plan in `steps` cuts
    steps: int = 0  # cuts of the gradual schedule; 0: GRADUAL_STEPS
    weight_sparsity: float = 0.5  # hybrid: magnitude-pruned fraction of the remaining weights
    quantize: str = "int8"
    epochs: int = 0
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    lr_schedule: str = "constant"
    warmup_epochs: int = 1  # lr_schedule "cosine": epochs of linear warm-up from 0
    distill: bool = False  # fine-tune against the input model's outputs (Hinton et al. 2015)
    temperature: float = 4.0  # distillation: softmax temperature T
    alpha: float = 0.5  # distillation: weight of the label loss (1 - alpha: the teacher's)
    seed: int = 0
    keep: tuple[str, ...] = ()  # layers never pruned
    calib_samples: int = 200  # representative-dataset size for int8 calibration
    search_minutes: float = 10.0  # --prune auto: time budget of the budget-driven search
    export: tuple[str, ...] = ()  # e.g. ("onnx",): model.onnx beside model.tflite
    data: DataSpec = dataclasses.field(default_factory=DataSpec)  # the [data] section
    strategy: str = "auto"  # tf.distribute strategy of every training phase (distribute.py)

    def __post_init__(self) -> None:
        _check_choice("prune", self.prune, PRUNE_MODES)
        _check_choice("criterion", self.criterion, CRITERIA)
        _check_choice("quantize", self.quantize, QUANTIZE_MODES)
        _check_choice("allocation", self.allocation, ALLOCATIONS)
        _check_choice("l1-on", self.l1_on, L1_TARGETS)
        _check_choice("after-prune", self.after_prune, AFTER_PRUNE)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("lr-schedule", self.lr_schedule, LR_SCHEDULES)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("strategy", self.strategy, STRATEGIES)
        for fmt in self.export:
            _check_choice("export", fmt, EXPORT_FORMATS)
        if not 0.0 <= self.l1 < float("inf"):  # also refuses NaN
            raise RecipeError(
                f"--l1 {self.l1}", "must be ≥ 0 (the L1 penalty weight λ)", "Use e.g. 1e-4"
            )
        for name in ("sparsity", "weight_sparsity"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise RecipeError(
                    f"--{name.replace('_', '-')} {value}",
                    "must be in [0, 1) (the fraction removed)",
                    "Use e.g. 0.5",
                )
        for name, (low, high) in _INT_RANGES.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise RecipeError(
                    f"--{name.replace('_', '-')} {value}",
                    f"must be ≥ {low}" if value < low else f"must be ≤ {high}",
                    f"Give a whole number from {low} to {high}",
                )
        if not 0 < self.search_minutes < float("inf"):
            raise RecipeError(
                f"--search-minutes {self.search_minutes}", "must be finite and > 0", "Use e.g. 10"
            )
        if not 0 < self.learning_rate < float("inf"):
            raise RecipeError(
                f"--learning-rate {self.learning_rate}", "must be finite and > 0", "Use e.g. 1e-3"
            )
        self._check_training()
        self._check_schedule()
        channel_only = {"--l1": self.l1 > 0, "--after-prune retrain": self.after_prune == "retrain"}
        for option, used in channel_only.items():
            if used and self.prune not in ("structured", "hybrid"):
                raise RecipeError(
                    f"{option} with --prune {self.prune}",
                    "applies to channel pruning only",
                    "Add --prune structured (or hybrid), or drop the option",
                )

    def _check_training(self) -> None:
        """The fine-tune's schedule and distillation options."""
        if (self.lr_schedule == "cosine" and 1 <= self.epochs <= self.warmup_epochs):
            raise RecipeError(
                f"--lr-schedule cosine with --warmup-epochs {self.warmup_epochs} and "
                f"--epochs {self.epochs}",
                "the warm-up must end before the last epoch, or nothing is left to decay",
                f"Use --warmup-epochs 0 to {self.epochs - 1}, or more --epochs",
            )
        if not isinstance(self.distill, bool):
            raise RecipeError(f"--distill {self.distill!r}", "must be true or false",
                              "Use --distill or --no-distill")
        if not 0 < self.temperature < float("inf"):  # also refuses NaN
            raise RecipeError(
                f"--temperature {self.temperature}",
                "must be finite and > 0 (the distillation softmax temperature T)",
                "Use e.g. 4 (1 to 20 is usual)",
            )
        if not 0.0 <= self.alpha <= 1.0:
            raise RecipeError(
                f"--alpha {self.alpha}",
                "must be in [0, 1] (the weight of the label loss; 1 - alpha weighs the teacher's)",
                "Use e.g. 0.5",
            )

    def cuts(self) -> int:
        """How many cuts reach the channel plan: 1 for ``oneshot``."""
        if self.schedule == "oneshot":
            return 1
        return self.steps or GRADUAL_STEPS

    def _check_schedule(self) -> None:
        """``gradual``: channel pruning only, each cut fine-tuned for at least one epoch."""
        if self.schedule == "oneshot":
            if self.steps:
                raise RecipeError(f"--steps {self.steps} with --schedule oneshot",
                                  "steps are the cuts of the gradual schedule",
                                  "Add --schedule gradual, or drop --steps")
            return
        where = f"--schedule gradual with --prune {self.prune}"
        if self.prune not in CHANNEL_CUTTERS:
            raise RecipeError(where, "applies to channel pruning only",
                              f"Use --prune {', '.join(CHANNEL_CUTTERS)}, or --schedule oneshot")
        k = self.cuts()
        if k < 2:
            raise RecipeError(f"--steps {k} with --schedule gradual",
                              "one cut is the oneshot schedule", "Use --steps 2 or more")
        if self.epochs < k:
            raise RecipeError(
                f"--schedule gradual with --epochs {self.epochs} and {k} steps",
                "every cut is fine-tuned before the next, for at least one epoch each; "
                "the steps share --epochs",
                f"Pass --epochs {k} or more (e.g. {max(10, k)}), or fewer --steps")
        clash = {"--l1": self.l1 > 0, "--after-prune retrain": self.after_prune == "retrain"}
        for option, used in clash.items():
            if used:
                raise RecipeError(f"--schedule gradual with {option}",
                                  "is not implemented for the gradual schedule",
                                  f"Use --schedule oneshot, or drop {option}")
        if self.lr_schedule == "cosine" and self.epochs // k <= self.warmup_epochs:
            raise RecipeError(
                f"--lr-schedule cosine with --warmup-epochs {self.warmup_epochs}, --epochs "
                f"{self.epochs} and --schedule gradual ({k} steps)",
                f"each step's fine-tune (at least {self.epochs // k} epochs) restarts the "
                "schedule, and its warm-up must end before its last epoch",
                "Use fewer --warmup-epochs or --steps, or more --epochs")

    def pick(self, names: tuple[str, ...] | list[str]) -> dict[str, Any]:
        """The values of ``names``: what a stage declares it reads, for its cache key."""
        values = {name: getattr(self, name) for name in names}
        return {k: v.to_dict() if isinstance(v, DataSpec) else v for k, v in values.items()}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["keep"] = list(self.keep)
        d["export"] = list(self.export)
        d["data"] = self.data.to_dict()
        return d


_FIELDS = {f.name: f for f in dataclasses.fields(Recipe)}
# Whole-number options: (minimum, maximum). The seed feeds numpy/TF seeding (32-bit); the
# others are capped far above any real use so a typo cannot overflow TensorFlow.
_INT_RANGES = {
    "epochs": (0, 100_000), "l1_epochs": (0, 100_000), "seed": (0, 2**32 - 1),
    "batch_size": (1, 2**20), "calib_samples": (1, 2**24), "warmup_epochs": (0, 100_000),
    "steps": (0, 1_000),
}


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise RecipeError(
            f"--{name} {value}", f"is not one of {', '.join(allowed)}", "Pick one of those"
        )


def _coerce(source: str, key: str, value: Any) -> Any:
    """Check one value's type against the Recipe field; ``source`` names where it came from."""
    if key not in _FIELDS:
        raise RecipeError(
            source, f"unknown recipe key {key!r}", f"Allowed keys: {', '.join(sorted(_FIELDS))}"
        )
    if key == "data":
        return data_spec(source, value)
    default = _FIELDS[key].default
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise RecipeError(source, f"{key} = {value!r} must be a list of names", "Fix it")
        return tuple(value)
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(default, bool) and isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int)
    elif isinstance(default, float):
        # float() of a huge int raises OverflowError; NaN/inf are refused by Recipe itself
        ok = isinstance(value, float) or (isinstance(value, int) and abs(value) < 2**1000)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise RecipeError(
            source,
            f"{key} = {value!r} has the wrong type (expected {type(default).__name__})",
            "Fix the value",
        )
    return value


def read_recipe_file(path: Path) -> dict[str, Any]:
    """A recipe TOML: recipe keys at top level or under ``[build]``."""
    require_file(path, f"--recipe {path}", "Give a path to a recipe .toml", RecipeError)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(str(path), f"TOML syntax error: {exc}", "Fix the file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(str(path), f"cannot be read ({exc})", "Check the file") from exc
    if "build" in raw and isinstance(raw["build"], dict):
        raw = {**{k: v for k, v in raw.items() if k != "build"}, **raw["build"]}
    return raw


def resolve_recipe(
    target_defaults: dict[str, Any],
    target_source: str,
    recipe_file: Path | None,
    cli: dict[str, Any],
) -> Recipe:
    """target ``[build]`` < recipe file < CLI (CLI values of ``None`` are "not given")."""
    values: dict[str, Any] = {}
    layers = [(f"{target_source} [build]", target_defaults)]
    if recipe_file is not None:
        layers.append((str(recipe_file), read_recipe_file(recipe_file)))
    for source, layer in layers:
        for key, value in layer.items():
            values[key] = _coerce(source, key, value)
    for key, value in cli.items():
        if value is not None and value != ():
            values[key] = _coerce(f"--{key.replace('_', '-')}", key, value)
    return Recipe(**values)


def resolve_for_build(
    target_defaults: dict[str, Any], target_source: str, recipe_file: Path | None,
    cli: dict[str, Any], *, has_train: bool,
) -> tuple[Recipe, list[str]]:
    """``resolve_recipe``, without the target's gradual schedule where the user's own choices
    rule it out (``--prune weights``, ``--epochs 2``, ``--l1``, no ``--data``, …); the note
    says so. A target default must not turn an option that works elsewhere into an error; a
    schedule the user asks for (recipe file or ``--schedule``) is still refused."""
    explicit = {k: v for k, v in cli.items() if v is not None and v != ()}
    if recipe_file is not None:
        explicit = {**read_recipe_file(recipe_file), **explicit}
    if "schedule" in explicit and "steps" not in explicit and explicit["schedule"] != "gradual":
        # the target's steps are the cuts of its gradual schedule, which the user replaced
        target_defaults = {k: v for k, v in target_defaults.items() if k != "steps"}
    if target_defaults.get("schedule") != "gradual" or "schedule" in explicit:
        return resolve_recipe(target_defaults, target_source, recipe_file, cli), []
    why = "" if has_train else "no training data (--data) to fine-tune between the cuts"
    if not why:
        try:
            return resolve_recipe(target_defaults, target_source, recipe_file, cli), []
        except RecipeError as exc:
            if "gradual" not in exc.what:
                raise
            why = f"{exc.what}: {exc.problem}"
    kept = {k: v for k, v in target_defaults.items() if k not in ("schedule", "steps")}
    return resolve_recipe(kept, target_source, recipe_file, cli), [
        f"{target_source} [build] sets schedule = \"gradual\", which does not apply to this "
        f"build ({why}); the one-shot schedule is used"]
