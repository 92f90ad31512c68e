"""Parameter-efficient fine-tuning: what of a model trains.

* `lora.py`: LoRA adapters on the backbone's projections, by layer role.
* `freeze.py`: frozen embeddings, first layers or the whole backbone.
* `adapter.py`: the adapter file (LoRA A, B and the task head) and loading it onto a base model.
* `checkpoints.py`: the callback that keeps LoRA's A and B through resumes and best checkpoints.
* `setup.py`: `TrainableWeights`, what `tfsft.training.train` calls.

See docs/efficient_finetuning.md.
"""
