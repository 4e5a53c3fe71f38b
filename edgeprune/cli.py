"""Command line: click commands only. Work happens in the library; errors become exit codes.

Exit codes: 0 every budget met, 1 a budget not met, 2 bad input or usage, 3 a tool failed.
TensorFlow is imported only inside the commands that need it, so ``--help`` stays fast.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgeprune import __version__, limits
from edgeprune import recipe as recipe_options
from edgeprune.cli_support import CONTEXT, handle_errors, setup_logging
from edgeprune.errors import BadInputError, ExitCode
from edgeprune.flash_cli import flash


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="edgeprune")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option("-v", "--verbose", is_flag=True, help="Debug output, including TensorFlow's.")
def main(quiet: bool, verbose: bool) -> None:
    """Prune, quantize and convert a Keras model for an edge target, and check its budgets."""
    setup_logging(-1 if quiet else (1 if verbose else 0))


@main.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print the profiles as JSON.")
@click.option("--matrix", type=click.Choice(("github", "gitlab")), help="Print the CI jobs "
              "for `build --all-targets --shard K/N` instead: GitHub's strategy.matrix as JSON "
              "(for fromJSON), or GitLab's parallel:matrix.")
@click.option("--shards", type=click.IntRange(min=1), help="Jobs of --matrix (default: one "
              "per target of --all-targets).")
@handle_errors
def targets(as_json: bool, matrix: str | None, shards: int | None) -> None:
    """List the shipped target profiles with their hardware, runtime and budgets."""
    from edgeprune.targets import all_targets

    if matrix is not None or shards is not None:
        from edgeprune.drivers import ci_report
        from edgeprune.drivers import shards as shard_mod

        if matrix is None:
            raise BadInputError("--shards", "applies to --matrix", "Add --matrix github|gitlab")
        click.echo(shard_mod.matrix(matrix, ci_report.ci_targets(Path.cwd()), shards))
        return
    profiles = all_targets()
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in profiles], indent=2))
        return
    click.echo(f"{'target':<11} {'kind':<9} {'engine':<15} {'latency':>9} {'RAM':>9} "
               f"{'flash':>9} {'acc drop':>8}  hardware")
    for p in profiles:
        b = p.budgets
        click.echo(
            f"{p.name:<11} {p.hardware.kind:<9} {p.runtime.engine:<15} "
            f"{_budget(b.latency_ms, 'ms'):>9} {_budget(b.ram_kb, 'KB'):>9} "
            f"{_budget(b.flash_kb, 'KB'):>9} {_budget(b.accuracy_drop, 'pt'):>8}  "
            f"{p.description}"
        )


def _budget(value: float | None, unit: str) -> str:
    return "—" if value is None else f"{value:g} {unit}"


def _path(exists: bool = True, dir_okay: bool = True, file_okay: bool = True) -> click.Path:
    return click.Path(exists=exists, dir_okay=dir_okay, file_okay=file_okay, path_type=Path)


def _on_target_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--device/--emulate and the SSH options, shared by build and check."""
    options = [
        click.option("--device", help="Measure on a device: ssh://user@host[:port] (Linux, "
                     "LiteRT), or serial:PORT[@BAUD] (an MCU running the flashed edgeprune "
                     "firmware, e.g. serial:/dev/ttyACM0@115200). With several targets, each "
                     "is measured on it only if the device reaches its kind."),
        click.option("--known-hosts", type=Path,
                     help="known_hosts file for --device (default ~/.ssh/known_hosts); "
                     "unknown host keys are refused, never added."),
        click.option("--identity", type=Path, help="SSH private key for --device "
                     "(default: the SSH agent, then ~/.ssh/id_*)."),
        click.option("--remote-python", default="python3", show_default=True,
                     help="Python on the device that has ai-edge-litert and numpy."),
        click.option("--emulate", is_flag=True, help="Run the model on aarch64 LiteRT under "
                     "QEMU for Cortex-A targets (method qemu); provisions once into the cache."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _parse_limits(ctx: click.Context, param: click.Parameter,
                  values: tuple[str, ...]) -> limits.Limits:
    try:
        return limits.parse(values)
    except BadInputError as exc:
        raise click.BadParameter(f"{exc.problem}. {exc.fix}") from None


def _limit_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--limit NAME=VALUE: the resource limits every loader checks, for the whole command."""

    @functools.wraps(fn)
    def wrapper(*args: Any, limit: limits.Limits, **kwargs: Any) -> Any:
        with limits.using(limit):
            return fn(*args, **kwargs)

    return click.option(
        "--limit", multiple=True, metavar="NAME=VALUE", callback=_parse_limits,
        help="Raise a resource limit on input files (repeatable); NAME is one of "
        f"{', '.join(limits.NAMES)}. Defaults and what each bounds: SECURITY.md.")(wrapper)


def _check_device(device: str | None, specs: list[str]) -> None:
    """Before any build: serial: for a cortex-m/ethos-u target, ssh:// for others (exit 2);
    with several targets, only a device that reaches none of them is refused."""
    from edgeprune.device import check_device_for_targets
    from edgeprune.targets import load_target

    check_device_for_targets(device, [load_target(s) for s in specs])


def _on_target(device: str | None, known_hosts: Path | None, identity: Path | None,
               remote_python: str, emulate: bool) -> Any:
    from edgeprune.stages.measure import OnTarget

    return OnTarget(device=device, known_hosts=known_hosts, identity=identity,
                    remote_python=remote_python, emulate=emulate)


@main.command(context_settings=CONTEXT)
@click.option("--target", "-t", "target_specs", multiple=True,
              help="Target profile name (see `edgeprune targets`) or path to a .toml; repeatable.")
@click.option("--model", type=Path, help="Keras model: .keras, .h5 or SavedModel folder. "
              "Default: the bundled digits example.")
@click.option("--data", type=Path, help="Labelled training data for fine-tuning: .npz (x, y), "
              "image folder with class sub-folders, or TFRecord file/glob.")
@click.option("--val", type=Path, help="Labelled held-out data for every accuracy figure, as "
              "--data (default: a seeded 15 % of --data, never trained on).")
@click.option("--calib", type=Path, help="Calibration samples (.npz/.npy, image folder or "
              "TFRecord); default: a sample of --data.")
@click.option("--recipe", "recipe_file", type=Path, help="Recipe TOML (overrides target defaults).")
@click.option("--prune", type=click.Choice(recipe_options.PRUNE_MODES),
              help="Pruning method; auto: prune channels until the target's latency/RAM/flash "
              "budgets are met (needs --data).")
@click.option("--search-minutes", type=float,
              help="Time budget of --prune auto's search, in minutes (default 10).")
@click.option("--sparsity", type=float, help="Fraction removed, in [0, 1).")
@click.option("--criterion", type=click.Choice(recipe_options.CRITERIA),
              help="Channel importance criterion for structural pruning.")
@click.option("--allocation", type=click.Choice(recipe_options.ALLOCATIONS),
              help="Spread the channel ratio uniformly over groups, rank channels globally, or "
              "measure each group's accuracy drop and spare fragile groups (needs --data).")
@click.option("--l1", type=float, help="Network slimming: before channel selection, train with "
              "λ·Σ|γ| of every batch norm (or of kernels, see --l1-on) added to the loss; "
              "needs --data. Pair with --criterion bn. 0: off.")
@click.option("--l1-on", type=click.Choice(recipe_options.L1_TARGETS),
              help="What --l1 penalises: batch-norm scales γ (default) or conv/dense kernels.")
@click.option("--l1-epochs", type=int, help="Epochs of the --l1 phase (default: --epochs).")
@click.option("--after-prune", type=click.Choice(recipe_options.AFTER_PRUNE),
              help="After channel pruning, fine-tune the surviving weights (default) or "
              "re-initialise the smaller architecture and train it from scratch for --epochs.")
@click.option("--schedule", type=click.Choice(recipe_options.SCHEDULES),
              help="Channel pruning: cut to the plan at once (oneshot, default) or in --steps "
              "cuts on a cubic schedule, each fine-tuned before the next; the steps share "
              "--epochs (gradual; needs --data).")
@click.option("--steps", type=int, help="Cuts of --schedule gradual, ≥ 2 (default 3).")
@click.option("--weight-sparsity", type=float,
              help="Hybrid pruning: fraction of the remaining weights zeroed by TF-MOT.")
@click.option("--epochs", type=int, help="Fine-tuning epochs (0: none).")
@click.option("--optimizer", type=click.Choice(recipe_options.OPTIMIZERS),
              help="Fine-tuning optimizer: adam (default), sgd (momentum 0.9; usually wants a "
              "larger learning_rate), adamw (weight decay 0.004).")
@click.option("--lr-schedule", type=click.Choice(recipe_options.LR_SCHEDULES),
              help="Fine-tuning learning rate: constant (default), or cosine: linear warm-up "
              "from 0 over --warmup-epochs, then cosine decay to 0 at the last epoch.")
@click.option("--warmup-epochs", type=int, help="Warm-up epochs of --lr-schedule cosine "
              "(default 1; 0: none).")
@click.option("--distill/--no-distill", default=None,
              help="Fine-tune (and QAT) against the input model's outputs as well as the labels "
              "(knowledge distillation); with --calib and no --data, the teacher's outputs are "
              "the only targets. Default: off.")
@click.option("--temperature", type=float,
              help="Distillation softmax temperature T, > 0 (default 4).")
@click.option("--alpha", type=float, help="Distillation: weight of the label loss in [0, 1]; "
              "1 - alpha weighs the teacher's (default 0.5).")
@click.option("--quantize",
              type=click.Choice(recipe_options.QUANTIZE_MODES),
              help="Quantization mode.")
@click.option("--seed", type=int, help="Random seed for splits, training and calibration.")
@click.option("--keep", multiple=True, help="Layer never to prune; repeatable.")
@click.option("--export", multiple=True, type=click.Choice(recipe_options.EXPORT_FORMATS),
              help="Also write the emitted model in this format; repeatable. onnx: model.onnx "
              "(int8 as QDQ) converted by tf2onnx from model.tflite, its agreement with LiteRT "
              "in the report; needs pip install 'edgeprune[onnx]'.")
@click.option("--out", type=Path, default=Path("build"), show_default=True,
              help="Output folder; one sub-folder per target.")
@click.option("--trust-model", is_flag=True,
              help="Allow model files whose layers run stored Python code (Lambda).")
@click.option("--strict", is_flag=True, help="Exit 1 also when a budget could not be checked.")
@click.option("--tensorboard", is_flag=True, help="Write fine-tuning logs to OUT/<target>/logs.")
@click.option("--resume", is_flag=True, help="Reuse the stages an earlier (crashed or "
              "interrupted) build finished with the same inputs, from OUT/.edgeprune-cache.")
@click.option("--all-targets", is_flag=True, help="Every shipped target, or `[ci] targets` of "
              "./edgeprune.toml; ends with a summary table.")
@click.option("--junit", type=Path, help="Write a JUnit XML report (a case per target × check).")
@click.option("--sweep", help="Comma-separated sparsities, e.g. 0.25,0.5,0.75: one build per "
              "value into OUT/<target>-sweep/, compared in sweep.md/sweep.html with an "
              "accuracy-vs-latency plot. Exit 0 when some variant meets every budget.")
@click.option("--shard", help="K/N: build only shard K of N of the targets (targets K, K+N, "
              "…; see `targets --matrix`), recorded in OUT/runs.json for `edgeprune merge`.")
@click.option("--strategy", type=click.Choice(recipe_options.STRATEGIES),
              help="tf.distribute strategy of training: auto (default: mirrored when more than "
              "one GPU is visible), none, mirrored (local GPUs), multiworker (the cluster in "
              "TF_CONFIG; run the same command on every worker, the chief writes OUT).")
@click.option("--executor", type=click.Choice(("local", "ray")), default="local",
              show_default=True, help="Run the builds of several targets or --sweep values "
              "here one after another, or as Ray tasks (pip install 'edgeprune[ray]'; paths "
              "must be on storage every Ray node sees).")
@click.option("--ray-address", help="host:port of a running Ray cluster's head for --executor "
              "ray (default: start a Ray on 127.0.0.1 for this run).")
@_on_target_options
@_limit_option
@handle_errors
def build(target_specs: tuple[str, ...], model: Path | None, data: Path | None,
          val: Path | None, calib: Path | None, recipe_file: Path | None, out: Path,
          trust_model: bool, strict: bool, tensorboard: bool, resume: bool, device: str | None,
          known_hosts: Path | None, identity: Path | None, remote_python: str, emulate: bool,
          all_targets: bool, junit: Path | None, sweep: str | None, shard: str | None,
          executor: str, ray_address: str | None, **overrides: Any) -> int:
    """Prune, fine-tune, quantize and convert MODEL for each target, then check its budgets."""
    from edgeprune import distribute
    from edgeprune.drivers import ci_report, shards
    from edgeprune.drivers import executor as executors
    from edgeprune.drivers import sweep as sweep_mod

    specs = ci_report.target_specs(target_specs, all_targets, Path.cwd())
    places = list(range(len(specs)))
    if shard is not None:
        picked = shards.share(specs, *shards.parse_shard(shard))
        places, specs = [i for i, _ in picked], [spec for _, spec in picked]
    _check_device(device, specs)
    ratios = None if sweep is None else sweep_mod.parse_ratios(sweep)
    if junit is not None:
        if ratios is not None:
            raise BadInputError("--junit", "is not written for --sweep",
                                "Drop one of them: sweep, then build the chosen sparsity for CI")
        ci_report.check_junit_path(junit)
    executors.check(executor, ray_address)
    mode = overrides.get("strategy") or (None if recipe_file is None else recipe_options
                                         .read_recipe_file(recipe_file).get("strategy"))
    distribute.check(mode or "auto")
    if mode == "multiworker" and (executor != "local" or resume):
        raise BadInputError("--strategy multiworker", "trains one build over the cluster's "
                            "workers, so it takes neither --executor ray nor --resume",
                            "Drop --executor ray / --resume")
    cluster = distribute.start(mode or "auto")  # before any other TensorFlow op
    fields = dict(model=model, data=data, val=val, calib=calib, recipe_file=recipe_file,
                  overrides=overrides, trust_model=trust_model, strict=strict,
                  tensorboard=tensorboard, resume=resume,
                  on_target=_on_target(device, known_hosts, identity, remote_python, emulate))

    def run(where: Path) -> int:  # a non-chief worker builds elsewhere, without --junit
        return _build_all(specs, places, shard, executor, ray_address, ratios, where,
                          junit if where == out else None, fields)

    return _on_cluster(cluster, out, run) if cluster.kind == "multiworker" else run(out)


def _on_cluster(cluster: Any, out: Path, run: Callable[[Path], int]) -> int:
    """A multiworker build: the chief writes OUT; another worker builds into a temporary
    folder it removes. Every worker ends with the chief's exit code (distribute.py)."""
    import shutil
    import tempfile

    from edgeprune import distribute
    from edgeprune.errors import EdgepruneError

    where = out if cluster.is_chief else Path(tempfile.mkdtemp(prefix="edgeprune-worker-"))
    try:
        code = run(where)
    except EdgepruneError as exc:
        click.echo(f"error: {exc}", err=True)
        code = exc.exit_code
    finally:
        if where != out:
            shutil.rmtree(where, ignore_errors=True)
    code = distribute.agree_exit_code(int(code))
    if not cluster.is_chief:
        click.echo(f"{cluster.task[0]} {cluster.task[1]}: trained with the chief, which wrote "
                   f"{out} (exit code {code})")
    return code


def _build_all(specs: list[str], places: list[int], shard: str | None, executor: str,
               ray_address: str | None, ratios: tuple[float, ...] | None, out: Path,
               junit: Path | None, fields: dict[str, Any]) -> int:
    """The builds of ``specs`` (a sweep each with ``ratios``) into ``out``; the exit code."""
    from edgeprune.drivers import ci_report, shards
    from edgeprune.drivers import sweep as sweep_mod
    from edgeprune.drivers.pipeline import BuildRequest  # TensorFlow: only once the input is valid
    from edgeprune.stages import measure
    from edgeprune.targets import load_target

    request = BuildRequest(out=out, **fields)
    # The device must be one target's machine before anything is built (exit 2 otherwise).
    measure.require_device_fit(request.on_target, [load_target(s) for s in specs])
    if ratios is not None:
        for spec in specs:  # every target's recipe is checked before the first build
            sweep_mod.check_recipe(request, spec)
        outcomes = [sweep_mod.run(request, spec, ratios, executor, ray_address)
                    for spec in specs]
        for o in outcomes:
            click.echo(f"{o.target}: {sweep_mod.verdict(o.summary)} → {o.folder}/sweep.html")
        return max((o.exit_code for o in outcomes), default=0)
    runs = ci_report.build_targets(request, specs, lambda run: click.echo(
        f"error: {run.error}" if run.error else _summary_line(run.report, run.folder),
        err=run.error is not None), executor, ray_address)
    if shard is not None:
        click.echo(f"shard {shard}: {len(runs)} target(s) → "
                   f"{shards.write_runs(out, runs, places, shard)}")
    if len(runs) > 1:
        click.echo(ci_report.summary_table(runs))
    if junit is not None:
        click.echo(f"JUnit report: {ci_report.write_junit(junit, runs)}")
    return ci_report.worst_exit_code(runs)


@main.command(context_settings=CONTEXT)
@click.argument("folders", nargs=-1, required=True, type=Path)
@click.option("--junit", type=Path, help="Write the merged JUnit XML report here.")
@handle_errors
def merge(folders: tuple[Path, ...], junit: Path | None) -> int:
    """Join the results of `build --shard K/N` runs (their --out FOLDERS) into the summary
    table and one JUnit report, in the order of one sequential run; exit with the worst code."""
    from edgeprune.drivers import ci_report, shards

    if junit is not None:
        ci_report.check_junit_path(junit)
    runs = shards.merge(list(folders))
    click.echo(ci_report.summary_table(runs))
    if junit is not None:
        click.echo(f"JUnit report: {ci_report.write_junit(junit, runs)}")
    return ci_report.worst_exit_code(runs)


def _summary_line(rep: dict[str, Any], folder: Path) -> str:
    from edgeprune.stages.report import verdict

    res = rep["result"]
    acc = "n/a" if res["accuracy"] is None else f"{res['accuracy']:.2%}"
    return (f"{rep['target']['name']}: {verdict(rep)} | accuracy {acc}, "
            f"{res['tflite_bytes']:,} B .tflite → {folder}")


@main.command(context_settings=CONTEXT)
@click.argument("model", type=Path)
@click.option("--target", "-t", "target_spec", required=True, help="Target name or .toml path.")
@click.option("--data", type=Path, help="Labelled data to measure accuracy on (as build's).")
@click.option("--json", "as_json", is_flag=True, help="Print checks and measurements as JSON.")
@click.option("--strict", is_flag=True, help="Exit 1 also when a budget could not be checked.")
@_on_target_options
@_limit_option
@handle_errors
def check(model: Path, target_spec: str, data: Path | None, as_json: bool, strict: bool,
          device: str | None, known_hosts: Path | None, identity: Path | None,
          remote_python: str, emulate: bool) -> int:
    """Check an existing .tflite MODEL against a target's budgets."""
    from edgeprune.drivers.check_model import check_tflite

    _check_device(device, [target_spec])  # the kind-vs-scheme rule before the port's existence
    result = check_tflite(model, target_spec, data,
                          _on_target(device, known_hosts, identity, remote_python, emulate))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        for c in result.checks:
            mark = {True: "✓", False: "✗", None: "?"}[c.passed]
            value = "—" if c.value is None else f"{c.value:,.3f}"
            click.echo(f"{mark} {c.name:<14} {value:>14} / {c.budget:,.3f} {c.unit}  "
                       f"({c.method or 'not checked'}{', marginal' if c.marginal else ''})")
        for m in result.measurements:
            spread = f" ± {m.uncertainty * 100:.0f} %" if m.uncertainty else ""
            click.echo(f"  {m.quantity} = {m.value:,.4f} {m.unit}{spread} [{m.method}, "
                       f"{m.where}] {m.detail}")
    from edgeprune.stages.check import exit_code

    return exit_code(result.checks, strict)


@main.command(context_settings=CONTEXT)
@click.argument("model", type=Path)
@click.option("--data", type=Path, help="Labelled samples (as build's --data) for --sensitivity.")
@click.option("--calib", type=Path, help="Samples for activation criteria (default: --data).")
@click.option("--sensitivity", "with_sensitivity", is_flag=True, help="Prune each channel group "
              "alone at 25/50/75 % (no fine-tuning) and report the accuracy drop; needs --data.")
@click.option("--criterion", default="l1", show_default=True,
              type=click.Choice(recipe_options.CRITERIA),
              help="Channel importance used by --sensitivity.")
@click.option("--keep", multiple=True, help="Layer never to prune; repeatable.")
@click.option("--samples", type=int, default=500, show_default=True,
              help="Seeded subset of --data used by --sensitivity.")
@click.option("--json", "as_json", is_flag=True, help="Print the analysis as JSON.")
@click.option("--out", type=Path, help="Also write the analysis as JSON to this file.")
@click.option("--trust-model", is_flag=True,
              help="Allow model files whose layers run stored Python code (Lambda).")
@_limit_option
@handle_errors
def analyze(model: Path, data: Path | None, calib: Path | None, with_sensitivity: bool,
            criterion: str, keep: tuple[str, ...], samples: int, as_json: bool,
            out: Path | None, trust_model: bool) -> None:
    """Per-layer parameters, MACs and channels of MODEL, its channel groups and, with
    --sensitivity, how much accuracy each group loses when pruned."""
    from edgeprune.drivers import analyze as analysis

    result = analysis.analyze_file(
        model, data_path=data, calib_path=calib, with_sensitivity=with_sensitivity,
        criterion=criterion, keep=keep, samples=samples, trust_model=trust_model)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else analysis.render(result))
    if out is not None:
        click.echo(f"analysis written to {analysis.write_json(result, out)}", err=True)


@main.command(context_settings=CONTEXT)
@click.argument("folder", type=_path(file_okay=False))
@handle_errors
def report(folder: Path) -> None:
    """Re-render report.md and report.html in FOLDER from its report.json."""
    from edgeprune.stages.report import rerender

    for path in rerender(folder):
        click.echo(str(path))


@main.command(context_settings=CONTEXT)
@click.argument("folder", type=Path)
@click.option("--format", "formats", multiple=True, default=("onnx",), show_default=True,
              type=click.Choice(recipe_options.EXPORT_FORMATS),
              help="Format to write; repeatable. onnx: model.onnx from model.tflite (needs "
              "pip install 'edgeprune[onnx]').")
@click.option("--samples", type=Path, help="Model inputs (as --calib) to compare "
              "ONNX and LiteRT outputs on (default: the build's --val, else --calib, else --data).")
@_limit_option
@handle_errors
def export(folder: Path, formats: tuple[str, ...], samples: Path | None) -> None:
    """Add model.onnx to an existing build FOLDER (OUT/<target> or OUT) and record its agreement
    with LiteRT in the report; manifest.json's hashes are updated, so `verify` still passes."""
    from edgeprune.drivers.export_folder import export as export_folders

    for path in export_folders(folder, formats, samples):
        click.echo(str(path))


@main.command(context_settings=CONTEXT)
@click.argument("folder", type=Path)
@click.option("--json", "as_json", is_flag=True, help="Print the drift report as JSON.")
@handle_errors
def verify(folder: Path, as_json: bool) -> int:
    """Re-hash a build's artifacts and recorded inputs against its manifest.json.

    FOLDER is OUT/<target> or OUT. Exit 0: nothing drifted; 1: an artifact changed, is missing
    or is extra, an input changed, or the tools differ from the running ones.
    """
    from edgeprune.drivers.verify import render, verify_folder

    results = verify_folder(folder)
    drifted = any(r.drifted for r in results)
    click.echo(json.dumps({"drifted": drifted, "builds": [r.to_dict() for r in results]},
                          indent=2) if as_json else render(results))
    return ExitCode.BUDGET_FAILED if drifted else ExitCode.OK


main.add_command(flash)
