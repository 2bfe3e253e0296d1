"""Small, fast stand-ins for testing the training machinery (and a subprocess driver).

``SyntheticTask`` follows the task contract (``get_dataset`` with shards, seeds, epochs) over
generated token sequences whose targets are a learnable function of the inputs (the reversed
first tokens), so a tiny model's loss visibly falls within a few dozen steps. Every example is a
pure function of (split, index): shards, shuffles and resumes can be checked exactly.

``python -m t5pre.training.testing --model-dir DIR [--set k=v ...]`` trains a tiny T5 on it and
writes the final weights and loss history (tests run it as a subprocess: SIGKILL/resume and
two-process MultiWorkerMirroredStrategy).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

TINY_MODEL = {"d_model": 32, "num_heads": 2, "d_kv": 16, "d_ff": 64, "num_encoder_layers": 1,
              "num_decoder_layers": 1, "vocab_size": 128}

TINY_RUN = {
    "model": {"name": "tiny", "overrides": dict(TINY_MODEL)},
    "data": {"task": "synthetic", "sequence_length": {"inputs": 16, "targets": 8},
             "pack": False},
    "training": {"batch_size": 8, "steps": 20, "seed": 1, "log_every": 5,
                 "checkpoint_every": 10, "eval_every": 0, "eval_steps": 2,
                 "text_samples": 0, "deterministic": True},
    "optimizer": {"name": "adamw", "learning_rate": 3e-3, "warmup_steps": 2},
    "strategy": {"name": "one_device"},
}


class SimpleVocabulary:
    """Ids as text ("5 17 3"), T5 layout: pad 0, eos 1. Enough for text summaries."""

    pad_id, eos_id, unk_id = 0, 1, 2

    def __init__(self, vocab_size: int = 128):
        self.vocab_size = vocab_size

    def decode(self, ids) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i != self.pad_id:
                out.append(str(i))
        return " ".join(out)


class _Feature:
    def __init__(self, vocabulary):
        self.vocabulary = vocabulary
        self.add_eos = True


class SyntheticTask:
    """A task-contract stand-in: ``inputs`` random ids, ``targets`` = the first inputs reversed."""

    splits = ("train", "validation")

    def __init__(self, vocab_size: int = 128, num_examples: int = 4096, name="synthetic",
                 num_symbols: int = 16):
        self.name = name
        self.vocab_size = vocab_size
        self.num_symbols = num_symbols  # ids used: 3 .. 3+num_symbols (a quick first drop)
        self.num_examples = num_examples
        self.output_features = {"inputs": _Feature(SimpleVocabulary(vocab_size)),
                                "targets": _Feature(SimpleVocabulary(vocab_size))}

    def get_dataset(self, sequence_length=None, split="train", shuffle=True, seed=0,
                    shard_info=None, num_epochs=None, shuffle_buffer_size=None):
        import tensorflow as tf

        n_in = (sequence_length or {}).get("inputs", 16)
        n_tg = (sequence_length or {}).get("targets", 8)
        offset = 0 if split == "train" else 1_000_000
        top = min(3 + self.num_symbols, self.vocab_size)

        def example(index):
            key = tf.stack([tf.cast(index + offset, tf.int64), tf.constant(7, tf.int64)])
            length = tf.random.stateless_uniform([], key, 4, n_in, dtype=tf.int32)
            ids = tf.random.stateless_uniform([length - 1], key + 1, 3, top, dtype=tf.int32)
            k = tf.minimum(length - 1, n_tg - 1)
            inputs = tf.concat([ids, [1]], 0)
            targets = tf.concat([tf.reverse(ids[:k], [0]), [1]], 0)
            return {"inputs": inputs, "targets": targets,
                    "inputs_pretokenized": tf.strings.as_string(index),
                    "targets_pretokenized": tf.strings.as_string(index)}

        ds = tf.data.Dataset.range(self.num_examples)
        if shard_info:
            ds = ds.shard(shard_info[1], shard_info[0])
        if shuffle:
            ds = ds.shuffle(1024, seed=seed, reshuffle_each_iteration=True)
        ds = ds.repeat(num_epochs)
        return ds.map(example, num_parallel_calls=tf.data.AUTOTUNE)


def tiny_config(*overrides, defaults=None, model_dir=None):
    """The tiny run config (as a RunConfig) with ``"a.b=v"`` overrides."""
    from t5pre.training.config import load_config
    return load_config(None, overrides, defaults=defaults or TINY_RUN, model_dir=model_dir)


def weights_of(model) -> list:
    return [v.numpy() if hasattr(v, "numpy") else v for v in
            (w.value if hasattr(w, "value") else w for w in model.weights)]


def _main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--dump", help="write final weights (npz) and history (json) to PATH.*")
    p.add_argument("--logical-cpus", type=int, default=0)
    p.add_argument("--die-in-save-at", type=int, default=0,
                   help="SIGKILL this process inside the checkpoint save of that step, after "
                        "the checkpoint files are written and before the state file")
    p.add_argument("--die-after-save-starts-at", type=int, default=0,
                   help="SIGKILL this process as soon as the save of that step returns (an "
                        "asynchronous save is then still being written, or not yet listed)")
    p.add_argument("--also-keras-all-reduce", metavar="DUMP",
                   help="then train again (into DUMP.dir) with Keras' own optimizer all-reduce "
                        "left on, and dump to DUMP (tests show it double-counts)")
    p.add_argument("--slow", type=float, default=0.0, help="sleep seconds per logged window")
    args = p.parse_args(argv)

    import numpy as np

    from t5pre.training.distribution_jax import keras_backend_name

    jax_backend = keras_backend_name(imported=False) == "jax"
    if args.logical_cpus:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus)

    cfg = tiny_config(*args.set, model_dir=args.model_dir)
    strategy = None  # JAX: the Trainer builds its keras.distribution from cfg.strategy
    if not jax_backend:
        from t5pre.training.strategy import strategy_for

        strategy = strategy_for(cfg.strategy)  # first: MultiWorkerMirroredStrategy's rule

    if args.die_in_save_at:
        from t5pre.models import checkpoints
        original = checkpoints._write_state

        def dying_update(directory, latest, *a, **k):
            if str(latest).rstrip("/").endswith(f"ckpt-{args.die_in_save_at}"):
                sys.stdout.flush()
                os.kill(os.getpid(), 9)
            return original(directory, latest, *a, **k)

        checkpoints._write_state = dying_update

    if args.die_after_save_starts_at:
        from t5pre.models import checkpoints
        original_save = checkpoints.CheckpointKeeper.save

        def dying_save(self, step, *a, **k):
            path = original_save(self, step, *a, **k)
            if step == args.die_after_save_starts_at:
                sys.stdout.flush()
                os.kill(os.getpid(), 9)
            return path

        checkpoints.CheckpointKeeper.save = dying_save

    log = print
    if args.slow:
        import time

        def log(msg):
            print(msg, flush=True)
            time.sleep(args.slow)

    from t5pre.training import trainer as trainer_module

    def run(model_dir, dump):
        trainer = trainer_module.Trainer(cfg, model_dir, strategy=strategy,
                                         task=SyntheticTask(), log=log)
        result = trainer.train()
        if dump:
            np.savez(dump + ".npz", *weights_of(trainer.model))
            with open(dump + ".json", "w") as f:
                json.dump({"step": result.step, "history": result.history,
                           "skipped": result.skipped_steps}, f)

    run(args.model_dir, args.dump)
    if args.also_keras_all_reduce:
        from t5pre.training import step_tf

        step_tf._no_second_all_reduce = lambda optimizer: None
        run(args.also_keras_all_reduce + ".dir", args.also_keras_all_reduce)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
