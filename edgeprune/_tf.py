"""The one place TensorFlow is imported.

TF-MOT only works with Keras 2, so ``TF_USE_LEGACY_KERAS=1`` must be set before TensorFlow is
first imported; ``tf.keras`` is then ``tf_keras``. Call these functions lazily (inside functions),
never at module import time, so ``import edgeprune`` and ``edgeprune --help`` stay TF-free.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

from edgeprune import native_output


def tf() -> ModuleType:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with native_output.captured("importing TensorFlow"):
        import tensorflow
    return tensorflow


def keras() -> ModuleType:
    """``tf_keras`` (Keras 2), the Keras that TF-MOT and edgeprune's pruning work with."""
    tf()
    import tf_keras

    return tf_keras


def keras3() -> ModuleType:
    """Keras 3 (``import keras``), which imports TensorFlow itself: import that first here, so
    its start-up lines are captured like every other TensorFlow import."""
    tf()
    import keras

    return keras


def tfmot() -> ModuleType:
    tf()
    import tensorflow_model_optimization

    return tensorflow_model_optimization
