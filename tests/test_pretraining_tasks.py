"""The pretraining catalogue: default-corpus tasks, UL2 mixture, C4 (mocked), user text files."""

import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import t5pre  # noqa: E402
from t5pre.data.feature_converter import EncDecFeatureConverter  # noqa: E402
from t5pre.errors import ConfigError, DataError  # noqa: E402
from t5pre.tasks import pretraining  # noqa: E402

LENGTHS = {"inputs": 64, "targets": 16}


def take(dataset, n):
    return [{k: v.numpy() for k, v in ex.items()} for ex in dataset.take(n)]


def reconstruct(inputs, targets, vocab):
    """Undo span corruption: put each target span back in place of its sentinel (EOS dropped)."""
    first_sentinel = vocab.vocab_size - vocab.extra_ids
    spans, current = {}, None
    for tok in targets[:-1]:
        if tok >= first_sentinel:
            current = tok
            spans[current] = []
        else:
            spans[current].append(tok)
    out = []
    for tok in inputs[:-1]:
        out.extend(spans[tok] if tok >= first_sentinel else [tok])
    return out


def test_catalogue_lists_the_tasks():
    names = t5pre.TaskRegistry.names()
    for name in ["default_span_corruption", "default_prefix_lm", "default_iid_denoising",
                 "c4_span_corruption", "default_ul2_r", "default_ul2_s"]:
        assert name in names
    assert "default_ul2" in t5pre.MixtureRegistry.names()


def test_default_span_corruption_reconstructs_the_corpus():
    from t5pre.data.default_corpus import default_corpus_texts

    task = t5pre.get_task("default_span_corruption")
    vocab = task.vocabulary
    assert vocab.vocab_size == task.output_features["inputs"].vocabulary.vocab_size
    examples = take(task.get_dataset(LENGTHS, split="validation", shuffle=False, num_epochs=1), 12)
    assert len(examples) == 12
    stream = []
    for ex in examples:
        inputs, targets = ex["inputs"].tolist(), ex["targets"].tolist()
        assert len(inputs) == 64 and len(targets) <= 16  # full chunks fill the inputs exactly
        assert inputs[-1] == vocab.eos_id and targets[-1] == vocab.eos_id
        assert targets[0] == vocab.sentinel(0)
        stream.extend(reconstruct(inputs, targets, vocab))
    # The chunks are the validation documents, tokenized and concatenated, in order. (Tokenized
    # with the in-graph tokenizer: Python SentencePiece may break score ties differently.)
    expected = []
    for text in default_corpus_texts("validation"):
        expected.extend(vocab.encode_tf(text).numpy().tolist())
        if len(expected) >= len(stream):
            break
    assert stream == expected[: len(stream)]


def test_default_tasks_are_deterministic_and_seeded():
    task = t5pre.get_task("default_span_corruption")

    def first(seed):
        ds = task.get_dataset(LENGTHS, split="validation", shuffle=False, seed=seed, num_epochs=1)
        return [ex["inputs"].tolist() for ex in take(ds, 4)]

    assert first(0) == first(0)
    assert first(0) != first(1)


@pytest.mark.parametrize("name", ["default_prefix_lm", "default_iid_denoising"])
def test_other_default_objectives(name):
    task = t5pre.get_task(name)
    eos = task.vocabulary.eos_id
    for ex in take(task.get_dataset(LENGTHS, split="validation", shuffle=False, num_epochs=1), 8):
        assert 2 <= len(ex["inputs"]) <= 64 and 2 <= len(ex["targets"]) <= 16
        assert ex["inputs"][-1] == eos and ex["targets"][-1] == eos
        if name == "default_iid_denoising":
            assert len(ex["inputs"]) == len(ex["targets"]) == 16


def test_ul2_mixture_and_sentinel_budget():
    mixture = t5pre.get_mixture("default_ul2")
    vocab = mixture.vocabulary
    lengths = {"inputs": 64, "targets": 64}
    prefixes = {name: vocab.encode(text) for name, text in
                [("R", "[NLU]"), ("X", "[NLG]"), ("S", "[S2S]")]}
    seen = set()
    for ex in take(mixture.get_dataset(lengths, split="validation", seed=3, shuffle=False), 40):
        assert len(ex["inputs"]) <= 64 and len(ex["targets"]) <= 64
        kind = [k for k, p in prefixes.items() if ex["inputs"][: len(p)].tolist() == p]
        assert len(kind) == 1
        seen.add(kind[0])
    assert seen == {"R", "X", "S"}
    # The dense X-denoiser at 512 tokens needs ~128 sentinels; the vocabulary has 100.
    dense = t5pre.get_task("default_ul2_x_dense")
    with pytest.raises(ConfigError, match="extra_ids"):
        dense.get_dataset({"inputs": 512, "targets": 512}, split="validation")


