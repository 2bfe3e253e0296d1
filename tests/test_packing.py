"""Packing on the one training data path (``data.pack: true``): the numpy packer packs exactly as
the TF feature converter does, a step packs the examples of its own fixed index window (so a
resume at any position gives the batches an uninterrupted run gives), and a packed run trains."""

import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from t5pre.data.feature_converter import EncDecFeatureConverter  # noqa: E402
from t5pre.data.random_access import (packed_features, packing_factor,  # noqa: E402
                                      random_access_pipeline)
from t5pre.tasks import pretraining, summarization  # noqa: E402
from t5pre.training.data import make_dataset_fn  # noqa: E402

LENGTHS = {"inputs": 48, "targets": 16}


def _random_examples(rng, count, max_in=30, max_tg=12):
    return ([rng.integers(3, 500, rng.integers(1, max_in)).astype(np.int32) for _ in range(count)],
            [rng.integers(3, 500, rng.integers(1, max_tg)).astype(np.int32) for _ in range(count)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numpy_packing_equals_the_feature_converter(seed):
    rng = np.random.default_rng(seed)
    inputs, targets = _random_examples(rng, 100, max_in=60)  # some inputs longer than 48: trimmed
    ours, placed = packed_features(inputs, targets, LENGTHS)
    assert placed == 100
    ds = tf.data.Dataset.from_generator(
        lambda: ({"inputs": a, "targets": b} for a, b in zip(inputs, targets)),
        output_signature={"inputs": tf.TensorSpec([None], tf.int32),
                          "targets": tf.TensorSpec([None], tf.int32)})
    theirs = list(EncDecFeatureConverter(pack=True)(ds, LENGTHS).as_numpy_iterator())
    assert len(theirs) == len(ours["encoder_token_ids"]) < 100  # it packs
    for key in ours:
        np.testing.assert_array_equal(ours[key], np.stack([row[key] for row in theirs]), key)


def test_fixed_rows_keep_a_prefix_and_leave_the_rest_out():
    rng = np.random.default_rng(5)
    inputs, targets = _random_examples(rng, 60)
    full, _ = packed_features(inputs, targets, LENGTHS)
    three, placed = packed_features(inputs, targets, LENGTHS, rows=3)
    assert 0 < placed < 60
    for key in full:
        np.testing.assert_array_equal(three[key], full[key][:3], key)
    # the placed examples are exactly the segments of the three rows
    assert sum(int(row.max()) for row in three["encoder_segment_ids"]) == placed
    many, placed_all = packed_features(inputs, targets, LENGTHS, rows=200)
    assert placed_all == 60 and not many["encoder_padding_mask"][len(full["encoder_token_ids"]):].any()


@pytest.fixture()
def short_examples_task(tmp_path):
    words = "a short document about tokens and the spans a model learns to fill".split()
    rows = [{"document": " ".join(words[(i + j) % len(words)] for j in range(3 + i % 7)),
             "summary": " ".join(words[(i * 3 + j) % len(words)] for j in range(1 + i % 3))}
            for i in range(300)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return summarization.register_jsonl_summarization_task(
        f"test_pack_{tmp_path.name}", {"train": str(path), "validation": str(path)}, replace=True)


def _batches(task, start, count, batch=8, seed=1):
    fn = make_dataset_fn(task, LENGTHS, split="train", global_batch_size=batch, pack=True,
                         shuffle=True, seed=seed, start_examples=start)
    it = iter(fn())
    return fn, [{k: v.numpy() for k, v in next(it).items()} for _ in range(count)]


def test_a_resumed_packed_stream_equals_the_uninterrupted_one(short_examples_task):
    fn, batches = _batches(short_examples_task, 0, 5)
    factor = fn.examples_per_row
    assert factor >= 2, fn.packing_note  # short examples: several per row
    assert "per row" in fn.packing_note
    # rows hold several segments, and nothing is lost inside a row
    segments = batches[0]["encoder_segment_ids"].max(axis=1)
    assert segments.max() >= 2
    # a step consumes batch x factor examples: resuming at step 3's position gives step 3 on
    _, resumed = _batches(short_examples_task, 3 * 8 * factor, 2)
    for want, got in zip(batches[3:], resumed):
        for key in want:
            np.testing.assert_array_equal(want[key], got[key], key)


def test_packing_factor_is_one_for_chunked_pretraining(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join("the model reads tokens and learns to fill spans of text " * 3
                                for _ in range(200)) + "\n")
    task = pretraining.register_text_pretraining_task(
        f"test_pack_pre_{tmp_path.name}", {"train": str(corpus)}, replace=True)
    pipeline = random_access_pipeline(task, {"inputs": 64, "targets": 14}, split="train", seed=0,
                                      shuffle=True, log=lambda m: None)
    factor, note = packing_factor(pipeline)
    assert factor == 1, note


@pytest.mark.slow
def test_packed_training_resumes_exactly_and_counts_packed_examples(short_examples_task, tmp_path,
                                                                    capsys):
    from t5pre.models.checkpoints import read_model_arrays
    from t5pre.training.testing import tiny_config
    from t5pre.training.trainer import Trainer

    def train(model_dir, steps):
        config = tiny_config("data.pack=true", "model.overrides.vocab_size=null",
                             "data.sequence_length.inputs=48",
                             "data.sequence_length.targets=16", f"training.steps={steps}",
                             "training.checkpoint_every=2", model_dir=str(model_dir))
        trainer = Trainer(config, str(model_dir), task=short_examples_task)
        trainer.train()
        return trainer

    straight = train(tmp_path / "straight", 4)
    log = capsys.readouterr().out
    assert "data.pack:" in log and "per row" in log, log
    factor = int(log.split("data.pack: ")[1].split(" ")[0])
    assert factor >= 2
    assert straight.keeper.restored_position()[0] == 4 * 8 * factor
    train(tmp_path / "resumed", 2)
    train(tmp_path / "resumed", 4)
    a = read_model_arrays(str(tmp_path / "straight" / "checkpoints" / "ckpt-4"))
    b = read_model_arrays(str(tmp_path / "resumed" / "checkpoints" / "ckpt-4"))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], key)
