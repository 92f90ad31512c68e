"""tfsft: supervised fine-tuning of language models on TensorFlow 2 + Keras 3.

Importing tfsft registers its Keras classes (the optimizer and learning-rate
schedule, the tasks' losses, metrics and layers, the backbones) with
`keras.saving.register_keras_serializable`, so that after `import tfsft`
`keras.models.load_model("runs/<name>/model.keras")` works. It imports Keras,
KerasHub and TensorFlow (whose start-up notices it holds back, see
`tfsft.quiet`) and the task modules, but not the training loop, TFDS or the
evaluation libraries.
"""

import os

__version__ = "0.1.0"

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # tfsft runs on Keras' TensorFlow backend only

from tfsft import quiet  # noqa: E402

quiet.import_tensorflow()

from tfsft import optimization, tasks  # noqa: E402,F401  (their modules register the Keras classes)
