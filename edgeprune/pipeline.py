"""The build driver: a flat list of stage calls, like a compiler driver.

Everything the user gave is validated before any folder is created. The build writes into a
hidden temporary folder beside the final one and renames it into place only when complete, so a
failed or interrupted build leaves nothing behind and never half-replaces a previous build.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import data as data_mod
from edgeprune import fidelity, model_io, stage_cache
from edgeprune.errors import BadInputError, DataError
from edgeprune.keras3 import bridge as keras3_bridge
from edgeprune.keras3 import export as keras3_export
from edgeprune.manifest import write_manifest
from edgeprune.recipe import Recipe, resolve_recipe
from edgeprune.resources import example_inputs
from edgeprune.stages import (
    artifacts,
    check,
    convert,
    finetune,
    measure,
    prune,
    qat,
    quantize,
    report,
)
from edgeprune.stages.check import Measurement
from edgeprune.stages.prune import Pruned
from edgeprune.targets import TargetProfile, load_target

log = logging.getLogger(__name__)
SAMPLES_ON_TARGET = 24  # samples whose outputs are compared on a device / under QEMU


@dataclass(frozen=True)
class BuildRequest:
    model: Path | None = None  # None: the bundled example
    data: Path | None = None
    val: Path | None = None
    calib: Path | None = None
    recipe_file: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # CLI recipe options
    out: Path = Path("build")
    trust_model: bool = False
    strict: bool = False
    tensorboard: bool = False
    on_target: measure.OnTarget = field(default_factory=measure.OnTarget)
    resume: bool = False  # reuse cached stage outputs (OUT/.edgeprune-cache) whose keys match


@dataclass(frozen=True)
class BuildOutcome:
    target: TargetProfile
    folder: Path
    report: dict[str, Any]
    exit_code: int


class StageTimer:
    """Times each stage and logs one line per stage."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        log.info("%-9s …", name)
        yield
        elapsed = time.perf_counter() - start
        self.timings[name] = self.timings.get(name, 0.0) + elapsed
        log.info("%-9s done in %.1f s", name, elapsed)


def _with_example_defaults(req: BuildRequest) -> BuildRequest:
    if req.model is not None:
        return req
    ex = example_inputs()
    return BuildRequest(
        **{**req.__dict__, "model": ex["model"], "data": req.data or ex["data"],
           "val": req.val or ex["val"], "calib": req.calib or ex["calib"]}
    )


def load_inputs(req: BuildRequest, model: Any, recipe: Recipe) -> data_mod.Inputs:
    """Labelled data, held-out data and calibration samples, checked against the model."""
    shape = tuple(model.input_shape)
    n_classes = model_io.num_classes(model)
    train = data_mod.load_labelled(req.data, "--data") if req.data else None
    val = data_mod.load_labelled(req.val, "--val") if req.val else None
    for option, labelled in (("--data", train), ("--val", val)):
        if labelled is not None:
            x = data_mod.check_against_model(labelled.x, shape, f"{option} {labelled.source}")
            labelled = data_mod.Labelled(x, labelled.y, labelled.source)
            data_mod.check_labels(labelled, n_classes, option)
            train, val = (labelled, val) if option == "--data" else (train, labelled)
    holdout = False
    if val is None and train is not None:
        train, val = data_mod.holdout_split(train, recipe.seed)
        holdout = True
    calib = None
    if req.calib is not None:
        calib = data_mod.check_against_model(
            data_mod.load_calib(req.calib), shape, f"--calib {req.calib}"
        )
    elif train is not None:
        calib = train.x
    if calib is not None:
        calib = data_mod.calibration_sample(calib, recipe.calib_samples, recipe.seed)
    if recipe.quantize in quantize.CALIBRATED_MODES and calib is None:
        raise DataError(
            f"--quantize {recipe.quantize}",
            "needs calibration samples and neither --calib nor --data was given",
            "Pass --calib SAMPLES (.npz/.npy/image folder) or --data TRAIN.npz",
        )
    qat.check_inputs(recipe, train)
    return data_mod.Inputs(train=train, val=val, calib=calib, val_is_holdout=holdout)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise BadInputError(
            f"--out {out}", "is a file, not a folder", "Give a folder path (it will be created)"
        )


