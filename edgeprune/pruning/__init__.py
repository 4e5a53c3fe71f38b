"""Pruning: structured channel pruning split like Torch-Pruning (graph → importance → policy →
surgery). Importing this package does not import TensorFlow; the functions import it lazily.
"""

from edgeprune.pruning.structured import (
    StructuredPruneResult,
    channel_groups,
    layer_stats,
    prune_structured,
    sensitivity,
)

__all__ = [
    "StructuredPruneResult",
    "channel_groups",
    "layer_stats",
    "prune_structured",
    "sensitivity",
]
