"""tfsft: supervised fine-tuning of language models on TensorFlow 2 + Keras 3."""

__version__ = "0.1.0"
