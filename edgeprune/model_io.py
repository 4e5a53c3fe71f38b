"""Load and save Keras models safely.

A model file can run code when it is loaded or run: a ``Lambda`` layer stores Python bytecode, a
config entry can name any Python module for Keras to import, a ``TFOpLambda`` layer can name
any TensorFlow function (``tf.io.write_file`` included), and a SavedModel carries TF graphs.
Before handing a file to Keras, its config is read as plain JSON (``config.json``, the HDF5
``model_config`` attribute or ``keras_metadata.pb``) and ``untrusted_parts`` lists what would
run code; anything listed is refused unless the user passes ``--trust-model``. Keras' own
``safe_mode`` stays on as a second line. The format is detected from the bytes, not the suffix.
SECURITY.md states the whole policy.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any

from edgeprune import _tf, model_limits
from edgeprune.errors import ModelLoadError
from edgeprune.files import read_head

log = logging.getLogger(__name__)

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
CODE_LAYERS = ("Lambda",)  # classes whose config carries Python bytecode
# Layers that call a TF/Python attribute named in the config; refused unless trusted.
ATTRIBUTE_LAYERS = ("ClassMethod", "InstanceMethod", "InstanceProperty")
OP_LAYERS = ("TFOpLambda", "SlicingOpLambda")  # call the TF function named in config.function
# TF functions an op layer may call: pure tensor math (what `x + 1`, `tf.nn.relu(x)`,
# `x[:, 0]` or keras.applications produce). Anything else (tf.io, tf.raw_ops, tf.py_function,
# tf.summary, tf.compat.v1, …) could touch files or run Python, so it needs --trust-model.
SAFE_OP_PREFIXES = ("math.", "nn.", "__operators__.", "linalg.", "image.resize", "signal.")
SAFE_OPS = frozenset({
    "reshape", "transpose", "concat", "stack", "unstack", "expand_dims", "squeeze", "identity",
    "cast", "clip_by_value", "split", "pad", "slice", "strided_slice", "gather", "gather_nd",
    "tile", "shape", "broadcast_to", "where", "ones_like", "zeros_like", "fill", "range",
    "einsum", "matmul", "reverse", "roll", "argsort", "sort", "one_hot", "maximum", "minimum",
    "add", "multiply", "subtract", "divide", "abs", "exp", "sqrt", "square", "sigmoid", "tanh",
    "reduce_mean", "reduce_sum", "reduce_max", "reduce_min",
})  # fmt: skip
# Config entries name the module a class or function is imported from: only Keras' and
# TensorFlow's own built-in classes, by exact (module, class) pair (builtin_classes.py).
SAFE_BUILTINS = frozenset({"tuple", "list", "dict", "int", "float", "str", "bool"})
# SavedModel graph ops that read or write files or call back into Python: refused in every
# function a build could run (``savedmodel_run_ops``). Only the saver's own save function, which
# loading never runs, may write a checkpoint, and only its restore function may read one.
UNSAFE_GRAPH_OPS = frozenset({
    "ReadFile", "WriteFile", "MatchingFiles", "ImmutableConst", "PyFunc", "PyFuncStateless",
    "EagerPyFunc", "CreateSummaryFileWriter", "WriteSummary", "WriteScalarSummary",
    "WriteHistogramSummary", "WriteImageSummary", "WriteAudioSummary", "WriteRawProtoSummary",
    "WriteGraphSummary", "ImportEvent", "FlushSummaryWriter", "LoadAndRemapMatrix",
    # checkpoint writers, and debug/dataset ops that take a file or folder to write to
    "SaveV2", "Save", "SaveSlices", "MergeV2Checkpoints", "DebugIdentity", "DebugIdentityV2",
    "DebugIdentityV3", "DebugNanCount", "DebugNumericSummary", "DebugNumericSummaryV2",
    "SaveDataset", "SaveDatasetV2", "DatasetToTFRecord", "ExperimentalDatasetToTFRecord",
    "DistributedSave", "SnapshotDataset", "SnapshotDatasetV2", "CacheDataset", "CacheDatasetV2",
    "CreateSummaryDbWriter", "FileSystemSetConfiguration",
    # readers of files named by a tensor
    "TFRecordDataset", "TFRecordDatasetV2", "TextLineDataset", "FixedLengthRecordDataset",
    "FixedLengthRecordDatasetV2", "LoadDataset", "LMDBDataset", "ExperimentalLMDBDataset",
    "SqlDataset", "ExperimentalSqlDataset", "MatchingFilesDataset",
    "ExperimentalMatchingFilesDataset", "InitializeTableFromTextFile",
    "InitializeTableFromTextFileV2", "FixedLengthRecordReader", "FixedLengthRecordReaderV2",
    "TFRecordReader", "TFRecordReaderV2", "WholeFileReader", "WholeFileReaderV2",
    "RecordInput", "DecodeProtoV2",
})  # fmt: skip
RESTORE_OPS = frozenset({"RestoreV2", "Restore", "RestoreSlice"})  # the restore function's
_FORMATS = "a .keras file, an .h5 file or a SavedModel folder"


def detect_format(path: Path) -> str:
    """'keras' | 'h5' | 'savedmodel', from content; raises ModelLoadError otherwise."""
    what = f"--model {path}"
    if not path.exists():
        raise ModelLoadError(what, "no such file or folder", f"Give the path to {_FORMATS}")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            model_limits.check_folder(path, what)
            return "savedmodel"
        raise ModelLoadError(what, "is a folder without saved_model.pb", f"Give {_FORMATS}")
    head = read_head(path, 8, what, f"Give {_FORMATS}", ModelLoadError)
    if head.startswith(ZIP_MAGIC):
        return "keras"
    if head == HDF5_MAGIC:
        return "h5"
    hint = " (it is a .tflite flatbuffer: use `edgeprune check` for those)" \
        if head[4:8] == b"TFL3" else ""
    raise ModelLoadError(
        what, f"is not a Keras model (neither a .keras zip nor HDF5){hint}", f"Give {_FORMATS}"
    )


def read_config(path: Path, fmt: str) -> Any:
    """The model's architecture config as JSON, read without loading the model.

    For a SavedModel, the list of per-object configs in ``keras_metadata.pb`` (parsed with the
    protobuf class, which needs TensorFlow to be imported).
    """
    what = f"--model {path}"
    try:
        if fmt == "savedmodel":
            return _savedmodel_configs(path)
        if fmt == "keras":
            with zipfile.ZipFile(path) as zf:
                return model_limits.keras_config(zf, what)
        if fmt == "h5":
            import h5py

            with h5py.File(path, "r") as f:
                model_limits.check_h5(f, what)
                raw = f.attrs.get("model_config")
            if raw is None:
                raise ModelLoadError(
                    what,
                    "is an HDF5 file without a model config (weights only?)",
                    "Save the whole model with model.save('model.h5') or use .keras",
                )
            return model_limits.parse_config(raw if isinstance(raw, bytes) else raw.encode(), what)
    except ModelLoadError:
        raise
    except Exception as exc:  # zipfile/h5py/json raise many types on corrupt files
        raise ModelLoadError(what, f"is corrupt or truncated ({exc})", "Re-save the model") from exc
    return None


def _savedmodel_configs(path: Path) -> list[Any]:
    meta = path / "keras_metadata.pb"
    if not meta.is_file():
        raise ModelLoadError(
            f"--model {path}",
            "is a SavedModel without Keras metadata (keras_metadata.pb), as Keras 3's "
            "model.export() and tf.saved_model.save write: it holds TF graphs and no Keras "
            "layers, and pruning and fine-tuning work on layers",
            "Give the Keras file the model was saved to (model.save('model.keras')) to prune "
            "it; --prune none (without QAT) quantizes, converts and checks this SavedModel as "
            "it is",
        )
    _tf.keras()  # the protobuf class lives in tf_keras (TF_USE_LEGACY_KERAS set first)
    from tf_keras.protobuf import saved_metadata_pb2

    proto = saved_metadata_pb2.SavedMetadata()
    proto.ParseFromString(meta.read_bytes())
    return [model_limits.parse_config(node.metadata.encode(), f"--model {path}")
            for node in proto.nodes if node.metadata]


def savedmodel_run_ops(path: Path) -> set[str]:
    """The op types a build could run from a SavedModel: in its graph and in every function
    reachable from it and from its saved objects, except the saver's save function (loading
    never runs it), with the restore ops allowed only where the saver's restore reaches."""
    _tf.tf()  # TensorFlow's first import goes through _tf, which keeps its start-up lines quiet
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString((path / "saved_model.pb").read_bytes())
    except Exception as exc:  # protobuf's DecodeError, OSError
        raise ModelLoadError(f"--model {path}", f"saved_model.pb is corrupt ({exc})",
                             "Re-export the model") from exc
    ops: set[str] = set()
    for graph in proto.meta_graphs:
        library = {fn.signature.name: fn.node_def for fn in graph.graph_def.library.function}
        save, restore = (graph.saver_def.save_tensor_name.split(":")[0],
                         graph.saver_def.restore_op_name.split(":")[0])
        runs = [n for n in graph.graph_def.node if n.name not in (save, restore)]
        run_fns = _reachable([*runs, *(node for name in graph.object_graph_def.concrete_functions
                                      for node in library.get(name, ()))], library)
        run_fns |= set(graph.object_graph_def.concrete_functions) & set(library)
        ops.update(n.op for n in runs)
        ops.update(n.op for name in run_fns for n in library[name])
        restores = [n for n in graph.graph_def.node if n.name == restore]
        ops.update(n.op for n in restores)
        for name in _reachable(restores, library) - run_fns:
            ops.update(n.op for n in library[name] if n.op not in RESTORE_OPS)
    return ops


