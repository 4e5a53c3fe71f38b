"""ONNX export of the emitted model: tf2onnx converts model.tflite, onnxruntime checks it.

Converted from the .tflite for every quantize mode, never from the Keras model: the ONNX file
is then a translation of exactly the artifact that ships (batch norms folded, pruned weights,
int8 as QuantizeLinear/DequantizeLinear pairs, integer I/O where the target has it), and
``edgeprune export`` can convert a finished build folder, which holds no float model. Measured
on the bundled digits example (its held-out samples, rpi4): int8 from the .tflite gave outputs
equal to LiteRT's; float (``--quantize none``) from the .tflite differed from LiteRT by at most
4.2e-7, from the Keras model (``tf2onnx.convert.from_keras``) by 6.0e-7. ``dynamic`` becomes
ONNX DynamicQuantizeLinear, whose per-tensor uint8 activations differ from LiteRT's per-row
int8 ones: its agreement is measured and recorded like the others, not assumed.

tf2onnx, onnx and onnxruntime are the optional extra ``edgeprune[onnx]``; each is imported
only inside the functions that use it.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.errors import BadInputError, ToolError
from edgeprune.runners import host

log = logging.getLogger(__name__)

FILENAME = "model.onnx"
EXTRA = "edgeprune[onnx]"
PIP_COMMAND = "pip install 'edgeprune[onnx]'"
MODULES = ("tf2onnx", "onnx", "onnxruntime")
# tf2onnx 1.17's default and best-tested opset; per-axis QDQ (int8 conv weights) needs ≥ 13.
OPSET = 15
MAX_SAMPLES = 1000  # as many as the fidelity stage compares against the float model
BATCH = 64
AGREEMENT_WARNING = 0.99  # top-1 agreement below which the build log warns (as fidelity's)
# Modes whose .tflite has no valid ONNX form, and why (refused before any work, exit 2).
UNEXPORTABLE = {
    "int16x8": "tf2onnx writes its int16 activations as int16 QuantizeLinear and its biases as "
               "int64 DequantizeLinear, which no ONNX opset tf2onnx supports (≤ 18) allows",
}


def missing_modules() -> list[str]:
    return [name for name in MODULES if importlib.util.find_spec(name) is None]


def _missing_extra(what: str, missing: list[str]) -> BadInputError:
    return BadInputError(
        what, f"needs the optional extra {EXTRA} ({', '.join(missing)} not installed)",
        f"Install it with: {PIP_COMMAND}",
    )


def require(what: str) -> None:
    """Exit 2 naming the extra and the pip command when a module of it is not installed."""
    missing = missing_modules()
    if missing:
        raise _missing_extra(what, missing)


def check(what: str, quantize: str) -> None:
    """Refuse an ONNX export that cannot work, before any work: the extra is not installed,
    or the quantize mode has no ONNX form (exit 2)."""
    require(what)
    if quantize in UNEXPORTABLE:
        raise BadInputError(
            f"{what} with --quantize {quantize}", UNEXPORTABLE[quantize],
            "Export an int8, qat, dynamic, float16 or none build instead",
        )


def _import(what: str) -> tuple[Any, Any]:
    try:
        import onnx
        import tf2onnx
    except ImportError as exc:  # present by find_spec, but broken
        raise _missing_extra(what, [exc.name or str(exc)]) from exc
    return tf2onnx, onnx


def convert(tflite: Path, what: str = "--export onnx") -> bytes:
    """The serialized ONNX model of a .tflite file, validated and in canonical form."""
    tf2onnx, onnx = _import(what)
    from edgeprune.exporters.onnx_canonical import canonicalize

    quiet = not log.isEnabledFor(logging.DEBUG)
    if quiet:  # tf2onnx logs every rewrite at INFO
        logging.getLogger("tf2onnx").setLevel(logging.WARNING)
    fix = f"Reproduce with tf2onnx.convert.from_tflite('{tflite}', opset={OPSET})"
    try:
        with warnings.catch_warnings():  # tf2onnx reads the .tflite with tf.lite.Interpreter
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            model, _ = tf2onnx.convert.from_tflite(str(tflite), opset=OPSET)
    except Exception as exc:
        raise ToolError("tf2onnx", f"failed to convert {tflite} "
                        f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                        fix) from exc
    # from_tflite continues past ops it cannot convert and leaves them in the graph as-is.
    unknown = sorted({n.op_type for n in model.graph.node if not onnx.defs.has(n.op_type,
                                                                                n.domain)})
    if unknown:
        raise ToolError("tf2onnx", f"left TFLite ops without an ONNX equivalent in {tflite}: "
                        f"{', '.join(unknown)}", fix)
    canonicalize(model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ToolError("tf2onnx", f"wrote an invalid ONNX model for {tflite} "
                        f"({str(exc).splitlines()[0]})", fix) from exc
    return model.SerializeToString(deterministic=True)


def _session(onnx_model: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT warns about unused initializers
    options.intra_op_num_threads = 1  # the same reduction order every run
    try:
        return ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ToolError("onnxruntime", f"cannot load {FILENAME} ({str(exc).splitlines()[0]})",
                        "Reproduce with onnxruntime.InferenceSession('model.onnx')") from exc


def _onnx_raw(session: Any, x: np.ndarray, names: list[str]) -> list[np.ndarray]:
    inp = session.get_inputs()[0]
    batch = BATCH if not isinstance(inp.shape[0], int) else inp.shape[0]
    onnx_outputs = [o.name for o in session.get_outputs()]
    wanted = names if set(names) <= set(onnx_outputs) else onnx_outputs[:len(names)]
    chunks = [session.run(wanted, {inp.name: x[i:i + batch]}) for i in range(0, len(x), batch)]
    return [np.concatenate([c[k] for c in chunks]) for k in range(len(wanted))]


def _steps(tflite: bytes) -> list[float | None]:
    """Per output, the size of one quantization step of its values: its own scale when it is
    an integer tensor, that of the integer tensor its DEQUANTIZE reads when it is float, else
    None (a float model has no steps)."""
    from edgeprune.tflite.graph import parse_tflite

    graph = parse_tflite(tflite, name="model.tflite")
    producer = {out: op for op in graph.ops for out in op.outputs}
    steps: list[float | None] = []
    for t in graph.outputs:
        tensor, op = graph.tensors[t], producer.get(t)
        if not tensor.scale and op is not None and op.op_type == "DEQUANTIZE":
            tensor = graph.tensors[op.inputs[0]]
        steps.append(float(tensor.scale[0]) if len(tensor.scale) == 1 else None)
    return steps


def agreement(tflite: bytes, onnx_model: bytes, x: np.ndarray, samples_from: str) -> dict:
    """The report's ``onnx`` section: onnxruntime against LiteRT on the same samples (both
    fed the same quantized input), per output and for the model's top-1 class."""
    x = np.asarray(x[:MAX_SAMPLES], dtype=np.float32)
    model_inputs = host.interpreter(tflite).get_input_details()
    if len(model_inputs) != 1:  # as the fidelity stage
        return {"file": FILENAME, "bytes": len(onnx_model),
                "skipped": "agreement is measured for single-input models only"}
    lite, details = host.outputs(tflite, x, raw=True)
    session = _session(onnx_model)
    fed = host._quantize(x, model_inputs[0])  # exactly what LiteRT was fed
    ours = _onnx_raw(session, fed, [d["name"] for d in details])
    outputs = []
    for k, (a, b, detail, step) in enumerate(zip(lite, ours, details, _steps(tflite),
                                                 strict=True)):
        fa, fb = host._dequantize(a, detail), host._dequantize(b.astype(a.dtype), detail)
        diff = float(np.max(np.abs(fa.astype(np.float64) - fb))) if a.size else 0.0
        if np.issubdtype(a.dtype, np.integer):
            steps: float | None = float(np.max(np.abs(a.astype(np.int64) - b)))
        else:
            steps = None if step is None else round(diff / step, 3)
        outputs.append({"output": k, "name": detail["name"], "max_abs_diff": diff,
                        "max_diff_steps": steps, "identical": bool(np.array_equal(a, b))})
    top1 = None
    first = host._dequantize(lite[0], details[0])
    if first.ndim == 2 and first.shape[-1] > 1:
        top1 = float(np.mean(first.argmax(-1) == host._dequantize(ours[0], details[0]).argmax(-1)))
    steps_all = [o["max_diff_steps"] for o in outputs]
    section: dict[str, Any] = {
        "file": FILENAME, "bytes": len(onnx_model), "converted_from": "model.tflite",
        "converter": f"tf2onnx {_version('tf2onnx')}", "opset": OPSET,
        "runtime": f"onnxruntime {_version('onnxruntime')} (CPU)",
        "samples": len(x), "samples_from": samples_from, "top1_agreement": top1,
        "max_abs_diff": max(o["max_abs_diff"] for o in outputs),
        "max_diff_steps": None if None in steps_all else max(steps_all),
        "identical": all(o["identical"] for o in outputs),
    }
    if len(outputs) > 1:
        section["outputs"] = outputs
    if top1 is not None and top1 < AGREEMENT_WARNING:
        log.warning("%s picks another class than model.tflite on %.1f %% of %d samples",
                    FILENAME, 100 * (1 - top1), len(x))
    log.info("%s: %d B; against LiteRT on %d samples: top-1 agreement %s, max difference "
             "%s (%s steps)", FILENAME, len(onnx_model), len(x), top1,
             f"{section['max_abs_diff']:.3g}", section["max_diff_steps"])
    return section


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