def test_feature_converter_on_task_output():
    task = t5pre.get_task("default_span_corruption")
    ds = task.get_dataset({"inputs": 32, "targets": 12}, split="validation", shuffle=False,
                          num_epochs=1)
    for ex in take(EncDecFeatureConverter(pack=True)(ds, {"inputs": 32, "targets": 12}), 4):
        assert ex["encoder_token_ids"].shape == (32,) and ex["decoder_target_ids"].shape == (12,)
        assert ex["encoder_segment_ids"].max() == 1  # full chunks leave no room to pack


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_register_text_pretraining_task_text_and_jsonl(tmp_path):
    words = [f"word{i} alpha beta gamma delta" for i in range(200)]
    text_file = _write(tmp_path / "train.txt", words[:150])
    valid_file = _write(tmp_path / "valid.txt", words[150:])
    task = pretraining.register_text_pretraining_task(
        "test_user_text", {"train": [text_file], "validation": valid_file})
    assert t5pre.get_task("test_user_text") is task
    vocab = task.vocabulary
    examples = take(task.get_dataset(LENGTHS, split="validation", shuffle=False, num_epochs=1), 100)
    stream = [t for ex in examples for t in reconstruct(ex["inputs"].tolist(),
                                                         ex["targets"].tolist(), vocab)]
    assert stream == [t for line in words[150:] for t in vocab.encode_tf(line).numpy().tolist()]

    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"body": w, "id": i}) + "\n" for i, w in enumerate(words)))
    task = pretraining.register_text_pretraining_task(
        "test_user_jsonl", {"train": str(jsonl)}, objective="prefix_lm", text_key="body")
    ex = take(task.get_dataset(LENGTHS, shuffle=False, num_epochs=1), 1)[0]
    assert (ex["inputs"][:-1].tolist() + ex["targets"][:-1].tolist()
            == [t for w in words for t in vocab.encode(w)][: 63])

    mixture = pretraining.register_text_pretraining_task(
        "test_user_ul2", {"train": text_file}, objective="ul2",
        objective_options={"paradigm_prefixes": False})
    assert set(mixture.rates()) == {f"test_user_ul2_{n}" for n in
                                    ("r", "x_long_spans", "x_dense", "s")}


def test_register_text_pretraining_task_errors(tmp_path):
    good = _write(tmp_path / "a.txt", ["some text here"])
    with pytest.raises(ConfigError, match="mix"):
        pretraining.register_text_pretraining_task("test_bad", [good, str(tmp_path / "b.jsonl")])
    with pytest.raises(ConfigError, match="unknown objective"):
        pretraining.register_text_pretraining_task("test_bad", [good], objective="mlm")
    with pytest.raises(ConfigError, match="does not exist"):
        pretraining.register_text_pretraining_task("test_bad", [good],
                                                   vocabulary=str(tmp_path / "nope.model"))
    task = pretraining.register_text_pretraining_task("test_bad", [str(tmp_path / "none*.txt")])
    with pytest.raises(DataError, match="no file matches"):
        task.get_dataset(LENGTHS)
    jsonl = _write(tmp_path / "c.jsonl", [json.dumps({"content": "x y z"})])
    task = pretraining.register_text_pretraining_task("test_bad", jsonl, text_key="text")
    from t5pre.data.sources import data_errors

    with pytest.raises(DataError, match="c.jsonl"):
        with data_errors():
            take(task.get_dataset(LENGTHS, shuffle=False, num_epochs=1), 1)


def test_user_task_over_real_prose(shared_data):
    files = sorted((shared_data / "pretrain" / "jane_austen").glob("*.txt"))[:1]
    task = pretraining.register_text_pretraining_task("test_austen", [str(f) for f in files])
    examples = take(task.get_dataset({"inputs": 512, "targets": 114}, seed=0, shuffle=False), 3)
    for ex in examples:
        assert len(ex["inputs"]) == 512 and len(ex["targets"]) <= 114


def test_c4_span_corruption_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    task = t5pre.get_task("c4_span_corruption")
    with tfds.testing.mock_data(num_examples=30):
        examples = take(task.get_dataset(LENGTHS, split="validation", shuffle=False,
                                         num_epochs=1), 3)
    assert examples
    for ex in examples:
        assert len(ex["inputs"]) <= 64 and ex["inputs"][-1] == 1
        assert ex["targets"][0] == task.vocabulary.sentinel(0)


def test_pipeline_resumes_mid_stream_from_an_iterator_checkpoint(tmp_path):
    # Chunking (scan), span corruption (blocks) and packing keep their state in the iterator, so
    # a training run restored from a checkpoint continues with exactly the next examples.
    task = t5pre.get_task("default_span_corruption")

    def make():
        ds = task.get_dataset(LENGTHS, split="validation", seed=0, shuffle_buffer_size=50)
        return EncDecFeatureConverter(pack=True)(ds, LENGTHS).batch(4)

    iterator = iter(make())
    for _ in range(3):
        next(iterator)
    path = tf.train.Checkpoint(iterator=iterator).save(str(tmp_path / "ckpt"))
    expected = [next(iterator)["encoder_token_ids"].numpy() for _ in range(3)]
    restored = iter(make())
    tf.train.Checkpoint(iterator=restored).restore(path)
    got = [next(restored)["encoder_token_ids"].numpy() for _ in range(3)]
    assert all((a == b).all() for a, b in zip(expected, got))


def test_every_pass_draws_fresh_noise_and_is_reproducible():
    # seqio/RoBERTa-style dynamic masking: pass 2 over the same documents is corrupted anew
    # (and cut at new chunk boundaries), yet the whole stream is fixed by the seed.
    task = t5pre.get_task("default_span_corruption")
    one_pass = sum(1 for _ in task.get_dataset(LENGTHS, split="validation", shuffle=False,
                                               num_epochs=1))

    def two_passes(seed):
        ds = task.get_dataset(LENGTHS, split="validation", shuffle=False, seed=seed,
                              num_epochs=2)
        return [(ex["inputs"].tolist(), ex["targets"].tolist()) for ex in take(ds, 2 * one_pass)]

    stream = two_passes(0)
    first, second = stream[:one_pass], stream[one_pass:]
    assert len(second) >= one_pass - 1
    repeated = sum(a == b for a, b in zip(first, second))
    assert repeated == 0, f"{repeated} of {one_pass} examples of pass 2 repeat pass 1"
    assert two_passes(0) == stream
    assert two_passes(1) != stream
