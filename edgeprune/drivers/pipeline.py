"""The build driver: a flat list of stage calls, like a compiler driver.

Everything the user gave is validated before any folder is created. The build writes into a
hidden temporary folder beside the final one and renames it into place only when complete, so a
failed or interrupted build leaves nothing behind and never half-replaces a previous build.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import converter, distribute
from edgeprune import data as data_mod
from edgeprune.atomic import (
    check_space,
    disk_full,
    folder_lock,
    no_space,
    staged_folder,
    write_bytes,
)
from edgeprune.device import parse_measured, reaches
from edgeprune.drivers import stage_cache
from edgeprune.errors import BadInputError, ToolError
from edgeprune.exporters import onnx as export_onnx
from edgeprune.keras3 import bridge as keras3_bridge
from edgeprune.keras3 import export as keras3_export
from edgeprune.manifest import tool_versions, write_manifest
from edgeprune.measurement import Measurement
from edgeprune.recipe import Recipe, resolve_for_build
from edgeprune.resources import example_inputs
from edgeprune.stages import (
    artifacts,
    baseline,
    check,
    convert,
    fidelity,
    finetune,
    gradual,
    load,
    measure,
    prune,
    qat,
    report,
)
from edgeprune.stages.prune import Pruned
from edgeprune.targets import TargetProfile, load_target
from edgeprune.training import seed_everything

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


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise BadInputError(
            f"--out {out}", "is a file, not a folder", "Give a folder path (it will be created)"
        )


def build(req: BuildRequest, target_spec: str) -> BuildOutcome:
    """Run the whole pipeline for one target; returns the outcome with its exit code (0/1)."""
    timer = StageTimer()
    req = _with_example_defaults(req)
    target = load_target(target_spec)
    on_target_opts, device_notes = _on_target_for(req.on_target, target)
    recipe, recipe_notes = resolve_for_build(target.build, target.source, req.recipe_file,
                                             req.overrides, has_train=req.data is not None)
    for note in recipe_notes:
        log.warning("note: %s", note)
    converter.check_target(recipe.quantize, target)
    distribute.current(recipe.strategy)  # the CLI started it before TensorFlow ran
    if "onnx" in recipe.export:
        export_onnx.check("--export onnx", recipe.quantize)
    _check_out(req.out)
    final = req.out / target.name
    created_out = not req.out.exists()
    try:
        # One build per target folder at a time (a second one is exit 2 naming this pid);
        # folders a killed build left are recognised by pid and removed.
        with folder_lock(final, f"--out {req.out}"):
            return _locked_build(req, target, recipe, recipe_notes, on_target_opts,
                                 device_notes, timer)
    except BaseException as exc:
        # Keep finished stages' cache for --resume after a crash or Ctrl-C; bad input leaves
        # nothing behind.
        cache_root = req.out / stage_cache.CACHE_DIR / target.name
        if created_out and (isinstance(exc, BadInputError) or not cache_root.exists()):
            shutil.rmtree(req.out, ignore_errors=True)
        if disk_full(exc) and not isinstance(exc, ToolError):  # e.g. a temporary file
            raise no_space(exc, final, 0) from exc
        raise


def _locked_build(req: BuildRequest, target: TargetProfile, recipe: Recipe,
                  recipe_notes: list[str], on_target_opts: measure.OnTarget,
                  device_notes: list[str], timer: StageTimer) -> BuildOutcome:
    """The stages, with the target folder's lock held."""
    final = req.out / target.name
    with timer.stage("load"):
        model, inputs = load.run(req.model, recipe, data=req.data, val=req.val, calib=req.calib,
                                 trust_model=req.trust_model)
        samples, samples_from = _samples(inputs, tuple(model.input_shape))
        # A Keras 3 model was rebuilt in tf_keras: prove on real samples that it is the same.
        model_in = keras3_bridge.verify(model, samples, samples_from)
        first_key = stage_cache.input_key(
            {"model": req.model, "data": req.data, "val": req.val, "calib": req.calib},
            load.key_parts(recipe, target))
        # before the slow stages: channels cut and nothing to fine-tune them (logged)
        untrained = finetune.untrained_cut_notes(recipe, inputs)
    seed_everything(recipe.seed)
    # Cached stages: --resume reuses an output whose key (chained from the previous stage's
    # and what the stage reads) matches.
    cache = stage_cache.StageCache.for_build(req.out, recipe, target, first_key, req.resume,
                                             req.trust_model)
    with staged_folder(final) as work:
        log_dir = work / "logs" if req.tensorboard else None
        with timer.stage("baseline"):
            base = cache.stage(baseline, lambda: baseline.run(model, inputs, target),
                               stage_cache.save_json, stage_cache.load_json)
        with timer.stage("prune"):
            pruned = cache.stage(prune, lambda: prune.run(model, recipe, target, inputs),
                                 stage_cache.save_pruned, cache.load_pruned)
        if recipe.schedule == "gradual":  # cuts again from the input model to the plan
            with timer.stage("gradual"):
                final_model, trained = cache.stage(
                    gradual, lambda: gradual.run(model, pruned, inputs, recipe, target,
                                                 log_dir),
                    stage_cache.save_trained, cache.load_trained, reusable=log_dir is None)
        else:
            with timer.stage("finetune"):  # with --tensorboard its logs are wanted: train
                final_model, trained = cache.stage(
                    finetune, lambda: _finetune(pruned, model, inputs, recipe, log_dir),
                    stage_cache.save_trained, cache.load_trained, reusable=log_dir is None)
        trained, schedule = gradual.split(trained)
        qat_model = qat_trained = None
        if recipe.quantize == "qat":
            with timer.stage("qat"):
                wrapped, (qat_model, qat_trained) = cache.stage(
                    qat, lambda: _qat(final_model, model, inputs, recipe, log_dir),
                    stage_cache.never, stage_cache.never)
                final_model = wrapped.strip(qat_model)
                pruned.notes.extend(wrapped.notes)
        with timer.stage("convert"):
            tflite = cache.stage(convert, lambda: convert.run(
                final_model if qat_model is None else qat_model, recipe, inputs.calib,
                target), stage_cache.save_tflite, stage_cache.load_tflite)
            write_bytes(work / "model.tflite", tflite, final)
        onnx_model = None
        if "onnx" in recipe.export:
            with timer.stage("export"):  # never cached: the ONNX file follows the .tflite
                onnx_model = export_onnx.convert(work / "model.tflite")
                write_bytes(work / export_onnx.FILENAME, onnx_model, final)
        with timer.stage("artifacts"):
            device = artifacts.run(work / "model.tflite", work, target, inputs)
            # float32 weights: what model.keras needs at least
            check_space(work / "model.keras", 4 * final_model.count_params(), final)
            model_out = keras3_export.save_like_input(  # the pruned float model, user's flavour
                final_model, model, work / "model.keras", samples)
        with timer.stage("evaluate"):
            measurements, estimate = _measure(tflite, inputs, target, samples)
            on_target_ms, on_target = measure.on_target(
                work / "model.tflite", target, on_target_opts, samples)
            # First: device/emulator figures; a device artifact (e.g. model_vela.tflite)
            # outranks model.tflite's size.
            measurements[:0] = [*on_target_ms, *device.measurements]
            result = _result(final_model, tflite, measurements)
        with timer.stage("fidelity"):
            quant = converter.sparsity_report(result["sparsity"], tflite, recipe.quantize)
            result["sparsity_tflite"] = quant["sparsity_tflite"]
            fid = None if inputs.val is None else fidelity.evaluate(
                tflite, final_model, inputs.val.x, mode=recipe.quantize,
                calib=inputs.calib, target=target)
            onnx_rep = None if onnx_model is None else {
                **export_onnx.agreement(tflite, onnx_model, *(
                    inputs.model_inputs(export_onnx.MAX_SAMPLES) or (samples, samples_from))),
                "written_by": "edgeprune build --export onnx"}
        with timer.stage("check"):
            checks = check.run(measurements, target, base["accuracy"],
                               on_target.get("device_not_used"))
            measurements = check.mark_used(measurements, checks, target)
        with timer.stage("report"):
            rep = report.BuildReport(
                target=target.to_dict(), recipe=recipe.to_dict(), baseline=base,
                result=result, measurements=measurements, checks=checks,
                layers=_layer_rows(model, final_model), timings_s=timer.timings,
                versions=tool_versions(),
                notes=[*recipe_notes, *device_notes, *untrained, *pruned.notes,
                       *gradual.notes(schedule), *_data_notes(inputs),
                       *_model_notes(model_in, model_out)],
                quantization=quant, fidelity=fid, artifacts=device.report,
                estimate=estimate, finetune=trained, qat_finetune=qat_trained,
                pruning_groups=pruned.groups, reused_stages=list(cache.reused),
                search=pruned.search, sensitivity=pruned.sensitivity, onnx=onnx_rep,
                schedule=schedule, training=distribute.current().to_dict(recipe.batch_size),
                model_in=model_in, model_out=model_out, data=inputs.report(),
                **on_target)
            if cache.reused:
                rep.notes.append(f"--resume: reused the cached output of "
                                 f"{', '.join(cache.reused)} ({cache.root})")
            report.write(work, rep.to_dict())
            write_manifest(work, target, recipe, req)
    return BuildOutcome(target, req.out / target.name, rep.to_dict(),
                        check.exit_code(checks, req.strict))


