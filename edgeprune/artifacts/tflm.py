"""TFLite-Micro artifacts for Cortex-M targets: C sources, the measured arena, an output check.

Writes, beside model.tflite:

- ``model_data.cc`` / ``model_data.h``: the flatbuffer as a 16-byte aligned const array
  (``g_model_data``, ``g_model_data_len``) plus the measured arena sizes as constants;
  ``model_data.cc`` needs only its own header and ``<cstdint>``.
- ``op_resolver.h``: a ``tflite::MicroMutableOpResolver<N>`` with exactly the ops the model
  uses (N exact), registered with TFLM's own ``AddXxx()`` methods.

The arena is measured in the real TFLM interpreter (``runners.tflm``): the smallest size that
allocates and invokes, checked by probing one step below it, which must fail. TFLM's outputs
on the held-out data are compared with LiteRT's reference kernels (the same arithmetic: equal,
or within one quantization step) and, for information, with LiteRT's default XNNPACK kernels
(which round differently). All text is deterministic (no timestamps): same model, same bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import __version__, native_output
from edgeprune.artifacts import Artifacts
from edgeprune.data import Inputs
from edgeprune.errors import BadInputError, ToolError
from edgeprune.measurement import Measurement
from edgeprune.runners.device_info import this_machine
from edgeprune.targets import TargetProfile
from edgeprune.tflite.graph import TfliteGraph, parse_tflite

log = logging.getLogger(__name__)

COMPARE_SAMPLES = 100  # held-out samples run through both runtimes
_BYTES_PER_LINE = 12

# Builtin op -> MicroMutableOpResolver method (tensorflow/lite/micro/micro_mutable_op_resolver.h).
# The names are not a mechanical CamelCase of the builtin (CUMSUM -> AddCumSum, SVDF -> AddSvdf).
BUILTIN_METHODS = {
    "ABS": "AddAbs", "ADD": "AddAdd", "ADD_N": "AddAddN", "ARG_MAX": "AddArgMax",
    "ARG_MIN": "AddArgMin", "ASSIGN_VARIABLE": "AddAssignVariable",
    "AVERAGE_POOL_2D": "AddAveragePool2D", "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd", "BROADCAST_ARGS": "AddBroadcastArgs",
    "BROADCAST_TO": "AddBroadcastTo", "CALL_ONCE": "AddCallOnce", "CAST": "AddCast",
    "CEIL": "AddCeil", "CONCATENATION": "AddConcatenation", "CONV_2D": "AddConv2D",
    "COS": "AddCos", "CUMSUM": "AddCumSum", "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "DEQUANTIZE": "AddDequantize", "DIV": "AddDiv",
    "DYNAMIC_UPDATE_SLICE": "AddDynamicUpdateSlice", "EMBEDDING_LOOKUP": "AddEmbeddingLookup",
    "ELU": "AddElu", "EQUAL": "AddEqual", "EXP": "AddExp", "EXPAND_DIMS": "AddExpandDims",
    "FILL": "AddFill", "FLOOR": "AddFloor", "FLOOR_DIV": "AddFloorDiv",
    "FLOOR_MOD": "AddFloorMod", "FULLY_CONNECTED": "AddFullyConnected", "GATHER": "AddGather",
    "GATHER_ND": "AddGatherNd", "GREATER": "AddGreater", "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish", "IF": "AddIf", "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D", "LEAKY_RELU": "AddLeakyRelu", "LESS": "AddLess",
    "LESS_EQUAL": "AddLessEqual", "LOG": "AddLog", "LOGICAL_AND": "AddLogicalAnd",
    "LOGICAL_NOT": "AddLogicalNot", "LOGICAL_OR": "AddLogicalOr", "LOGISTIC": "AddLogistic",
    "LOG_SOFTMAX": "AddLogSoftmax", "MAXIMUM": "AddMaximum", "MAX_POOL_2D": "AddMaxPool2D",
    "MIRROR_PAD": "AddMirrorPad", "MEAN": "AddMean", "MINIMUM": "AddMinimum", "MUL": "AddMul",
    "NEG": "AddNeg", "NOT_EQUAL": "AddNotEqual", "PACK": "AddPack", "PAD": "AddPad",
    "PADV2": "AddPadV2", "PRELU": "AddPrelu", "QUANTIZE": "AddQuantize",
    "READ_VARIABLE": "AddReadVariable", "REDUCE_ALL": "AddReduceAll",
    "REDUCE_MAX": "AddReduceMax", "REDUCE_MIN": "AddReduceMin", "RELU": "AddRelu",
    "RELU6": "AddRelu6", "RESHAPE": "AddReshape", "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor", "REVERSE_V2": "AddReverseV2",
    "ROUND": "AddRound", "RSQRT": "AddRsqrt", "SELECT_V2": "AddSelectV2", "SHAPE": "AddShape",
    "SIN": "AddSin", "SLICE": "AddSlice", "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd", "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit", "SPLIT_V": "AddSplitV", "SQUEEZE": "AddSqueeze", "SQRT": "AddSqrt",
    "SQUARE": "AddSquare", "SQUARED_DIFFERENCE": "AddSquaredDifference",
    "STRIDED_SLICE": "AddStridedSlice", "SUB": "AddSub", "SUM": "AddSum", "SVDF": "AddSvdf",
    "TANH": "AddTanh", "TRANSPOSE_CONV": "AddTransposeConv", "TRANSPOSE": "AddTranspose",
    "UNPACK": "AddUnpack", "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
    "VAR_HANDLE": "AddVarHandle", "WHILE": "AddWhile", "ZEROS_LIKE": "AddZerosLike",
}  # fmt: skip
# Custom ops TFLM ships (custom code -> method).
CUSTOM_METHODS = {
    "CIRCULAR_BUFFER": "AddCircularBuffer", "TFLite_Detection_PostProcess":
    "AddDetectionPostprocess", "ethos-u": "AddEthosU", "SignalDelay": "AddDelay",
    "SignalEnergy": "AddEnergy", "SignalFftAutoScale": "AddFftAutoScale",
    "SignalFilterBank": "AddFilterBank", "SignalFilterBankLog": "AddFilterBankLog",
    "SignalFilterBankSquareRoot": "AddFilterBankSquareRoot",
    "SignalFilterBankSpectralSubtraction": "AddFilterBankSpectralSubtraction",
    "SignalFramer": "AddFramer", "SignalIrfft": "AddIrfft", "SignalOverlapAdd": "AddOverlapAdd",
    "SignalPCAN": "AddPCAN", "SignalRfft": "AddRfft", "SignalStacker": "AddStacker",
    "SignalWindow": "AddWindow",
}  # fmt: skip


def resolver_methods(graph: TfliteGraph) -> list[tuple[str, str]]:
    """(op type, AddXxx method) for every op the model uses, sorted by op type.

    An op TFLM has no kernel for is a BadInputError naming it: no firmware could run the model.
    """
    methods, missing = [], []
    for op in graph.op_types():
        custom = op.removeprefix("CUSTOM:") if op.startswith("CUSTOM:") else None
        method = CUSTOM_METHODS.get(custom) if custom is not None else BUILTIN_METHODS.get(op)
        if method is None:
            missing.append(op)
        else:
            methods.append((op, method))
    if missing:
        raise BadInputError(
            graph.name,
            f"uses op {', '.join(missing)}, which TFLite-Micro does not support (no "
            "MicroMutableOpResolver registration)",
            "Replace that layer with supported ops, or choose a target whose runtime has it "
            "(TFLite-Micro's ops: tensorflow/lite/micro/micro_mutable_op_resolver.h)",
        )
    return methods


def _banner(blob: bytes) -> str:
    digest = hashlib.sha256(blob).hexdigest()
    return (f"// Generated by edgeprune {__version__} from model.tflite "
            f"(sha256 {digest}). Do not edit.\n")


def model_data_h(blob: bytes, arena_min: int, arena_recommended: int,
                 contract: str = "") -> str:
    return (
        _banner(blob)
        + "#ifndef EDGEPRUNE_MODEL_DATA_H_\n#define EDGEPRUNE_MODEL_DATA_H_\n\n"
        "#include <cstdint>\n\n"
        "// The .tflite flatbuffer. TFLite-Micro reads it in place: keep it 16-byte aligned.\n"
        "extern const uint8_t g_model_data[];\n"
        "extern const unsigned int g_model_data_len;\n\n"
        "// Tensor arena measured with TFLite-Micro's reference kernels: the smallest size that\n"
        "// allocates and runs the model, and that plus 10 % for optimised kernels' scratch\n"
        "// buffers (e.g. CMSIS-NN). Declare: alignas(16) uint8_t arena[kModelArenaSize];\n"
        f"constexpr unsigned int kModelArenaMinSize = {arena_min};\n"
        f"constexpr unsigned int kModelArenaSize = {arena_recommended};\n\n"
        + contract
        + "#endif  // EDGEPRUNE_MODEL_DATA_H_\n"
    )


def input_contract(preprocessing: dict[str, Any] | None, classes: list[str]) -> str:
    """The deployed model's input contract, as the build read its images: size, colour mode,
    scale and offset (recipe [data]), and the class names of an image folder's labels."""
    text = ""
    if preprocessing is not None:
        height, width = preprocessing["image_size"]
        channels = 1 if preprocessing["color_mode"] == "grayscale" else 3
        text += (
            "// Input contract: the build read its images as "
            f"{height}x{width} {preprocessing['color_mode']}, resized with "
            f"{preprocessing['interpolation']} interpolation where needed, then\n"
            f"// {preprocessing['formula']} (per channel value). Feed samples the same way.\n"
            f"constexpr int kInputHeight = {height};\n"
            f"constexpr int kInputWidth = {width};\n"
            f"constexpr int kInputChannels = {channels};\n"
            f"constexpr float kInputScale = {float(preprocessing['scale'])!r}f;\n"
            f"constexpr float kInputOffset = {float(preprocessing['offset'])!r}f;\n\n")
    if classes:
        names = ", ".join(json.dumps(name, ensure_ascii=True) for name in classes)
        text += ("// Output index -> class (the sorted class folder names).\n"
                 f"constexpr int kNumClasses = {len(classes)};\n"
                 f"inline constexpr const char* kClassNames[kNumClasses] = {{{names}}};\n\n")
    return text


