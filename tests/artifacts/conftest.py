"""Int8 models for the device-artifact tests (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest
from artifact_models import conv_dw_model, convert


@pytest.fixture(scope="session")
def m4_tflite(tmp_path_factory) -> Path:
    """int8 inside, int8 input/output: what a cortex-m4 build emits."""
    path = tmp_path_factory.mktemp("m4") / "model.tflite"
    path.write_bytes(convert(conv_dw_model(), "cortex-m4"))
    return path
