"""Which (module, class) pairs a model config may name: Keras' and TensorFlow's own built-ins.

A config entry ``{"module": M, "class_name": C}`` makes Keras import M and call C's
``from_config``. A module prefix ("keras.") is not enough to trust that: Keras' own modules also
hold classes that read files or unpickle (``TFSMLayer``, ``TorchModuleWrapper``) and functions
that are not model parts. So the pair must name, exactly, a class Keras 3, tf_keras or
TensorFlow define as a layer, op, initializer, regularizer, constraint, dtype policy, loss,
metric or optimizer (compile configs name the last three), or a public activation function.
The allow-list is built from the installed packages, so it follows their versions.
"""

from __future__ import annotations

import sys
from functools import cache
from typing import Any

from edgeprune import _tf

# Built-in, yet they load or run code named in the config: never allowed by this list
# (Lambda and the op/attribute layers have their own, finer rules in model_io).
CODE_CLASSES = frozenset({"Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"})
_KINDS = ("layers", "initializers", "regularizers", "constraints", "losses", "metrics",
          "optimizers", "dtype_policies", "models")
_FUNCTION_KINDS = ("activations", "losses", "metrics")
_HELPERS = frozenset({"get", "serialize", "deserialize"})  # look-up helpers, not model parts


def _bases() -> tuple[type, ...]:
    keras = _tf.keras3()
    from keras.src.ops.operation import Operation
    tfk = _tf.keras()
    from tensorflow.python.ops import init_ops_v2

    found: list[type] = [Operation, init_ops_v2.Initializer, keras.optimizers.schedules.
                         LearningRateSchedule, tfk.optimizers.schedules.LearningRateSchedule]
    for root in (keras, tfk):
        for kind, base in (("layers", "Layer"), ("initializers", "Initializer"),
                           ("regularizers", "Regularizer"), ("constraints", "Constraint"),
                           ("losses", "Loss"), ("metrics", "Metric"),
                           ("optimizers", "Optimizer")):
            found.append(getattr(getattr(root, kind), base))
    found.append(keras.DTypePolicy)
    return tuple(found)


@cache
def allowed() -> tuple[frozenset[tuple[str, str]], frozenset[tuple[str, str]]]:
    """(module, class) pairs and (module, function) pairs a config may name."""
    keras = _tf.keras3()
    tfk = _tf.keras()
    import tensorflow.python.ops.init_ops_v2  # noqa: F401  (TF's own initializers)

    bases = _bases()
    classes: set[tuple[str, str]] = set()
    functions: set[tuple[str, str]] = set()

    def is_part(obj: Any) -> bool:
        return isinstance(obj, type) and issubclass(obj, bases) and obj.__name__ not in \
            CODE_CLASSES

    # Where each class is defined (Keras 3 names internal modules, e.g. keras.src.ops.numpy).
    roots = ("keras.src.", "tf_keras.src.", "tensorflow.python.ops.init_ops_v2")
    for modname, module in list(sys.modules.items()):
        if module is None or not modname.startswith(roots):
            continue
        for name, obj in list(vars(module).items()):
            if is_part(obj) and obj.__module__ == modname:
                classes.add((modname, name))
    # Public namespaces; tf_keras writes its own as "keras.<kind>" too.
    for root, prefixes in ((keras, ("keras",)), (tfk, ("tf_keras", "keras"))):
        for kind in (*_KINDS, *_FUNCTION_KINDS):
            namespace = getattr(root, kind, None)
            if namespace is None:
                continue
            for name in dir(namespace):
                obj = getattr(namespace, name, None)
                for prefix in prefixes:
                    if is_part(obj):
                        classes.add((f"{prefix}.{kind}", name))
                    elif (kind in _FUNCTION_KINDS and callable(obj) and not name.startswith("_")
                          and name not in _HELPERS):
                        functions.add((f"{prefix}.{kind}", name))
                        functions.add((getattr(obj, "__module__", ""), name))
    for prefix in ("keras", "tf_keras"):  # top-level classes (keras.DTypePolicy, keras.Model …)
        root = keras if prefix == "keras" else tfk
        classes.update((prefix, n) for n in dir(root) if is_part(getattr(root, n, None)))
    return frozenset(classes), frozenset(functions)


def is_builtin(module: str, class_name: Any, config: Any) -> bool:
    """True when a config entry names exactly a Keras/TensorFlow built-in class or function."""
    classes, functions = allowed()
    if class_name == "function":
        return isinstance(config, str) and (module, config) in functions
    return isinstance(class_name, str) and (module, class_name) in classes