def weight_sparsity(model: Any) -> float:
    """Fraction of exact zeros in the kernels of conv/dense layers."""
    zeros = total = 0
    for layer in model.layers:
        for w in layer.weights:
            if "kernel" in w.name:
                values = w.numpy()
                zeros += int(np.count_nonzero(values == 0))
                total += values.size
    return zeros / total if total else 0.0


def gzip_size(blob: bytes) -> int:
    """What a compressed download costs: unstructured zeros show up here, not in the file."""
    return len(gzip.compress(blob, compresslevel=9, mtime=0))


def _tflite_macs(tflite: bytes) -> int:
    from edgeprune.estimate.tflite_graph import parse_tflite

    return parse_tflite(tflite, name="model.tflite").total_macs


def _accuracy(tflite: bytes, inputs: data_mod.Inputs) -> float | None:
    if inputs.val is None:
        return None
    return measure.accuracy(tflite, inputs.val.x, inputs.val.y, inputs.val.source).value


def _layer_rows(before: Any, after: Any) -> list[dict[str, Any]]:
    """Per layer with weights: params, MACs and channels of the result against the input model.

    ``sparsity`` is the fraction of the input layer's parameters that are gone (removed
    channels) or zero (unstructured pruning) in the result.
    """
    from edgeprune.pruning import layer_stats

    old = {row["name"]: row for row in layer_stats(before)}
    layers = {layer.name: layer for layer in _flat_layers(after)}
    rows = []
    for row in layer_stats(after):
        prev = old.get(row["name"], row)
        if not prev["params"]:
            continue
        layer = layers.get(row["name"])
        nonzero = sum(int(np.count_nonzero(w)) for w in layer.get_weights()) if layer else 0
        rows.append({
            "name": row["name"], "type": row["type"], "params": row["params"],
            "macs": row["macs"], "channels_before": prev["out_channels"],
            "channels_after": row["out_channels"],
            "sparsity": round(1 - nonzero / prev["params"], 4),
        })
    return rows


def _flat_layers(model: Any) -> list[Any]:
    """Layers of nested models included, as layer_stats lists them."""
    found = []
    for layer in model.layers:
        found.extend(_flat_layers(layer) if hasattr(layer, "layers") else [layer])
    return found


def _measure(
    tflite: bytes, inputs: data_mod.Inputs, target: TargetProfile, samples: np.ndarray
) -> tuple[list[Measurement], dict[str, Any]]:
    """Size, accuracy, host latency and the target's estimates (with their per-op detail)."""
    ms = [measure.flash(tflite, target, "model.tflite")]
    if inputs.val is not None:
        ms.append(measure.accuracy(tflite, inputs.val.x, inputs.val.y, inputs.val.source))
    ms.append(measure.host_latency(tflite, samples[0], target))
    estimate = measure.estimates(tflite, target)
    ms.extend(estimate.measurements)
    return ms, estimate.to_dict()


def _samples(inputs: data_mod.Inputs, input_shape: tuple[int | None, ...]) -> np.ndarray:
    """Samples to run on devices and emulators: held-out or calibration data, else seeded noise
    of the model's input shape."""
    for x in (inputs.val.x if inputs.val else None, inputs.calib):
        if x is not None:
            return x[:SAMPLES_ON_TARGET]
    shape = [d or 1 for d in input_shape[1:]]
    return np.random.default_rng(0).random((4, *shape), dtype=np.float32)


def _samples_from(inputs: data_mod.Inputs) -> str:
    """What ``_samples`` returns, for reports."""
    if inputs.val is not None:
        return inputs.val.source
    return "the calibration samples" if inputs.calib is not None else "seeded noise (no data)"


def _model_notes(model_in: dict[str, Any] | None, model_out: dict[str, Any]) -> list[str]:
    notes = []
    if model_in is not None:
        notes.append(f"Keras {model_in['keras_version']} model, rebuilt in tf_keras for pruning: "
                     f"outputs agree to {model_in['max_abs_diff']:.2g} on {model_in['samples']} "
                     f"samples of {model_in['samples_from']}")
    notes.append(f"model.keras: the pruned float model as a {model_out['flavour']} file "
                 f"({model_out['params']:,} parameters)")
    return notes


