"""Adaptive BN after a cut: moving statistics become those of the given inputs."""

import numpy as np
from tiny_models import blobs, tiny_classifier

from edgeprune import _tf
from edgeprune.pruning.batchnorm import BN_SAMPLES, bn_sample, recalibrate_bn

keras = _tf.keras()


def test_moving_statistics_become_the_batch_statistics_and_weights_stay():
    model = tiny_classifier()
    x, _ = blobs(64)
    bn = model.get_layer("bn")
    gamma, beta = (w.copy() for w in bn.get_weights()[:2])
    assert recalibrate_bn(model, x) == 1
    conv_out = keras.Model(model.input, model.get_layer("conv").output)(x).numpy()
    mean, var = bn.get_weights()[2:]
    np.testing.assert_allclose(mean, conv_out.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(var, conv_out.var(axis=(0, 1, 2)), rtol=1e-3, atol=1e-5)
    np.testing.assert_array_equal(bn.get_weights()[0], gamma)
    np.testing.assert_array_equal(bn.get_weights()[1], beta)
    assert bn.momentum == 0.99  # restored


def test_bn_sample_is_seeded_and_bounded():
    x = np.arange(2000, dtype=np.float32)[:, None]
    a, b = bn_sample(x, 3), bn_sample(x, 3)
    assert len(a) == BN_SAMPLES and np.array_equal(a, b)
    assert not np.array_equal(a, bn_sample(x, 4))
    assert len(bn_sample(x[:10], 0)) == 10
