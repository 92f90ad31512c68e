"""Small private helpers shared by the layers in `tfsft.layers`."""

import keras


def clone_initializer(initializer):
    """Returns a fresh copy of a Keras initializer.

    Sharing one initializer *instance* between sublayers is discouraged by
    Keras (a seeded instance would produce identical weights), so every
    sublayer receives its own copy, as KerasHub does.

    Args:
        initializer: str, dict or `keras.initializers.Initializer`.

    Returns:
        A new `keras.initializers.Initializer`.
    """
    initializer = keras.initializers.get(initializer)
    return initializer.__class__.from_config(initializer.get_config())


def check_rate(name, value):
    """Raises if a dropout rate is outside [0, 1)."""
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(
            f"`{name}` must be a float in [0, 1). Received: {name}={value}"
        )