def model_data_cc(blob: bytes) -> str:
    lines = []
    for start in range(0, len(blob), _BYTES_PER_LINE):
        chunk = blob[start:start + _BYTES_PER_LINE]
        lines.append("    " + ", ".join(f"0x{b:02x}" for b in chunk) + ",")
    return (
        _banner(blob)
        + '#include "model_data.h"\n\n#include <cstdint>\n\n'
        "alignas(16) const uint8_t g_model_data[] = {\n"
        + "\n".join(lines)
        + f"\n}};\n\nconst unsigned int g_model_data_len = {len(blob)};\n"
    )


def op_resolver_h(blob: bytes, methods: list[tuple[str, str]]) -> str:
    n = len(methods)
    adds = "".join(
        f"  if (resolver.{method}() != kTfLiteOk) return kTfLiteError;  // {op}\n"
        for op, method in methods
    )
    return (
        _banner(blob)
        + "#ifndef EDGEPRUNE_OP_RESOLVER_H_\n#define EDGEPRUNE_OP_RESOLVER_H_\n\n"
        '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"\n\n'
        "namespace edgeprune {\n\n"
        f"// Exactly the {n} op(s) model.tflite uses: no unused kernels are linked.\n"
        f"constexpr unsigned int kModelOpCount = {n};\n"
        "using ModelOpResolver = tflite::MicroMutableOpResolver<kModelOpCount>;\n\n"
        "// Registers the model's ops in `resolver`.\n"
        "inline TfLiteStatus RegisterModelOps(ModelOpResolver& resolver) {\n"
        + adds
        + "  return kTfLiteOk;\n}\n\n"
        "// The resolver for tflite::MicroInterpreter, built once; nullptr if registration\n"
        "// failed. Usage: tflite::MicroInterpreter interpreter(\n"
        "//     tflite::GetModel(g_model_data), *edgeprune::GetModelOpResolver(), arena,\n"
        "//     kModelArenaSize);\n"
        "inline ModelOpResolver* GetModelOpResolver() {\n"
        "  static ModelOpResolver resolver;\n"
        "  static const bool ok = RegisterModelOps(resolver) == kTfLiteOk;\n"
        "  return ok ? &resolver : nullptr;\n"
        "}\n\n"
        "}  // namespace edgeprune\n\n#endif  // EDGEPRUNE_OP_RESOLVER_H_\n"
    )