def _reachable(nodes: list[Any], library: dict[str, Any]) -> set[str]:
    """Names of the library functions ``nodes`` call, directly or through other functions
    (any function-valued attribute: calls, control flow branches and bodies)."""
    found: set[str] = set()
    todo = list(nodes)
    while todo:
        for value in todo.pop().attr.values():
            for name in [value.func.name, *(f.name for f in value.list.func)]:
                if name in library and name not in found:
                    found.add(name)
                    todo.extend(library[name])
    return found


def _is_builtin(module: Any, cls: Any, config: Any) -> bool:
    if module is None:
        return True
    if module == "builtins":
        return cls in SAFE_BUILTINS
    if not isinstance(module, str) or not module.startswith(("keras", "tf_keras", "tensorflow")):
        return False  # never import anything else just to look
    from edgeprune.builtin_classes import is_builtin

    return is_builtin(module, cls, config)


def _is_safe_op(function: Any) -> bool:
    return isinstance(function, str) and (function in SAFE_OPS or function.startswith(
        SAFE_OP_PREFIXES))


def untrusted_parts(config: Any) -> list[str]:
    """What in a model config would run code stored in (or named by) the file, as readable
    phrases; empty when the config uses built-in Keras classes and pure tensor ops only."""
    found: list[str] = []

    def name_of(node: dict[str, Any]) -> str:
        inner = node.get("config")
        return str(inner.get("name", "?")) if isinstance(inner, dict) else str(node.get("name"))

    def walk(node: Any, layer: str | None, in_layers: bool = False) -> None:
        if isinstance(node, list):
            for value in node:
                walk(value, layer, in_layers)
            return
        if not isinstance(node, dict):
            return
        cls = node.get("class_name")
        inner = node.get("config") if isinstance(node.get("config"), dict) else node
        if in_layers or "inbound_nodes" in node:  # a layer entry: name it in messages
            layer = name_of(node)
        special = cls in (*CODE_LAYERS, *ATTRIBUTE_LAYERS, *OP_LAYERS, "__lambda__")
        if cls in CODE_LAYERS or cls == "__lambda__":
            found.append(f"Lambda layer {name_of(node)!r} (Python bytecode)")
        elif cls in ATTRIBUTE_LAYERS:
            found.append(f"{cls} layer {name_of(node)!r} (calls an attribute named in the file)")
        elif cls in OP_LAYERS and not _is_safe_op(inner.get("function")):
            found.append(f"{cls} layer {name_of(node)!r} calling tf.{inner.get('function')}")
        if "module" in node and not special and not _is_builtin(node["module"], cls,
                                                                 node.get("config")):
            what = (f"function {node.get('config')!r}" if cls == "function"
                    else f"class {cls!r}" if isinstance(cls, str) else "an object")
            where = f" (layer {layer!r})" if layer else ""
            found.append(f"{what}{where} from Python module {node['module']!r} (not a Keras or "
                         "TensorFlow built-in; imported on load)")
        for key, value in node.items():
            walk(value, layer, key == "layers")

    walk(config, None)
    return list(dict.fromkeys(found))


