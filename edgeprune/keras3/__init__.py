"""Keras 3 models: translated to tf_keras on the way in (TF-MOT and the pruning work on
tf_keras), and the pruned model written back in the input's own Keras flavour.

Nothing here imports TensorFlow or Keras at import time.
"""
