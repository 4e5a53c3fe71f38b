"""The fine-tune loss takes probabilities for softmax models, also through TF-MOT's wrappers
(QAT once trained with from_logits=True on softmax outputs: TF warned, the loss was wrong)."""

from tiny_models import tiny_classifier

from edgeprune import _tf
from edgeprune.training import outputs_probabilities

keras = _tf.keras()


def _logits_model():
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(inputs))


def test_softmax_is_seen_through_qat_and_pruning_wrappers():
    tfmot = _tf.tfmot()
    assert outputs_probabilities(tiny_classifier())
    assert outputs_probabilities(tfmot.quantization.keras.quantize_model(tiny_classifier()))
    assert outputs_probabilities(tfmot.sparsity.keras.prune_low_magnitude(tiny_classifier()))
    assert not outputs_probabilities(_logits_model())
    assert not outputs_probabilities(tfmot.quantization.keras.quantize_model(_logits_model()))
