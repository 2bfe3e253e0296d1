"""The random-access pipeline: numpy span corruption (T5's distribution), fresh noise per pass,
O(1) exact resume across worker counts, the token cache's round trip and its errors."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import t5pre  # noqa: E402
from t5pre.data import denoising, denoising_numpy  # noqa: E402
from t5pre.data.cache import build_cache, in_memory_store, open_cache  # noqa: E402
from t5pre.data.index_sampler import IndexSampler, hash_u64, pipeline_indices  # noqa: E402
from t5pre.data.random_access import RandomAccessTask, model_features  # noqa: E402
from t5pre.errors import ConfigError, DataError  # noqa: E402
from t5pre.tasks import pretraining  # noqa: E402

LENGTHS = {"inputs": 64, "targets": 16}


# ------------------------------------------------------------- numpy span corruption ---------

def _spans(mask):
    return int((mask & ~np.concatenate([[False], mask[:-1]])).sum())


@pytest.mark.parametrize("density,mean", [(0.15, 3.0), (0.5, 3.0), (0.15, 32.0), (0.9, 1.0)])
def test_numpy_masks_have_t5_invariants(density, mean):
    for length in [2, 3, 5, 10, 37, 100, 568]:
        num_noise, num_spans = denoising.noise_counts(length, density, mean)
        masks = denoising_numpy.span_noise_masks(hash_u64(5, np.arange(20)), length, num_noise,
                                                 num_spans)
        assert masks.shape == (20, length)
        for mask in masks:
            assert mask.sum() == num_noise and _spans(mask) == num_spans
            assert not mask[0] and mask[-1]
        if length >= 100 and num_spans > 1:  # enough distinct masks: 20 draws never collide
            assert len({m.tobytes() for m in masks}) == 20


def test_numpy_span_lengths_are_a_uniform_composition():
    # Same check as the TF mask: 4 noise tokens in 2 spans -> (1,3), (2,2), (3,1) equally likely.
    masks = denoising_numpy.span_noise_masks(hash_u64(1, np.arange(3000)), 6, 4, 2)
    first = masks.argmax(axis=1)
    lengths = [int(np.argmin(m[f:])) if not m[f:].all() else 6 - f for m, f in zip(masks, first)]
    counts = np.bincount(lengths, minlength=4)[1:]
    assert (counts > 850).all() and (counts < 1150).all(), counts
    # And at T5's realistic length (568 tokens: 85 noise in 28 spans) span lengths follow the
    # uniform composition exactly: P(k) = C(85-k-1, 26) / C(84, 27), mean 85/28.
    from math import comb

    np_lengths = []
    for mask in denoising_numpy.span_noise_masks(hash_u64(2, np.arange(400)), 568, 85, 28):
        np_lengths += _run_lengths(mask)
    assert np.mean(np_lengths) == pytest.approx(85 / 28)
    for k in (1, 2, 3, 5):
        want = comb(85 - k - 1, 26) / comb(84, 27)
        assert np.mean(np.array(np_lengths) == k) == pytest.approx(want, abs=0.03)


def _run_lengths(mask):
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return list(edges[1::2] - edges[::2])


def _python_span_corrupt(tokens, mask, vocab_size):
    """T5's sentinel replacement written out in plain Python (an independent reference)."""
    inputs, targets, span = [], [], -1
    for i, (token, noise) in enumerate(zip(tokens, mask)):
        if noise and (i == 0 or not mask[i - 1]):
            span += 1
            inputs.append(vocab_size - 1 - span)
            targets.append(vocab_size - 1 - span)
        (targets if noise else inputs).append(token)
    return inputs, targets


def test_numpy_span_corruption_reconstructs_and_rolls():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 1000, size=(16, 100))
    for roll in (False, True):
        masks = denoising_numpy.span_noise_masks(hash_u64(3, np.arange(16)), 100, 15, 5, roll)
        inputs, targets = denoising_numpy.span_corrupt_rows(tokens, masks, 1100)
        for row, (i, t) in enumerate(zip(denoising_numpy.split_rows(inputs),
                                         denoising_numpy.split_rows(targets))):
            want_i, want_t = _python_span_corrupt(tokens[row].tolist(), masks[row].tolist(), 1100)
            assert i.tolist() == want_i and t.tolist() == want_t
    assert masks[:, 0].any()  # rolled masks may start with noise