def build(req: BuildRequest, target_spec: str) -> BuildOutcome:
    """Run the whole pipeline for one target; returns the outcome with its exit code (0/1)."""
    timer = StageTimer()
    req = _with_example_defaults(req)
    target = load_target(target_spec)
    recipe = resolve_recipe(target.build, target.source, req.recipe_file, req.overrides)
    quantize.check_target(recipe.quantize, target)
    _check_out(req.out)
    with timer.stage("load"):
        model = model_io.load_model(req.model, trust_model=req.trust_model)
        inputs = load_inputs(req, model, recipe)
        # A Keras 3 model was rebuilt in tf_keras: prove on real samples that it is the same.
        model_in = keras3_bridge.verify(model, _samples(inputs, tuple(model.input_shape)),
                                        _samples_from(inputs))
        prune.check(model, recipe, inputs)
        key = stage_cache.input_key(
            {"model": req.model, "data": req.data, "val": req.val, "calib": req.calib}, recipe)
    finetune.seed_everything(recipe.seed)
    cache = stage_cache.StageCache.for_target(req.out, target.name, req.resume, recipe.seed,
                                              req.trust_model)

    created_out = not req.out.exists()
    req.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=req.out))
    work.chmod(0o755)  # mkdtemp's 0700 would make the finished folder private
    try:
        # Cached stages: each output is stored under a key chained from the previous stage's
        # (stage_cache); --resume loads it instead of recomputing when the key matches.
        with timer.stage("baseline"):
            key = stage_cache.next_key(key, "baseline", recipe, target)
            baseline = cache.run("baseline", key, lambda: _baseline(model, inputs, target),
                                 stage_cache.save_json, stage_cache.load_json)
            base_acc = baseline["accuracy"]
        with timer.stage("prune"):
            key = stage_cache.next_key(key, "prune", recipe, target)
            pruned = cache.run("prune", key, lambda: prune.run(model, recipe, target, inputs),
                               stage_cache.save_pruned, cache.load_pruned)
        with timer.stage("finetune"):
            log_dir = work / "logs" if req.tensorboard else None
            key = stage_cache.next_key(key, "finetune", recipe, target)
            final_model, trained = cache.run(  # with --tensorboard its logs are wanted: train
                "finetune", key, lambda: _finetune(pruned, inputs, recipe, log_dir),
                stage_cache.save_trained, cache.load_trained, reusable=log_dir is None)
        qat_model = qat_trained = None
        if recipe.quantize == "qat":
            with timer.stage("qat"):
                key = stage_cache.next_key(key, "qat", recipe, target)
                wrapped, (qat_model, qat_trained) = cache.run(
                    "qat", key, lambda: _qat(final_model, inputs, recipe, log_dir),
                    stage_cache.never, stage_cache.never)
                final_model = wrapped.strip(qat_model)
                pruned.notes.extend(wrapped.notes)
        with timer.stage("convert"):
            key = stage_cache.next_key(key, "convert", recipe, target)
            tflite = cache.run(
                "convert", key, lambda: convert.to_tflite(
                    final_model if qat_model is None else qat_model, recipe.quantize,
                    inputs.calib, target),
                stage_cache.save_tflite, stage_cache.load_tflite)
            (work / "model.tflite").write_bytes(tflite)
        with timer.stage("artifacts"):
            device = artifacts.run(work / "model.tflite", work, target, inputs)
            model_out = keras3_export.save_like_input(  # the pruned float model, user's flavour
                final_model, model, work / "model.keras", _samples(inputs, final_model.input_shape))
        with timer.stage("evaluate"):
            samples = _samples(inputs, tuple(model.input_shape))
            measurements, estimate = _measure(tflite, inputs, target, samples)
            on_target_ms, on_target = measure.on_target(
                work / "model.tflite", target, req.on_target, samples)
            # First: device/emulator figures, and a device artifact (e.g. model_vela.tflite)
            # outranks model.tflite's size.
            measurements[:0] = [*on_target_ms, *device.measurements]
            accuracy = next((m.value for m in measurements if m.quantity == "accuracy"), None)
            result = {
                "accuracy": accuracy, "params": int(final_model.count_params()),
                "macs": _tflite_macs(tflite), "sparsity": weight_sparsity(final_model),
                "tflite_bytes": len(tflite),
                "gzip_bytes": gzip_size(tflite),
            }
        with timer.stage("fidelity"):
            quant = quantize.sparsity_report(result["sparsity"], tflite, recipe.quantize)
            result["sparsity_tflite"] = quant["sparsity_tflite"]
            fid = None if inputs.val is None else fidelity.evaluate(
                tflite, final_model, inputs.val.x, mode=recipe.quantize, calib=inputs.calib,
                target=target)
        with timer.stage("check"):
            checks = check.run(measurements, target, base_acc)
        with timer.stage("report"):
            rep = _report(target, recipe, baseline, result, measurements, checks,
                          _layer_rows(model, final_model), timer.timings, pruned.notes, inputs)
            rep.update(quantization=quant, fidelity=fid, artifacts=device.report,
                       estimate=estimate, finetune=trained, **on_target)
            if qat_trained is not None:
                rep["qat_finetune"] = qat_trained
            rep["pruning_groups"] = pruned.groups
            rep.update(model_in=model_in, model_out=model_out)
            rep["notes"].extend(_model_notes(model_in, model_out))
            rep["reused_stages"] = list(cache.reused)
            if cache.reused:
                rep["notes"].append(f"--resume: reused the cached output of "
                                    f"{', '.join(cache.reused)} ({cache.root})")
            rep.update(pruned.report)  # e.g. "search": --prune auto's trajectory
            report.write(work, rep)
            write_manifest(work, target, recipe, req)
        final = req.out / target.name
        replace_folder(work, final)
    except BaseException as exc:
        shutil.rmtree(work, ignore_errors=True)
        # Keep finished stages' cache for --resume after a crash or Ctrl-C; bad input leaves
        # nothing behind.
        if created_out and (isinstance(exc, BadInputError) or not cache.root.exists()):
            shutil.rmtree(req.out, ignore_errors=True)
        raise
    return BuildOutcome(target, final, rep, check.exit_code(checks, req.strict))


