"""edgeprune: prune, quantize and convert Keras models for edge targets, and prove they fit.

Importing this package does not import TensorFlow (see ``edgeprune._tf``).
"""

__version__ = "0.2.0"
