"""Input sharding, step planning and the small helpers of distributed training (in-process, no cluster)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from tfsft.config import ConfigError, TrainConfig
from tfsft.distribute import distribute_batches, is_chief, replica_batches, write_dir
from tfsft.launch import tf_configs, train_command
from tfsft.training import plan_steps


def global_batches(examples=40, batch=8, seed=1):
    """Shuffled, repeated batches of example ids (features dict, label), like the training pipeline's."""
    ids = tf.data.Dataset.range(examples).shuffle(examples, seed=seed).repeat()
    return ids.map(lambda i: ({"token_ids": tf.fill([3], i)}, i)).batch(batch, drop_remainder=True)


def test_two_workers_split_every_global_batch_and_see_each_example_once_per_epoch():
    batches = [y.numpy() for _, y in global_batches().take(5)]  # 5 x 8 = one epoch of 40
    shards = [list(replica_batches(global_batches(), tf.distribute.InputContext(2, worker, 2), 8).take(5))
              for worker in (0, 1)]
    for step, batch in enumerate(batches):
        first, second = (shard[step] for shard in shards)
        assert first[1].numpy().tolist() == batch[:4].tolist() and second[1].numpy().tolist() == batch[4:].tolist()
        assert first[0]["token_ids"].shape == (4, 3)
        np.testing.assert_array_equal(first[0]["token_ids"].numpy()[:, 0], batch[:4])
    seen = [int(i) for shard in shards for _, y in shard for i in y.numpy()]
    assert sorted(seen) == list(range(40)), "every example once in the epoch"


def test_one_pipeline_feeding_two_replicas_yields_their_slices_in_replica_order():
    batch = next(iter(global_batches()))[1].numpy()
    slices = [y.numpy().tolist() for _, y in
              replica_batches(global_batches(), tf.distribute.InputContext(1, 0, 2), 8).take(2)]
    assert slices == [batch[:4].tolist(), batch[4:].tolist()]


def test_the_global_batch_must_split_evenly_over_the_replicas():
    two_replicas = SimpleNamespace(num_replicas_in_sync=2)
    with pytest.raises(ConfigError, match=r"train.batch_size: the global batch must be a multiple of the 2 "
                                          r"replicas in sync. Received: 7"):
        distribute_batches(two_replicas, global_batches(batch=7), 7)
    one = tf.distribute.get_strategy()
    dataset = global_batches()
    assert distribute_batches(one, dataset, 8) is dataset


def test_a_single_process_is_the_chief_and_writes_the_run_directory(tmp_path):
    strategy = tf.distribute.get_strategy()
    assert is_chief(strategy) and write_dir(tmp_path, strategy) == tmp_path


def test_intervals_are_whole_calls_of_steps_per_execution():
    plan = plan_steps(100, TrainConfig(batch_size=10, max_steps=20, eval_every_steps=7, steps_per_execution=4))
    assert (plan.interval, plan.intervals) == (8, 3), "ceil(20 / 3) = 7 steps, rounded up to 2 calls of 4"
    plan = plan_steps(100, TrainConfig(batch_size=10, max_steps=20, eval_every_steps=5))
    assert (plan.interval, plan.intervals) == (5, 4)


def test_tpu_settings_are_checked_with_the_config():
    errors = dict(TrainConfig(steps_per_execution=0, jit_compile=True, lazy_embedding_updates=True).validate())
    assert errors["steps_per_execution"] == "must be > 0. Received: 0"
    assert errors["lazy_embedding_updates"].startswith("not with jit_compile or strategy tpu")


def test_launch_gives_each_local_worker_the_cluster_and_its_index():
    configs = [json.loads(c) for c in tf_configs(3)]
    workers = configs[0]["cluster"]["worker"]
    assert len(set(workers)) == 3 and all(w.startswith("127.0.0.1:") for w in workers)
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(3)]
    assert all(c["cluster"] == configs[0]["cluster"] for c in configs)
    command = train_command("c.yaml", ["train.epochs=2"], export=True)
    assert command[-6:] == ["c.yaml", "--set", "train.epochs=2", "--set", "train.strategy=multi_worker", "--export"]


def test_the_keras_hook_that_sums_gradients_before_clipping_still_exists():
    """FusedAdamW sums gradients over replicas in `_clip_gradients` and turns Keras' later sum into a no-op."""
    from keras.src.backend.tensorflow.optimizer import TFOptimizer

    assert "_all_reduce_sum_gradients" in vars(TFOptimizer), (
        "Keras renamed TFOptimizer._all_reduce_sum_gradients; update tfsft.optimization.FusedAdamW")


def test_every_iterator_of_the_training_batches_starts_the_same_order(tiny_vocab):
    """Keras opens an iterator of its own before training a distributed model: the next must start afresh."""
    import keras_hub

    from tfsft.data.pipeline import TextEncoder, encode_examples, training_dataset

    encoder = TextEncoder(keras_hub.models.BertTokenizer(vocabulary=str(tiny_vocab)), sequence_length=12)
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(["good", "bad", "film", "very", "long"], size=rng.integers(1, 9))) for _ in range(48)]
    split = encode_examples(encoder, texts, None, np.arange(48, dtype=np.int32))
    dataset = training_dataset(split, pad_id=0, batch_size=8, bucket_boundaries=[4, 8], sequence_length=12, seed=5,
                               shuffle_buffer=48)
    first = [y.numpy().tolist() for _, y in dataset.take(12)]
    again = [y.numpy().tolist() for _, y in dataset.take(12)]
    assert first == again and len({i for batch in first for i in batch}) > 8
