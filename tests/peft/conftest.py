"""The parameter-efficient fine-tuning tests start (and leave) the global dtype policy at float32."""

import keras
import pytest


@pytest.fixture(autouse=True)
def _float32_policy():
    """train() sets the global policy from train.precision; each test starts (and leaves) it at float32."""
    keras.mixed_precision.set_dtype_policy("float32")
    yield
    keras.mixed_precision.set_dtype_policy("float32")