def _samples(inputs: Inputs | None, graph: TfliteGraph) -> tuple[np.ndarray, str]:
    """Float samples to run: held-out data, else calibration data, else seeded noise."""
    if inputs is not None and inputs.val is not None:
        return inputs.val.x[:COMPARE_SAMPLES], f"held-out data ({inputs.val.source})"
    if inputs is not None and inputs.calib is not None:
        return inputs.calib[:COMPARE_SAMPLES], "calibration samples"
    shape = graph.tensors[graph.inputs[0]].shape[1:]
    noise = np.random.default_rng(0).random((8, *shape), dtype=np.float32)
    return noise, "seeded uniform noise in [0, 1) (no data given)"


def compare_outputs(tflm_out: np.ndarray, litert_out: np.ndarray) -> dict[str, Any]:
    """Equal, within one quantization step (integer outputs), or a mismatch."""
    a, b = tflm_out.reshape(litert_out.shape), litert_out
    if np.issubdtype(b.dtype, np.integer):
        diff = np.abs(a.astype(np.int64) - b.astype(np.int64))
        worst = int(diff.max()) if diff.size else 0
        verdict = "equal" if worst == 0 else "within_one_step" if worst <= 1 else "mismatch"
        return {"result": verdict, "max_diff_steps": worst,
                "values_differing": int(np.count_nonzero(diff)), "values": int(diff.size)}
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    worst = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(b).max()) if b.size else 0.0
    verdict = "equal" if worst == 0 else ("close" if worst <= 1e-5 * max(scale, 1.0)
                                          else "mismatch")
    return {"result": verdict, "max_abs_diff": worst,
            "values_differing": int(np.count_nonzero(diff)), "values": int(diff.size)}