def load_model(path: Path, trust_model: bool = False, layerless_ok: bool = False) -> Any:
    """A tf_keras model, loaded without compiling; refuses code-carrying layers by default.

    A Keras 3 file is loaded by Keras 3 and rebuilt in tf_keras (``keras3.bridge``); call
    ``keras3.bridge.verify`` with real samples before relying on the result. With
    ``layerless_ok`` (``--prune none``), a SavedModel without Keras layers is wrapped whole
    (``layerless``)."""
    what = f"--model {path}"
    fmt = detect_format(path)
    layerless = fmt == "savedmodel" and not (path / "keras_metadata.pb").is_file()
    config = [] if layerless and layerless_ok else read_config(path, fmt)
    if not trust_model:
        risky = untrusted_parts(config)
        if fmt == "savedmodel":
            ops = sorted(savedmodel_run_ops(path) & (UNSAFE_GRAPH_OPS | RESTORE_OPS))
            risky += [f"graph op {op} (touches files or runs Python)" for op in ops]
        if risky:
            raise ModelLoadError(
                what,
                f"contains {'; '.join(risky[:4])}{' and more' if len(risky) > 4 else ''}; "
                "loading or running it executes code stored in or named by the file",
                "Replace those layers with built-in Keras layers and re-save, or pass "
                "--trust-model if you trust this file",
            )
    if fmt == "keras" and path.suffix != ".keras":  # Keras picks its reader by the suffix
        raise ModelLoadError(what, "is a .keras zip archive with another suffix",
                             f"Rename it to {path.stem}.keras")
    if layerless:  # read_config refused it unless layerless_ok
        from edgeprune import layerless as layerless_mod

        model = layerless_mod.wrap(path, what)
        _check_input_shape(tuple(model.input_shape), what)
        return model
    from edgeprune.keras3 import bridge

    if bridge.is_keras3_file(path, fmt, config):  # translated to tf_keras, checked later
        model = bridge.load(path, trust_model, config)
    else:
        model = _load_tf_keras(path, trust_model, config)
    from edgeprune.pruning.ir import SUBCLASSED_FIX, is_graph_model

    if not is_graph_model(model):  # a subclassed model: no inputs, no layer graph to prune
        raise ModelLoadError(
            what,
            f"is a subclassed model ({type(model).__name__}), so its layer graph cannot be read",
            SUBCLASSED_FIX[0].upper() + SUBCLASSED_FIX[1:] + ", then save it as .keras",
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        ins = ", ".join(repr(n) for n in model.input_names)
        outs = ", ".join(repr(n) for n in model.output_names)
        raise ModelLoadError(
            what,
            f"has {len(model.inputs)} inputs ({ins}) and {len(model.outputs)} outputs ({outs}); "
            "pruning, fine-tuning and the target runtimes here need exactly one of each",
            "Build a sub-model with one input and one output (split the model), e.g. "
            "keras.Model(model.inputs[0], model.outputs[0])",
        )
    _check_input_shape(tuple(model.input_shape), what)
    return model


def _load_tf_keras(path: Path, trust_model: bool, config: Any = None) -> Any:
    keras = _tf.keras()
    from tf_keras.src.saving.serialization_lib import SafeModeScope

    what = f"--model {path}"
    try:
        # The scope makes Keras refuse Lambda bytecode in .h5 and SavedModel files as well.
        with SafeModeScope(not trust_model):
            model = keras.models.load_model(str(path), compile=False, safe_mode=not trust_model,
                                            custom_objects=_application_layers(config))
    except Exception as exc:
        raise ModelLoadError(
            what, f"cannot be loaded by Keras ({_first_line(exc)})", _fix(exc)
        ) from exc
    if not isinstance(model, keras.Model):
        raise ModelLoadError(
            what,
            f"loaded as {type(model).__name__}, not a Keras model (a SavedModel without "
            "Keras metadata?)",
            "Export it from Keras with model.save('model.keras')",
        )
    return model


def _application_layers(config: Any) -> dict[str, type]:
    """The layers tf_keras' applications define without registering them (ConvNeXt's
    LayerScale …) that ``config`` names with their own module: tf_keras cannot reload them
    from a .keras file ("'str' object is not callable"). Matched by module as well, so a
    user's own class of the same name is never replaced."""
    from tf_keras.src.applications import convnext, inception_resnet_v2

    known = {(m.__name__, c.__name__): c for m, c in (
        (convnext, convnext.LayerScale), (convnext, convnext.StochasticDepth),
        (inception_resnet_v2, inception_resnet_v2.CustomScaleLayer))}
    found: dict[str, type] = {}

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, dict):
            cls = known.get((node.get("module"), node.get("class_name")))
            if cls is not None:
                found[cls.__name__] = cls
            for value in node.values():
                walk(value)

    walk(config)
    return found


def _check_input_shape(shape: tuple[Any, ...], what: str) -> None:
    """Edge runtimes need a batch axis plus fixed feature dimensions."""
    if len(shape) < 2:
        raise ModelLoadError(
            what,
            f"has input shape {shape}: no batch dimension (edgeprune feeds batches of samples)",
            "Build the model on keras.Input(sample_shape), which adds the batch axis",
        )
    if any(d is None for d in shape[1:]):
        raise ModelLoadError(
            what,
            f"has input shape {shape} with unknown dimensions; edge runtimes need a fixed "
            "input size",
            "Rebuild it on a fixed keras.Input((H, W, C)) and copy the weights with "
            "set_weights, then save it",
        )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _fix(exc: Exception) -> str:
    text = str(exc)
    if "Unknown layer" in text or "custom" in text.lower() or "Could not locate" in text:
        return (
            "The model uses a custom class; re-save it with built-in layers only "
            "(edgeprune never imports classes named in a file)"
        )
    return "Check that the file was saved by Keras (tf.keras/tf_keras or Keras 3)"


def save_model(model: Any, path: Path) -> Path:
    model.save(path)
    return path


def num_classes(model: Any) -> int:
    return int(model.output_shape[-1])
