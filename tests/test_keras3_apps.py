"""Stock models are not hostile (issue 19, item 6): every keras.applications constructor, in
tf_keras and in Keras 3 (weights=None, the smallest input it allows), saved as a user would, loads
without --trust-model and passes `analyze`. One in-process loop over 111 models.

It takes about half an hour on 2 shared cores, nearly all of it in the Keras loaders themselves
(tf_keras' load_model of DenseNet121 alone: 14 s), so it runs only when
EDGEPRUNE_ALL_APPLICATIONS=1 is set; the config-level safety rules it exercises are covered
quickly in test_keras3.py.
"""

from __future__ import annotations

import gc
import os
import time

import pytest

from edgeprune import _tf
from edgeprune.drivers.analyze import analyze_file

SIZES = (32, 71, 75)  # most accept 32×32; Xception needs 71, the Inceptions 75


def _constructors(apps) -> list[str]:
    return sorted(n for n in dir(apps) if n[:1].isupper() and callable(getattr(apps, n)))


def _smallest(build):
    for size in SIZES:
        try:
            return build(weights=None, input_shape=(size, size, 3), classes=3)
        except ValueError:
            continue
    raise AssertionError(f"{build.__name__} accepts none of {SIZES}")


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("EDGEPRUNE_ALL_APPLICATIONS"),
                    reason="~30 min: set EDGEPRUNE_ALL_APPLICATIONS=1 to run it")
def test_every_keras_application_loads_and_analyzes_untrusted(tmp_path):
    import keras

    flavours = {"tf_keras": _tf.keras(), "keras3": keras}
    failures, timings, count = [], {}, 0
    for flavour, k in flavours.items():
        for name in _constructors(k.applications):
            start = time.perf_counter()
            model = _smallest(getattr(k.applications, name))
            params = model.count_params()
            path = tmp_path / f"{flavour}-{name}.keras"
            model.save(path)
            del model
            try:
                result = analyze_file(path)  # loads without --trust-model
                if result.params != params or not result.groups:
                    failures.append(f"{flavour} {name}: {result.params} params, "
                                    f"{len(result.groups)} groups")
            except Exception as exc:  # collect every failure, not just the first
                failures.append(f"{flavour} {name}: {type(exc).__name__}: {exc}")
            path.unlink()
            k.backend.clear_session()
            gc.collect()
            timings[f"{flavour} {name}"] = time.perf_counter() - start
            count += 1
    slowest = sorted(timings.items(), key=lambda kv: -kv[1])[:5]
    print(f"{count} models in {sum(timings.values()):.0f} s; slowest: {slowest}")
    assert count > 100 and not failures, "\n".join(failures)