def _on_target_for(opts: measure.OnTarget,
                   target: TargetProfile) -> tuple[measure.OnTarget, list[str]]:
    """``--device`` for this target: in a build of several targets (the CLI refuses a device
    that reaches none of them), a device that cannot reach this one (serial: for a Cortex-A,
    ssh:// for an MCU) is left out for it, and its report says so."""
    if opts.device is None or reaches(parse_measured(opts.device), target):
        return opts, []
    log.warning("--device %s cannot reach %s (%s): not measured on it", opts.device, target.name,
                target.hardware.kind)
    return dataclasses.replace(opts, device=None), [
        f"--device {opts.device} not used: a serial port reaches a cortex-m/ethos-u target, "
        f"ssh:// any other, and {target.name} is {target.hardware.kind}"]


def _result(final_model: Any, tflite: bytes, measurements: list[Measurement]) -> dict[str, Any]:
    """report.json's ``result``: accuracy is the emitted .tflite's, run with LiteRT."""
    return {
        "accuracy": next((m.value for m in measurements if m.quantity == "accuracy"), None),
        "params": int(final_model.count_params()), "macs": measure.tflite_macs(tflite),
        "sparsity": measure.weight_sparsity(final_model), "tflite_bytes": len(tflite),
        "gzip_bytes": measure.gzip_size(tflite),
    }


