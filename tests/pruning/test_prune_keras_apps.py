"""keras.applications models (weights=None) prune at 50 %, stay exact and convert to int8."""

from __future__ import annotations

import numpy as np
import pytest
from prune_helpers import int8_tflite, keras, max_diff, plant_dead, randomize_bn, run_tflite, sample

from edgeprune.pruning import layer_stats, prune_structured

APPS = {
    "MobileNetV2": (lambda **kw: keras.applications.MobileNetV2(**kw), (96, 96, 3)),
    "ResNet50": (lambda **kw: keras.applications.ResNet50(**kw), (64, 64, 3)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(APPS))
def test_keras_app_prunes_by_half_and_converts_to_int8(name):
    build, shape = APPS[name]
    model = build(weights=None, input_shape=shape)
    result = prune_structured(model, sparsity=0.5)
    pruned = result.model
    x = sample(model, n=4)
    assert pruned.output_shape == model.output_shape
    assert np.asarray(pruned(x)).shape == (4, 1000)
    assert pruned.count_params() <= 0.6 * model.count_params()
    dense_macs = sum(r["macs"] for r in layer_stats(model))
    assert sum(r["macs"] for r in result.layers) < 0.6 * dense_macs
    out = run_tflite(int8_tflite(pruned, x), x[:1])
    assert out.shape == (1, 1000) and out.dtype == np.int8


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(APPS))
def test_keras_app_dead_channels_prune_exactly(name):
    build, shape = APPS[name]
    model = build(weights=None, input_shape=shape, classifier_activation=None)
    randomize_bn(model)
    plant_dead(model, 0.5)
    result = prune_structured(model, sparsity=0.5)
    assert max_diff(model, result.model, sample(model, n=2)) <= 1e-5