def litert_raw(model: Path, raw_inputs: np.ndarray, reference: bool) -> np.ndarray:
    """Output 0 of LiteRT, as stored (int8 stays int8), for inputs already in the input type."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
    with native_output.captured("LiteRT"):
        interp = Interpreter(model_path=str(model), experimental_op_resolver_type=resolver)
        interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    results = []
    for sample in raw_inputs:
        interp.set_tensor(inp["index"], sample[None])
        interp.invoke()
        results.append(interp.get_tensor(out["index"])[0].copy())
    return np.stack(results)


def _top1(a: np.ndarray, b: np.ndarray) -> float | None:
    """Fraction of samples with the same top-1 class (None unless the output is a class vector)."""
    if b.ndim != 2 or b.shape[1] < 2:
        return None
    return float(np.mean(a.reshape(b.shape).argmax(-1) == b.argmax(-1)))


def build(
    tflite_path: Path, work_dir: Path, target: TargetProfile, inputs: Inputs | None
) -> Artifacts:
    """C sources + measured arena + TFLM-vs-LiteRT check for a Cortex-M target."""
    from edgeprune.runners import host, tflm

    blob = tflite_path.read_bytes()
    graph = parse_tflite(blob, name=str(tflite_path))
    methods = resolver_methods(graph)  # before any TFLM run: names an unsupported op
    x, source = _samples(inputs, graph)
    raw_in = host.quantize_input(tflite_path, x)
    arena = tflm.measure_arena(tflite_path, raw_in[0])
    below = arena.min_bytes - arena.step_bytes
    if tflm.probe_arena(tflite_path, below) or not tflm.probe_arena(tflite_path, arena.min_bytes):
        raise ToolError(
            str(tflite_path),
            f"the measured TFLite-Micro arena ({arena.min_bytes} B) is not the smallest that "
            f"works (a {below} B arena also runs, or {arena.min_bytes} B does not)",
            f"Reproduce with edgeprune.runners.tflm.probe_arena('{tflite_path}', {below})",
        )
    # Run at the minimum arena: a real inference on every sample, not just an allocation.
    tflm_out = tflm.run_tflm(tflite_path, raw_in, arena.min_bytes)
    # TFLM's kernels are TFLite's reference kernels: against those the outputs must be equal.
    # LiteRT's default optimised kernels (XNNPACK) round differently and are reported apart.
    reference = litert_raw(tflite_path, raw_in, reference=True)
    match = {**compare_outputs(tflm_out, reference), "samples": len(x), "data": source,
             "output": 0, "dtype": str(reference.dtype),
             "against": "LiteRT reference kernels (OpResolverType.BUILTIN_REF)",
             "top1_agreement": _top1(tflm_out, reference)}
    default = litert_raw(tflite_path, raw_in, reference=False)
    match["litert_default"] = {**compare_outputs(tflm_out, default),
                               "against": "LiteRT default kernels (XNNPACK), as used for accuracy",
                               "top1_agreement": _top1(tflm_out, default)}
    if match["result"] == "mismatch":
        log.warning("TFLite-Micro and LiteRT's reference kernels differ by more than one "
                    "step: %s", match)

    files = {
        "model_data.cc": model_data_cc(blob),
        "model_data.h": model_data_h(blob, arena.min_bytes, arena.recommended_bytes,
                                     input_contract(inputs.preprocessing, inputs.classes)
                                     if inputs is not None else ""),
        "op_resolver.h": op_resolver_h(blob, methods),
    }
    paths = []
    for name, text in files.items():
        path = work_dir / name
        path.write_text(text, encoding="utf-8", newline="\n")
        paths.append(path)

    where = target.name
    arena_detail = (
        f"smallest TFLite-Micro tensor arena that allocates and runs model.tflite "
        f"(16-byte steps; {below} B fails), reference kernels on this host; recommended "
        f"{arena.recommended_bytes} B adds 10 % for CMSIS-NN scratch buffers"
    )
    flash_detail = (
        f"g_model_data in model_data.cc ({len(blob)} B, the .tflite as a const array); the "
        "TFLite-Micro runtime, kernels, op resolver and application code are not included"
    )
    measurements = [
        Measurement("ram_bytes", arena.min_bytes, "bytes", "tflm", where, arena_detail,
                    f"TFLite-Micro's interpreter built for {this_machine('tflite-micro')}"),
        Measurement("flash_bytes", len(blob), "bytes", "artifact", where, flash_detail),
    ]
    report = {
        "runtime": "tflite-micro",
        "files": sorted(files),
        "model_bytes": len(blob),
        "ops": [{"op": op, "method": method} for op, method in methods],
        "op_count": len(methods),
        "arena": {
            "min_bytes": arena.min_bytes,
            "recommended_bytes": arena.recommended_bytes,
            "step_bytes": arena.step_bytes,
            "one_step_below_fails": True,
            "tensor_plan_bytes": arena.head_bytes,
            "persistent_bytes": arena.tail_bytes,
            "probes": arena.probes + 2,
            "note": "measured with the tflite-micro Python package (reference kernels, 64-bit "
                    "host); a 32-bit device needs slightly less persistent memory, optimised "
                    "kernels may need scratch buffers: use recommended_bytes",
        },
        "outputs_match": match,
        "flash_note": "flash counts the model array only; the TFLite-Micro runtime code is not "
                      "included",
    }
    return Artifacts(measurements, report, paths)
