"""tf.distribute for `tfsft train`: the strategy, who writes where, how batches reach the replicas.

One `Model.fit` loop serves every `train.strategy` (docs/distributed.md):

* `default`: one device;
* `mirrored`: `MirroredStrategy` over this machine's GPUs (over its logical CPU
  devices when it has no GPU, which is how the tests run it);
* `multi_worker`: `MultiWorkerMirroredStrategy` over the workers in `TF_CONFIG`
  (`tfsft launch --workers N CONFIG` starts N of them on 127.0.0.1);
* `tpu`: `TPUStrategy` on `train.tpu_address` (`local` on a TPU VM, e.g. Colab);
* `auto`: `tpu` when an address is set, `mirrored` with more than one GPU, else `default`.

`train.batch_size` is the *global* batch. Every input pipeline builds the same
seeded batches as one device would, and replica r of R takes rows
[r·B/R, (r+1)·B/R) of each (`replica_batches`): a step sees the same B examples
whatever R is, and no example is seen twice in an epoch.

Only the chief (worker 0) writes the run directory. Any other worker writes its
checkpoints, logs and `BackupAndRestore` state under `<run_dir>/workers/<task>/`
(its own state, so that a restarted cluster resumes) and deletes them when
training ends.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import tensorflow as tf

from tfsft.config import ConfigError


def make_strategy(train_config) -> tf.distribute.Strategy:
    """The `tf.distribute.Strategy` that `train.strategy` names (see the module docstring)."""
    kind = train_config.strategy
    if kind == "auto":
        if train_config.tpu_address:
            kind = "tpu"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            kind = "mirrored"
        else:
            kind = "default"
    if kind == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=train_config.tpu_address or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if kind == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _task(strategy) -> tuple[str | None, int | None, dict]:
    """(task type, task index, cluster) of this process; (None, None, {}) outside multi-worker training."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return None, None, {}
    return resolver.task_type, resolver.task_id, resolver.cluster_spec().as_dict()


def is_chief(strategy) -> bool:
    """The `chief` task, else worker 0 of a cluster without one, else (single machine) True."""
    task_type, task_id, cluster = _task(strategy)
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0 and "chief" not in cluster)


def write_dir(run: Path, strategy) -> Path:
    """Where this process writes: `run` for the chief, `run/workers/<type>_<index>` for any other worker."""
    if is_chief(strategy):
        return run
    task_type, task_id, _ = _task(strategy)
    return run / "workers" / f"{task_type}_{task_id}"


def discard_worker_dir(path: Path, strategy, keep_backup: bool) -> None:
    """Deletes a non-chief worker's copy of the run once training has ended (kept with `train.keep_backup`)."""
    if not is_chief(strategy) and not keep_backup:
        shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):  # left while another worker's directory is in it
            path.parent.rmdir()


def needs_static_shapes(train_config, strategy) -> bool:
    """XLA (`train.jit_compile`) and TPUs compile one program per input shape: fixed bucket lengths, full batches."""
    return train_config.jit_compile or isinstance(strategy, tf.distribute.TPUStrategy)


def replica_batches(dataset: tf.data.Dataset, context: tf.distribute.InputContext,
                    global_batch: int) -> tf.data.Dataset:
    """The slices of each global batch that this input pipeline's replicas train on, one element per replica.

    A batch of B rows becomes R slices of B/R rows (R = replicas in sync);
    pipeline p of P feeds replicas p·R/P … (p+1)·R/P − 1 and yields their
    slices in that order, as `distribute_datasets_from_function` expects.

    Args:
        dataset: batches of `global_batch` rows (every pipeline builds the same ones).
        context: which pipeline this is, out of how many, for how many replicas.
        global_batch: B, a multiple of R.
    """
    replicas = context.num_replicas_in_sync
    here = replicas // context.num_input_pipelines
    first = context.input_pipeline_id * here
    rows = global_batch // replicas

    def slices(tensor):  # (B, ...) → (here, B/R, ...)
        tensor = tf.reshape(tensor, tf.concat([[replicas, rows], tf.shape(tensor)[1:]], 0))
        return tensor[first:first + here]

    def split(*batch):
        return tf.nest.map_structure(slices, batch if len(batch) > 1 else batch[0])

    return dataset.map(split).unbatch()


def distribute_batches(strategy, dataset: tf.data.Dataset, global_batch: int):
    """`dataset` (global batches) as the strategy's per-replica input; unchanged with one replica."""
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return dataset
    if global_batch % replicas:
        raise ConfigError("the config", [("train.batch_size", (f"the global batch must be a multiple of the "
                                                               f"{replicas} replicas in sync. Received: {global_batch}"))])
    return strategy.distribute_datasets_from_function(lambda context: replica_batches(dataset, context, global_batch))


def keras_multi_worker_build(model, strategy) -> None:
    """Lets `model.fit` run under MultiWorkerMirroredStrategy (Keras 3 cannot, keras-team/keras#20585).

    Two steps of Keras' fit fail with this strategy: before training (and
    validating) it builds the metrics from the first batch reduced with
    `strategy.reduce`, which cannot take a nest such as `(features, labels)`;
    and it averages each step's logged metrics over the replicas with
    `strategy.reduce(..., axis=0)`, which fails on scalars. This `model` (no
    other object) builds from the first replica's part of the batch, and its
    train and test steps log each metric as a vector of one value.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return

    def symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                first = next(batches)
                data_batch = tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], first)
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    def vectors(step):
        return lambda data: tf.nest.map_structure(lambda v: tf.reshape(v, [-1]), step(data))

    model._maybe_symbolic_build = symbolic_build
    model.train_step, model.test_step = vectors(model.train_step), vectors(model.test_step)
