"""Command line: click commands only. Work happens in the library; errors become exit codes.

Exit codes: 0 every budget met, 1 a budget not met, 2 bad input or usage, 3 a tool failed.
TensorFlow is imported only inside the commands that need it, so ``--help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from edgeprune import __version__
from edgeprune.errors import EdgepruneError

log = logging.getLogger("edgeprune")
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
EXIT_INTERRUPTED = 130


def _handle_errors(fn: Callable[..., int | None]) -> Callable[..., None]:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            code = fn(*args, **kwargs) or 0
        except EdgepruneError as exc:
            click.echo(f"error: {exc}", err=True)
            code = exc.exit_code
        except KeyboardInterrupt:
            click.echo("interrupted: no output folder was left behind", err=True)
            code = EXIT_INTERRUPTED
        except Exception as exc:  # a library or runtime failed in a way we did not foresee
            log.debug("traceback", exc_info=True)
            click.echo(
                f"error: internal failure: {type(exc).__name__}: {exc}. No output folder was "
                "left behind; rerun with -v for the traceback and report it",
                err=True,
            )
            code = 3
        sys.exit(code)

    return wrapper


def _setup_logging(verbosity: int) -> None:
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    if verbosity < 1:  # TF/absl chatter is noise unless asked for
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        for noisy in ("tensorflow", "absl", "h5py"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="edgeprune")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option("-v", "--verbose", is_flag=True, help="Debug output, including TensorFlow's.")
def main(quiet: bool, verbose: bool) -> None:
    """Prune, quantize and convert a Keras model for an edge target, and check its budgets."""
    _setup_logging(-1 if quiet else (1 if verbose else 0))


@main.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print the profiles as JSON.")
@_handle_errors
def targets(as_json: bool) -> None:
    """List the shipped target profiles with their hardware, runtime and budgets."""
    from edgeprune.targets import all_targets

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


@main.command(context_settings=CONTEXT)
@click.option("--target", "-t", "target_specs", multiple=True, required=True,
              help="Target profile name (see `edgeprune targets`) or path to a .toml; repeatable.")
@click.option("--model", type=Path, help="Keras model: .keras, .h5 or SavedModel folder. "
              "Default: the bundled digits example.")
@click.option("--data", type=Path, help="Labelled training data (.npz with x, y) for fine-tuning.")
@click.option("--val", type=Path, help="Labelled held-out data for every accuracy figure "
              "(default: a seeded 15 %% of --data, never trained on).")
@click.option("--calib", type=Path, help="Calibration samples (.npz/.npy or image folder); "
              "default: a sample of --data.")
@click.option("--recipe", "recipe_file", type=Path, help="Recipe TOML (overrides target defaults).")
@click.option("--prune", type=click.Choice(["none", "magnitude", "m-by-n", "structured", "hybrid"]),
              help="Pruning method.")
@click.option("--sparsity", type=float, help="Fraction removed, in [0, 1).")
@click.option("--criterion", type=click.Choice(["l1", "l2", "bn", "apoz", "activation", "taylor"]),
              help="Channel importance criterion for structural pruning.")
@click.option("--allocation", type=click.Choice(["uniform", "global"]),
              help="Spread the channel ratio uniformly over groups, or rank channels globally.")
@click.option("--weight-sparsity", type=float,
              help="Hybrid pruning: fraction of the remaining weights zeroed by TF-MOT.")
@click.option("--epochs", type=int, help="Fine-tuning epochs (0: none).")
@click.option("--quantize", type=click.Choice(["int8", "float16", "dynamic", "qat", "none"]),
              help="Quantization mode.")
@click.option("--seed", type=int, help="Random seed for splits, training and calibration.")
@click.option("--keep", multiple=True, help="Layer never to prune; repeatable.")
@click.option("--out", type=Path, default=Path("build"), show_default=True,
              help="Output folder; one sub-folder per target.")
@click.option("--trust-model", is_flag=True,
              help="Allow model files whose layers run stored Python code (Lambda).")
@click.option("--strict", is_flag=True, help="Exit 1 also when a budget could not be checked.")
@click.option("--tensorboard", is_flag=True, help="Write fine-tuning logs to OUT/<target>/logs.")
@_handle_errors
def build(target_specs: tuple[str, ...], model: Path | None, data: Path | None,
          val: Path | None, calib: Path | None, recipe_file: Path | None, out: Path,
          trust_model: bool, strict: bool, tensorboard: bool, **overrides: Any) -> int:
    """Prune, fine-tune, quantize and convert MODEL for each target, then check its budgets."""
    from edgeprune.pipeline import BuildRequest
    from edgeprune.pipeline import build as run_build

    request = BuildRequest(
        model=model, data=data, val=val, calib=calib, recipe_file=recipe_file,
        overrides=overrides, out=out, trust_model=trust_model, strict=strict,
        tensorboard=tensorboard,
    )
    worst = 0
    for spec in target_specs:
        outcome = run_build(request, spec)
        click.echo(_summary_line(outcome.report, outcome.folder))
        worst = max(worst, outcome.exit_code)
    return worst


def _summary_line(rep: dict[str, Any], folder: Path) -> str:
    from edgeprune.stages.report import verdict

    res = rep["result"]
    acc = "n/a" if res["accuracy"] is None else f"{res['accuracy']:.2%}"
    return (f"{rep['target']['name']}: {verdict(rep)} | accuracy {acc}, "
            f"{res['tflite_bytes']:,} B .tflite → {folder}")


@main.command(context_settings=CONTEXT)
@click.argument("model", type=Path)
@click.option("--target", "-t", "target_spec", required=True, help="Target name or .toml path.")
@click.option("--data", type=Path, help="Labelled data (.npz with x, y) to measure accuracy.")
@click.option("--json", "as_json", is_flag=True, help="Print checks and measurements as JSON.")
@click.option("--strict", is_flag=True, help="Exit 1 also when a budget could not be checked.")
@_handle_errors
def check(model: Path, target_spec: str, data: Path | None, as_json: bool, strict: bool) -> int:
    """Check an existing .tflite MODEL against a target's budgets."""
    from edgeprune.check_model import check_tflite

    result = check_tflite(model, target_spec, data)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        for c in result.checks:
            mark = {True: "✓", False: "✗", None: "?"}[c.passed]
            value = "—" if c.value is None else f"{c.value:,.3f}"
            click.echo(f"{mark} {c.name:<14} {value:>14} / {c.budget:,.3f} {c.unit}  "
                       f"({c.method or 'not checked'})")
        for m in result.measurements:
            click.echo(f"  {m.quantity} = {m.value:,.4f} {m.unit} [{m.method}, {m.where}] "
                       f"{m.detail}")
    from edgeprune.stages.check import exit_code

    return exit_code(result.checks, strict)


@main.command(context_settings=CONTEXT)
@click.argument("folder", type=_path(file_okay=False))
@_handle_errors
def report(folder: Path) -> None:
    """Re-render report.md and report.html in FOLDER from its report.json."""
    from edgeprune.stages.report import rerender

    for path in rerender(folder):
        click.echo(str(path))