# ------------------------------------------------------------------------ index order --------

def test_index_sampler_is_a_fresh_bijection_every_pass():
    sampler = IndexSampler(1000, seed=3)
    passes, positions = sampler(np.arange(3000))
    for p in range(3):
        assert sorted(positions[p * 1000:(p + 1) * 1000]) == list(range(1000))
        assert (passes[p * 1000:(p + 1) * 1000] == p).all()
    assert (positions[:1000] != positions[1000:2000]).mean() > 0.99
    np.testing.assert_array_equal(IndexSampler(1000, seed=3)(np.arange(3000))[1], positions)
    assert (IndexSampler(1000, seed=4)(np.arange(1000))[1] != positions[:1000]).any()
    # O(1): a far index costs what a near one does and agrees with its pass's bijection.
    far = 10**12 + 17
    assert sampler([far])[1][0] == sampler.permute([far % 1000], [far // 1000])[0]


def test_pipeline_indices_cover_each_step_whatever_the_pipelines():
    for pipelines, per_replica in [(1, 8), (2, 4), (4, 2), (2, 2)]:
        steps = {}
        for w in range(pipelines):
            for k in range(3 * 8 // (per_replica * pipelines)):
                idx = pipeline_indices(k, start=40, global_batch_size=8, pipeline=w,
                                       pipelines=pipelines, per_replica_batch_size=per_replica)
                steps.setdefault(k // (8 // (per_replica * pipelines)), []).extend(idx)
        assert {s: sorted(v) for s, v in steps.items()} == {
            s: list(range(40 + 8 * s, 48 + 8 * s)) for s in range(3)}


# ------------------------------------------------------------------ a small file task ---------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from t5pre.data.default_corpus import default_corpus_texts

    root = tmp_path_factory.mktemp("corpus")
    texts = [t.replace("\n", " ") for t in default_corpus_texts("validation")]
    for i in range(3):
        (root / f"part-{i}.txt").write_text("\n".join(texts[i::3]) + "\n")
    task = pretraining.register_text_pretraining_task(
        "test_cache_corpus", {"train": str(root / "part-*.txt")})
    cache_dir = str(root / "cache")
    build_cache(task, cache_dir)
    return task, root, cache_dir


def test_cache_round_trip_equals_the_on_the_fly_store(corpus):
    task, _, cache_dir = corpus
    cache = open_cache(cache_dir, task=task)
    cached, memory = cache.split("train"), in_memory_store(task, "train")
    assert cached.num_documents == memory.num_documents > 100
    assert cached.num_tokens == memory.num_tokens == cache.manifest["splits"]["train"]["tokens"]["targets"]
    for i in (0, 7, cached.num_documents - 1):
        np.testing.assert_array_equal(cached.document(i), memory.document(i))
    # The documents are the on-the-fly pipeline's tokens, concatenated in order.
    length = denoising.span_corruption().raw_tokens_length(task.context(LENGTHS, "train", 0, False))
    assert length == 70
    stream = np.concatenate([np.asarray(d) for d in _documents(task)])
    np.testing.assert_array_equal(cached.stream([0, 1234], 300)[1], stream[1234:1534])
    a = RandomAccessTask(task, cached, LENGTHS, "train", seed=5)
    b = RandomAccessTask(task, memory, LENGTHS, "train", seed=5)
    idx = np.arange(0, 3 * a.num_items, 7)
    for x, y in zip(a.examples(idx), b.examples(idx)):
        assert [r.tolist() for r in x] == [r.tolist() for r in y]


def _documents(task):
    ds = task.preprocess(task.source.get_dataset("train", shuffle=False), None, "train", 0, False,
                         stop=1)
    return [ex["targets"] for ex in ds.as_numpy_iterator()]


def test_random_access_examples_fill_the_lengths_and_reconstruct(corpus):
    task, _, cache_dir = corpus
    store = open_cache(cache_dir, task=task).split("train")
    pipeline = RandomAccessTask(task, store, LENGTHS, "train", seed=0, shuffle=False)
    vocab = task.vocabulary
    total, n_items = store.num_tokens, pipeline.num_items
    # Pass 0 reads the data in order from its first token; pass 1 from its ring shift.
    indices = [0, 1, 2, n_items, n_items + 1]
    shift = int(hash_u64(pipeline.seed, 1, 1) % np.uint64(total))
    starts = [0, 70, 140, shift, (shift + 70) % total]
    inputs, targets = pipeline.examples(np.array(indices))
    for start, i, t in zip(starts, inputs, targets):
        assert len(i) == 64 and len(t) <= 16 and i[-1] == t[-1] == vocab.eos_id
        restored = []
        spans = {}
        for tok in t[:-1]:
            if tok >= vocab.vocab_size - vocab.extra_ids:
                current = spans.setdefault(int(tok), [])
            else:
                current.append(int(tok))
        for tok in i[:-1]:
            restored += spans[int(tok)] if tok >= vocab.vocab_size - vocab.extra_ids else [int(tok)]
        assert pipeline.chunk_length == 70
        assert restored == store.stream([start], 70)[0].tolist()
    # Every pass covers every token once: ceil(T / L) chunks, the last one the short rest.
    assert n_items == -(-total // 70) or total % 70 < 2


def test_every_pass_draws_fresh_noise_and_chunks_reproducibly(corpus):
    task, _, cache_dir = corpus
    store = open_cache(cache_dir, task=task).split("train")
    pipeline = RandomAccessTask(task, store, LENGTHS, "train", seed=1)
    n = pipeline.num_items
    first = pipeline.examples(np.arange(n))[0]
    second = pipeline.examples(np.arange(n, 2 * n))[0]
    assert not {r.tobytes() for r in first} & {r.tobytes() for r in second}
    again = RandomAccessTask(task, store, LENGTHS, "train", seed=1).examples(np.arange(n, 2 * n))[0]
    assert all((a == b).all() for a, b in zip(second, again))
    other = RandomAccessTask(task, store, LENGTHS, "train", seed=2).examples(np.arange(n))[0]
    assert any((a != b).any() for a, b in zip(first, other))


def test_model_features_equal_the_tf_converter(corpus):
    from t5pre.data.feature_converter import EncDecFeatureConverter

    task, _, cache_dir = corpus
    pipeline = RandomAccessTask(task, open_cache(cache_dir, task=task).split("train"),
                                {"inputs": 64, "targets": 20}, "train")
    inputs, targets = pipeline.examples(np.arange(6))
    ds = tf.data.Dataset.from_generator(
        lambda: ({"inputs": i, "targets": t} for i, t in zip(inputs, targets)),
        output_signature={"inputs": tf.TensorSpec([None], tf.int32),
                          "targets": tf.TensorSpec([None], tf.int32)})
    want = next(iter(EncDecFeatureConverter(pack=False)(ds, {"inputs": 64, "targets": 20}).batch(6)))
    got = model_features(inputs, targets, {"inputs": 64, "targets": 20})
    assert sorted(got) == sorted(want)
    for key in got:
        np.testing.assert_array_equal(got[key], want[key].numpy(), err_msg=key)


def _batches(task, cache_dir, start, steps, pipelines):
    """The global batches of ``steps`` steps from ``start``, assembled from every pipeline."""
    from t5pre.training.data import make_dataset_fn

    fn = make_dataset_fn(task, LENGTHS, split="train", global_batch_size=8, pack=False,
                         shuffle=True, seed=3, start_examples=start, cache=cache_dir)
    per_pipeline = [list(fn(tf.distribute.InputContext(pipelines, w, pipelines)).take(steps))
                    for w in range(pipelines)]
    return [np.concatenate([p[s]["encoder_token_ids"].numpy() for p in per_pipeline])
            for s in range(steps)]


def test_resume_far_away_is_exact_also_with_another_number_of_pipelines(corpus):
    task, _, cache_dir = corpus
    full = _batches(task, cache_dir, 0, 6, 1)
    for pipelines in (1, 2):
        for got, want in zip(_batches(task, cache_dir, 3 * 8, 3, pipelines), full[3:]):
            np.testing.assert_array_equal(got, want)
    # A far position (ten million examples, thousands of passes) equals the direct lookup.
    far = 10**7
    pipeline = RandomAccessTask(task, open_cache(cache_dir, task=task).split("train"), LENGTHS,
                                "train", seed=3)
    want = pipeline.features(np.arange(far, far + 16))["encoder_token_ids"]
    got = np.concatenate(_batches(task, cache_dir, far, 2, 2))
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------- bad input -------

def _copy_cache(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return str(dst)


def test_bad_cache_input_gives_one_clear_line(corpus, tmp_path):
    task, root, cache_dir = corpus
    with pytest.raises(DataError, match="no manifest.json"):
        open_cache(str(root))
    other = pretraining.register_text_pretraining_task(
        "test_cache_other_vocab", {"train": str(root / "part-*.txt")},
        vocabulary=_tiny_vocabulary(tmp_path))
    with pytest.raises(DataError, match="another vocabulary .* than the model's"):
        open_cache(cache_dir, vocabulary=other.vocabulary)
    with pytest.raises(DataError, match="holds task 'test_cache_corpus', not"):
        open_cache(cache_dir, task=other)

    missing = _copy_cache(cache_dir, tmp_path / "missing")
    os.remove(os.path.join(missing, "train", "shard-00000.targets.tokens"))
    with pytest.raises(DataError, match=r"shard file train/shard-00000.targets.tokens is missing"):
        open_cache(missing)

    truncated = _copy_cache(cache_dir, tmp_path / "truncated")
    path = os.path.join(truncated, "train", "shard-00000.targets.tokens")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 2)
    with pytest.raises(DataError, match=r"shard-00000.targets.tokens is corrupt: \d+ bytes"):
        open_cache(truncated)

    flipped = _copy_cache(cache_dir, tmp_path / "flipped")
    path = os.path.join(flipped, "train", "shard-00000.targets.tokens")
    data = bytearray(open(path, "rb").read())
    data[10] ^= 0xFF
    open(path, "wb").write(bytes(data))
    open_cache(flipped)  # sizes agree: only a full verify can tell
    with pytest.raises(DataError, match="sha256 differs"):
        open_cache(flipped).verify()

    bad_json = _copy_cache(cache_dir, tmp_path / "bad_json")
    open(os.path.join(bad_json, "manifest.json"), "w").write("{")
    with pytest.raises(DataError, match="manifest.json is unreadable"):
        open_cache(bad_json)


def test_changed_sources_are_named(tmp_path):
    (tmp_path / "a.txt").write_text("one document here\nand another one\n" * 20)
    task = pretraining.register_text_pretraining_task("test_cache_changing",
                                                      {"train": str(tmp_path / "*.txt")})
    build_cache(task, str(tmp_path / "cache"))
    open_cache(str(tmp_path / "cache"), task=task)
    with open(tmp_path / "a.txt", "a") as f:
        f.write("a late addition\n")
    with pytest.raises(DataError, match=r"source file .*a.txt \(train\) changed since"):
        open_cache(str(tmp_path / "cache"), task=task)
    (tmp_path / "b.txt").write_text("new\n")
    build_cache(task, str(tmp_path / "cache2"), overwrite=True)
    os.remove(tmp_path / "b.txt")
    with pytest.raises(DataError, match=r"source file .*b.txt \(train\) is gone"):
        open_cache(str(tmp_path / "cache2"), task=task)
    with pytest.raises(DataError, match="already there"):
        build_cache(task, str(tmp_path / "cache"))


def test_cached_training_input_refuses_what_it_cannot_do(corpus):
    from t5pre.training.data import make_dataset_fn

    task, _, cache_dir = corpus
    with pytest.raises(ConfigError, match="is a mixture"):
        make_dataset_fn(t5pre.get_mixture("default_ul2"), LENGTHS, split="train",
                        global_batch_size=8, pack=False, shuffle=True, seed=0, cache=cache_dir)


def _tiny_vocabulary(tmp_path):
    from t5pre.data.vocabulary import train_vocabulary

    texts = [f"some words {i} make a tiny vocabulary" for i in range(200)]
    return train_vocabulary(texts, str(tmp_path / "tiny"), vocab_size=140, byte_fallback=False)


@pytest.mark.slow
def test_cli_builds_in_parallel_and_verifies(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = tmp_path / "cache"
    run = subprocess.run([sys.executable, "-m", "t5pre", "data", "cache",
                          "default_span_corruption", "--out", str(out), "--split", "validation",
                          "--workers", "2"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "validation: " in run.stdout and "2 shard(s)" in run.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["validation"]["documents"] == len(
        list(t5pre.get_task("default_span_corruption").source.get_dataset("validation", shuffle=False)))
    run = subprocess.run([sys.executable, "-m", "t5pre", "data", "verify", str(out)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0 and ": ok" in run.stdout, run.stderr
    os.remove(out / "validation" / "shard-00001.targets.offsets")
    run = subprocess.run([sys.executable, "-m", "t5pre", "data", "verify", str(out)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("t5pre: error: cache ")
    assert "shard-00001.targets.offsets is missing" in run.stderr


# ------------------------------------------------------------------- mixture rates -----------

def test_mixture_rates_by_size_from_the_cache_and_from_a_recorded_count(corpus, tmp_path,
                                                                        monkeypatch):
    from t5pre.data import mixing

    monkeypatch.setenv("T5PRE_CACHE_DIR", str(tmp_path / "home"))
    task, root, cache_dir = corpus
    (tmp_path / "small.txt").write_text("a short document\n" * 10)
    small = pretraining.register_text_pretraining_task("test_cache_small",
                                                       {"train": str(tmp_path / "small.txt")})
    big_n = open_cache(cache_dir).num_documents("train")
    assert big_n > 100
    # From the cache's manifest (big) and from a count made once and recorded (small).
    proportional = mixing.rate_num_examples(caches={task.name: cache_dir})
    assert proportional(task) == big_n and proportional(small) == 10
    recorded = json.loads((tmp_path / "home" / mixing.COUNTS_FILE).read_text())
    assert list(recorded.values()) == [10]
    # Temperature flattens: (n ** (1/T)) normalised, as seqio/mT5 compute it.
    by_size = mixing.rate_num_examples(temperature=3.0, caches={task.name: cache_dir})
    mixture = t5pre.MixtureRegistry.add("test_cache_by_size",
                                        [(task.name, by_size), (small.name, by_size)],
                                        replace=True)
    rates = mixture.rates()
    want = big_n ** (1 / 3) / (big_n ** (1 / 3) + 10 ** (1 / 3))
    assert rates[task.name] == pytest.approx(want)
    capped = mixing.rate_num_examples(maximum=50, caches={task.name: cache_dir})
    assert capped(task) == 50
    # A changed source is counted anew.
    (tmp_path / "small.txt").write_text("a short document\n" * 12)
    assert mixing.rate_num_examples()(small) == 12
    with pytest.raises(ConfigError, match="temperature"):
        mixing.rate_num_examples(temperature=0)


@pytest.mark.slow
def test_pretrain_reads_the_cache_and_resumes(corpus, tmp_path, capsys):
    from t5pre.cli import main

    task, _, cache_dir = corpus
    run = tmp_path / "run"
    common = ["pretrain", "--model-dir", str(run), "--set", "training.batch_size=4",
              "--set", "training.log_every=1", "--set", "training.eval_every=0",
              "--set", f"data.task={task.name}", "--set", f"data.cache_dir={cache_dir}",
              "--set", "data.sequence_length={inputs: 32, targets: 8}",
              "--set", "model.overrides={d_model: 32, d_ff: 64, num_heads: 2, d_kv: 16, "
                       "num_encoder_layers: 1, num_decoder_layers: 1}"]
    assert main(common + ["--steps", "2"]) == 0
    assert main(common + ["--steps", "4"]) == 0
    out = capsys.readouterr().out
    assert "step 4/4" in out and "approximate" not in out
    assert main(common + ["--steps", "5", "--set", "data.cache_dir=" + str(tmp_path / "none")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_a_supervised_task_round_trips_through_the_cache(tmp_path):
    task = t5pre.get_task("default_summarize")
    lengths = {"inputs": 48, "targets": 12}
    with pytest.raises(DataError, match="needs sequence_length"):
        build_cache(task, str(tmp_path / "no_lengths"), splits=["validation"])
    build_cache(task, str(tmp_path / "c"), splits=["validation"], sequence_length=lengths)
    cache = open_cache(str(tmp_path / "c"), task=task)
    pipeline = RandomAccessTask(task, cache.split("validation"), lengths, "validation",
                                shuffle=False)
    want = list(task.get_dataset(lengths, split="validation", shuffle=False, num_epochs=1)
                .as_numpy_iterator())
    assert pipeline.num_items == len(want) > 10
    inputs, targets = pipeline.examples(np.arange(len(want)))
    for ex, i, t in zip(want, inputs, targets):
        assert ex["inputs"].tolist() == i.tolist() and ex["targets"].tolist() == t.tolist()
    from t5pre.training.data import make_dataset_fn

    with pytest.raises(ConfigError, match="built at sequence_length"):
        make_dataset_fn(task, {"inputs": 64, "targets": 12}, split="validation",
                        global_batch_size=4, pack=False, shuffle=True, seed=0,
                        cache=str(tmp_path / "c"))


def test_reading_and_corrupting_a_cache_needs_no_tensorflow(corpus):
    """A JAX host without TensorFlow: the cache opens and yields model features, numpy only."""
    task, root, cache_dir = corpus
    code = f"""
import sys
sys.modules["tensorflow"] = None  # any TensorFlow import now fails
import numpy as np
from t5pre.tasks import pretraining
from t5pre.data.cache import open_cache
from t5pre.data.random_access import RandomAccessTask
task = pretraining.register_text_pretraining_task({task.name!r},
                                                  {{"train": {str(root / "part-*.txt")!r}}})
pipeline = RandomAccessTask(task, open_cache({cache_dir!r}, task=task).split("train"),
                            {{"inputs": 64, "targets": 16}}, "train", seed=3)
features = pipeline.features(np.arange(10**9, 10**9 + 4), pack=True)
print(features["encoder_token_ids"].shape, int(features["encoder_token_ids"].sum()))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    here = RandomAccessTask(task, open_cache(cache_dir, task=task).split("train"), LENGTHS,
                            "train", seed=3).features(np.arange(10**9, 10**9 + 4))
    assert run.stdout.split() == ["(4,", "64)", str(int(here["encoder_token_ids"].sum()))]


@pytest.mark.parametrize("name", ["default_prefix_lm", "default_iid_denoising"])
def test_other_objectives_in_numpy(name):
    task = t5pre.get_task(name)
    store = in_memory_store(task, "validation")
    pipeline = RandomAccessTask(task, store, LENGTHS, "validation", seed=0, shuffle=False)
    inputs, targets = pipeline.examples(np.arange(50))
    length = pipeline.chunk_length
    for n, (i, t) in enumerate(zip(inputs, targets)):
        assert len(i) <= 64 and len(t) <= 16 and i[-1] == t[-1] == 1
        chunk = store.stream([n * length], length)[0]  # pass 0 reads from the first token
        if name == "default_prefix_lm":
            assert np.concatenate([i[:-1], t[:-1]]).tolist() == chunk.tolist()
        else:
            assert t[:-1].tolist() == chunk.tolist()
    if name == "default_prefix_lm":
        assert len({len(i) for i in inputs}) > 1  # the split point is random
    else:
        changed = np.mean([np.mean(i[:-1] != t[:-1]) for i, t in zip(inputs, targets)])
        assert 0.08 < changed < 0.2  # 15% selected, 90% of those replaced