def _data_notes(inputs: data_mod.Inputs) -> list[str]:
    if inputs.val is None:
        return []
    return [f"accuracy measured on {inputs.val.source} ({len(inputs.val)} samples)"]


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


def _samples(inputs: data_mod.Inputs,
             input_shape: tuple[int | None, ...]) -> tuple[np.ndarray, str]:
    """Samples to run on devices and emulators (and to check a Keras 3 translation on), and
    where they come from: held-out or calibration data, else seeded noise of the input shape."""
    found = inputs.model_inputs(SAMPLES_ON_TARGET)
    if found is not None:
        return found
    shape = [d or 1 for d in input_shape[1:]]
    return (np.random.default_rng(0).random((4, *shape), dtype=np.float32),
            "seeded random inputs (no --val, --data or --calib)")


def _model_notes(model_in: dict[str, Any] | None, model_out: dict[str, Any]) -> list[str]:
    notes = []
    if model_in is not None:
        notes.append(f"Keras {model_in['keras_version']} model, rebuilt in tf_keras for pruning: "
                     f"outputs agree to {model_in['max_abs_diff']:.2g} on {model_in['samples']} "
                     f"samples of {model_in['samples_from']}")
        if "max_abs_diff_float64" in model_in:
            notes.append("the model amplifies float32 rounding to that size; computed in "
                         f"float64 the two agree to {model_in['max_abs_diff_float64']:.2g}")
    if model_out["file"] is None:
        notes.append(f"no model.keras: {model_out['why']}")
    else:
        notes.append(f"model.keras: the pruned float model as a {model_out['flavour']} file "
                     f"({model_out['params']:,} parameters)")
    return notes


def _finetune(pruned: Pruned, teacher: Any, inputs: data_mod.Inputs, recipe: Recipe,
              log_dir: Path | None) -> tuple[Any, dict[str, Any]]:
    """The fine-tuned model, TF-MOT's wrappers stripped, and the fine-tune's summary;
    ``teacher`` (the input model) for ``--distill``."""
    model, summary = finetune.run(pruned, inputs, recipe, log_dir, teacher)
    return pruned.strip(model), summary


def _qat(model: Any, teacher: Any, inputs: data_mod.Inputs, recipe: Recipe,
         log_dir: Path | None) -> tuple[Any, tuple[Any, dict[str, Any]]]:
    """The QAT wrapping (with its strip and notes), the QAT-fine-tuned model and its summary."""
    wrapped = qat.prepare(model, recipe)
    return wrapped, finetune.run(wrapped, inputs, recipe, log_dir, teacher)