def _baseline(model: Any, inputs: data_mod.Inputs, target: TargetProfile) -> dict[str, Any]:
    """The input model's figures, from its float32 .tflite."""
    base_tflite = convert.to_tflite(model, "none", None, target)
    return {
        "accuracy": _accuracy(base_tflite, inputs), "params": int(model.count_params()),
        "macs": _tflite_macs(base_tflite), "sparsity": weight_sparsity(model),
        "tflite_bytes": len(base_tflite), "gzip_bytes": gzip_size(base_tflite),
    }


def _finetune(pruned: Pruned, inputs: data_mod.Inputs, recipe: Recipe,
              log_dir: Path | None) -> tuple[Any, dict[str, Any]]:
    """The fine-tuned model, TF-MOT's wrappers stripped, and the fine-tune's summary."""
    model, summary = finetune.run(pruned, inputs, recipe, log_dir)
    return pruned.strip(model), summary


def _qat(model: Any, inputs: data_mod.Inputs, recipe: Recipe,
         log_dir: Path | None) -> tuple[Any, tuple[Any, dict[str, Any]]]:
    """The QAT wrapping (with its strip and notes), the QAT-fine-tuned model and its summary."""
    wrapped = qat.prepare(model, recipe)
    return wrapped, finetune.run(wrapped, inputs, recipe, log_dir)


def replace_folder(work: Path, final: Path) -> None:
    """Rename the finished folder into place; the previous build is removed only afterwards."""
    if final.exists() and not final.is_dir():
        raise BadInputError(str(final), "exists and is not a folder", "Move it away")
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{time.time_ns()}")
        final.rename(old)
    try:
        work.rename(final)
    except OSError:
        if old is not None:
            old.rename(final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _report(
    target: TargetProfile, recipe: Recipe, baseline: dict[str, Any], result: dict[str, Any],
    measurements: list[Measurement], checks: list[check.CheckResult],
    layers: list[dict[str, Any]], timings: dict[str, float], notes: list[str],
    inputs: data_mod.Inputs,
) -> dict[str, Any]:
    from edgeprune.manifest import tool_versions

    data_notes = []
    if inputs.val is not None:
        data_notes.append(f"accuracy measured on {inputs.val.source} ({len(inputs.val)} samples)")
    return {
        "schema": report.SCHEMA,
        "target": target.to_dict(),
        "recipe": recipe.to_dict(),
        "baseline": baseline,
        "result": result,
        "measurements": [m.to_dict() for m in measurements],
        "checks": [c.to_dict() for c in checks],
        "passed": check.passed(checks),
        "layers": layers,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "versions": tool_versions(),
        "notes": [*notes, *data_notes],
    }
