"""The one training data path: implicit token caches (built once, reused, keyed, safe against a
kill mid-build and against two builders), O(1) resume without a configured cache, the same
examples with and without ``data.cache_dir``, mixtures by rate."""

import functools
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import t5pre  # noqa: E402
from t5pre.data import implicit_cache  # noqa: E402
from t5pre.data.cache import TokenStore, build_cache  # noqa: E402
from t5pre.data.random_access import RandomAccessMixture, apportion  # noqa: E402
from t5pre.errors import DataError  # noqa: E402
from t5pre.tasks import pretraining  # noqa: E402
from t5pre.data.random_access import random_access_pipeline  # noqa: E402
from t5pre.training.data import make_dataset_fn  # noqa: E402

LENGTHS = {"inputs": 64, "targets": 16}
WORDS = ("the model reads tokens and learns to fill spans of text that were dropped from "
         "its inputs during pretraining on a corpus of plain documents").split()


def _write_corpus(directory, files=2, lines=150):
    os.makedirs(directory, exist_ok=True)
    for f in range(files):
        rows = [" ".join(WORDS[(i * 7 + j + f) % len(WORDS)] for j in range(12 + i % 9))
                for i in range(lines)]
        with open(os.path.join(directory, f"part-{f}.txt"), "w") as out:
            out.write("\n".join(rows) + "\n")
    return os.path.join(directory, "part-*.txt")


@pytest.fixture()
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("T5PRE_CACHE_DIR", str(tmp_path / "home"))
    return tmp_path / "home" / "token-caches"


@pytest.fixture()
def task(tmp_path):
    pattern = _write_corpus(str(tmp_path / "corpus"))
    return pretraining.register_text_pretraining_task(
        f"test_implicit_{tmp_path.name}", {"train": pattern, "validation": pattern}, replace=True)


def _first_batch(source, start, cache=None, batch=8, seed=3, log=None):
    fn = make_dataset_fn(source, LENGTHS, split="train", global_batch_size=batch, pack=False,
                         shuffle=True, seed=seed, start_examples=start, cache=cache, log=log)
    return {k: v.numpy() for k, v in next(iter(fn())).items()}


class _Counter:
    """Counts documents read from a task's source and token rows read from any store."""

    def __init__(self, monkeypatch, task):
        self.documents = 0
        self.calls = []  # rows read per store read
        source = task.source
        original_read = type(source).get_dataset
        counter = self

        def get_dataset(self_, *args, **kwargs):
            def count(example):
                def bump(x):
                    counter.documents += 1
                    return x
                return tf.numpy_function(bump, [tf.constant(0)], tf.int32), example
            return original_read(self_, *args, **kwargs).map(count).map(lambda _, ex: ex)

        monkeypatch.setattr(type(source), "get_dataset", get_dataset)
        original_stream = TokenStore.stream

        def stream(self_, starts, length):
            counter.calls.append(len(starts))
            return original_stream(self_, starts, length)

        monkeypatch.setattr(TokenStore, "stream", stream)


def test_first_batch_costs_the_same_at_position_zero_and_ten_million(cache_home, task,
                                                                      monkeypatch):
    """No cache configured: the first run builds the implicit cache (one pass over the source),
    then a batch at example 10**7 reads no document and as many token rows as one at 0."""
    counter = _Counter(monkeypatch, task)
    lines = []
    _first_batch(task, 0, log=lines.append)
    built = counter.documents
    assert built == 300  # every train document once (the cache build)
    assert any("building the token cache" in line for line in lines), lines
    assert len(list(cache_home.iterdir())) == 2  # the cache and its lock file
    costs = {}
    for start in (0, 10**7):
        counter.documents, counter.calls = 0, []
        lines = []
        batch = _first_batch(task, start, log=lines.append)
        costs[start] = (counter.documents, set(counter.calls))
        assert batch["encoder_token_ids"].shape == (8, LENGTHS["inputs"])
        assert not any("building" in line for line in lines), lines
    # No document re-read, and every read is one batch's rows (or the one-row spec probe):
    # what a batch costs does not depend on the position (prefetching varies the count).
    assert costs[0] == costs[10**7] == (0, {1, 8})


def test_implicit_and_configured_cache_give_the_same_examples(cache_home, task, tmp_path):
    explicit = str(tmp_path / "explicit")
    build_cache(task, explicit, splits=["train"])
    for start in (0, 12345):
        implicit = _first_batch(task, start)
        configured = _first_batch(task, start, cache=explicit)
        assert sorted(implicit) == sorted(configured)
        for key in implicit:
            np.testing.assert_array_equal(implicit[key], configured[key], err_msg=key)
    # A split the configured cache lacks comes from the implicit cache.
    fn = make_dataset_fn(task, LENGTHS, split="validation", global_batch_size=4, pack=False,
                         shuffle=False, seed=0, cache=explicit, log=None)
    assert next(iter(fn()))["encoder_token_ids"].shape == (4, 64)


def test_the_key_follows_sources_vocabulary_and_lengths(cache_home, task, tmp_path, monkeypatch):
    first = implicit_cache.ensure_cache(task, "train", log=None)
    again = implicit_cache.ensure_cache(task, "train", log=None)
    assert first.path == again.path
    # A pretraining cache holds documents: its key ignores the sequence lengths.
    assert implicit_cache.cache_key(task, "train", {"inputs": 8, "targets": 4}) == \
        implicit_cache.cache_key(task, "train", None)
    path = task.source.list_files("train")[0]
    with open(path, "a") as f:
        f.write("one more line of text for the corpus\n")
    changed = implicit_cache.ensure_cache(task, "train", log=None)
    assert changed.path != first.path
    assert changed.num_documents("train") == first.num_documents("train") + 1
    supervised = t5pre.get_task("default_summarize")
    assert implicit_cache.cache_key(supervised, "validation", {"inputs": 48, "targets": 12}) \
        is None  # a Python function source without a fingerprint: tokenized in memory
    monkeypatch.setattr(supervised.source, "fingerprint", "v1", raising=False)
    a = implicit_cache.cache_key(supervised, "validation", {"inputs": 48, "targets": 12})
    b = implicit_cache.cache_key(supervised, "validation", {"inputs": 64, "targets": 12})
    assert a and b and a != b
    key = implicit_cache.cache_key(task, "train")
    assert len(key["vocabularies"]["targets"]) == 64 and key["split"] == "train"
    # Tasks over the same source and tokenizer share the documents (UL2's denoisers) ...
    patterns = task.source.split_to_filepattern
    prefix_lm = pretraining.register_text_pretraining_task(
        task.name + "_plm", patterns, objective="prefix_lm", replace=True)
    assert implicit_cache.ensure_cache(prefix_lm, "train", log=None).path == changed.path
    # ... but not when a source setting or a preprocessor's parameters differ.
    jsonl = str(tmp_path / "docs.jsonl")
    with open(jsonl, "w") as f:
        f.write('{"text": "a document", "body": "another one"}\n')
    by_text, by_body = (pretraining.register_text_pretraining_task(
        f"{task.name}_{k}", {"train": jsonl}, text_key=k, replace=True) for k in ("text", "body"))
    assert implicit_cache.cache_key(by_text, "train") != implicit_cache.cache_key(by_body, "train")
    tokenize = [pretraining.tokenize_text(k) for k in ("text", "body")]
    assert implicit_cache.describe_step(tokenize[0]) != implicit_cache.describe_step(tokenize[1])

    def cut(dataset, ctx, limit):
        return dataset.map(lambda ex: {"targets": ex["targets"][:limit]})

    def cut_more(dataset, ctx, limit):
        return dataset.map(lambda ex: {"targets": ex["targets"][:limit - 1]})

    steps = [functools.partial(cut, limit=3), functools.partial(cut, limit=4),
             functools.partial(cut_more, limit=4)]
    described = [json.dumps(implicit_cache.describe_step(p)) for p in steps]
    assert len(set(described)) == 3  # parameters and code both count


def test_a_killed_build_leaves_a_usable_state(cache_home, task):
    """What a SIGKILL mid-build leaves (a temp directory, a directory without manifest) is
    ignored and cleaned by the next build."""
    key = implicit_cache.cache_key(task, "train")
    path = implicit_cache.cache_path(task, key)
    os.makedirs(path + "_temp-99999/train")
    with open(path + "_temp-99999/train/shard-00000.targets.tokens.tmp", "wb") as f:
        f.write(b"\0" * 100)
    os.makedirs(os.path.join(path, "train"))  # no manifest: unfinished
    cache = implicit_cache.ensure_cache(task, "train", log=None)
    assert cache.path == path and cache.num_documents("train") == 300
    assert not os.path.exists(path + "_temp-99999")


_BUILDER = textwrap.dedent("""
    import os, sys, time
    from t5pre.data import implicit_cache
    from t5pre.data.sources import TextLineSource
    from t5pre.tasks import pretraining

    pattern, mode = sys.argv[1], sys.argv[2]
    if mode == "hang":  # hold the lock and stop inside the build, after a block is written
        from t5pre.data import cache as cache_module
        original = cache_module._ShardWriter.write

        def write(self, *args):
            original(self, *args)
            self.files[self.features[0]].flush()
            print("BUILDING", flush=True)
            time.sleep(600)
        cache_module._ShardWriter.write = write
    task = pretraining.register_text_pretraining_task("test_implicit_proc", {"train": pattern})
    cache = implicit_cache.ensure_cache(task, "train", log=lambda m: print(m, flush=True))
    print("CACHE", cache.path, cache.num_documents("train"), flush=True)
""")


def _builder(tmp_path, pattern, mode):
    script = tmp_path / "builder.py"
    script.write_text(_BUILDER)
    return subprocess.Popen([sys.executable, str(script), pattern, mode], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=dict(os.environ))


def test_sigkill_mid_build_then_two_processes_build_once(cache_home, tmp_path):
    import signal

    pattern = _write_corpus(str(tmp_path / "procs"), files=2, lines=60)
    hung = _builder(tmp_path, pattern, "hang")
    seen = []
    for line in hung.stdout:
        seen.append(line)
        if "BUILDING" in line:
            break
    assert "BUILDING" in seen[-1], seen
    os.kill(hung.pid, signal.SIGKILL)
    hung.wait(timeout=60)
    leftovers = [p for p in os.listdir(cache_home) if "_temp-" in p]
    assert leftovers  # the kill left a half-built temp directory (never a cache)
    assert not [p for p in os.listdir(cache_home) if "_temp-" not in p and ".lock" not in p]
    procs = [_builder(tmp_path, pattern, "build") for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    results = [[line for line in out.splitlines() if line.startswith("CACHE")] for out in outs]
    assert results[0] == results[1] and results[0][0].endswith(" 120"), outs
    builds = sum(out.count("building the token cache of task") for out in outs)
    assert builds == 1, outs  # the second process waited, then reused the first one's cache
    assert not [p for p in os.listdir(cache_home) if "_temp-" in p]


def test_an_infinite_source_is_one_clear_error(cache_home):
    from t5pre.data.sources import FunctionSource

    def forever(split, shuffle, seed):
        return tf.data.Dataset.from_tensor_slices({"text": ["a b c d e f"] * 3}).repeat()

    source = FunctionSource(forever, splits=("train",), name="forever", fingerprint="v1")
    objective = pretraining._make_objective("span_corruption", None)
    task = pretraining._register("test_implicit_forever", source, objective, None, replace=True)
    with pytest.raises(DataError, match="is infinite"):
        _first_batch(task, 0)


# ----------------------------------------------------------------------------- mixtures -----

def test_apportion_is_exact_and_keeps_every_task():
    counts = apportion([0.5, 0.3, 0.2], 1000)
    assert counts.tolist() == [500, 300, 200]
    counts = apportion([1.0, 1e-9], 1 << 16)
    assert counts.sum() == 1 << 16 and counts[1] == 1


def test_mixture_trains_by_rate_and_resumes_in_constant_time(cache_home, tmp_path):
    a = pretraining.register_text_pretraining_task(
        "test_implicit_mix_a", {"train": _write_corpus(str(tmp_path / "a"))}, replace=True)
    b = pretraining.register_text_pretraining_task(
        "test_implicit_mix_b", {"train": _write_corpus(str(tmp_path / "b"), lines=40)},
        replace=True)
    from t5pre.data.mixing import rate_num_examples

    mixture = t5pre.MixtureRegistry.add("test_implicit_mix", [(a.name, 3.0), (b.name, 1.0)],
                                        replace=True)
    pipeline = random_access_pipeline(mixture, LENGTHS, split="train", seed=5, shuffle=True,
                                      log=None)
    assert isinstance(pipeline, RandomAccessMixture)
    which, local = pipeline.task_indices(np.arange(1 << 16))
    assert np.bincount(which).tolist() == [3 << 14, 1 << 14]  # exactly the rates per block
    for t in range(2):  # each task's indices of a block are 0..n-1, each once
        assert sorted(local[which == t].tolist()) == list(range(int((which == t).sum())))
    far = 10**7 + 17
    inputs, _ = pipeline.examples(np.arange(far, far + 8))
    which, local = pipeline.task_indices(np.arange(far, far + 8))
    for row, (t, i) in enumerate(zip(which, local)):
        want, _ = pipeline.parts[t].examples(np.array([i]))
        np.testing.assert_array_equal(inputs[row], want[0])
    # rate_num_examples counts from the implicit caches the pipeline opened.
    sized = t5pre.MixtureRegistry.add("test_implicit_mix_sized",
                                      [(a.name, rate_num_examples()), (b.name, rate_num_examples())],
                                      replace=True)
    pipeline = random_access_pipeline(sized, LENGTHS, split="train", seed=5, shuffle=True,
                                      log=None)
    assert pipeline.counts.tolist() == apportion([300, 80], 1 << 16).tolist()
    batch = _first_batch(sized, 10**7)
    assert batch["encoder_token_ids"].shape == (8, 64)


# ------------------------------------------------- get_dataset / tasks show == training ------

def _assert_rows_equal(batch, examples):
    for row, example in enumerate(examples):
        for key, feature in (("inputs", "encoder_token_ids"), ("targets", "decoder_target_ids")):
            ids = example[key]
            np.testing.assert_array_equal(batch[feature][row, :len(ids)], ids)
            assert not batch[feature][row, len(ids):].any()


def test_get_dataset_and_tasks_show_serve_what_training_reads(cache_home, task, capsys):
    from t5pre.cli import main

    seed = 7
    batch = _first_batch(task, 0, batch=4, seed=seed)
    examples = list(task.get_dataset(LENGTHS, split="train", shuffle=True, seed=seed)
                    .take(4).as_numpy_iterator())
    _assert_rows_equal(batch, examples)
    # ... at a later position too (a resume at example 40 reads get_dataset's examples 40..43)
    later = _first_batch(task, 40, batch=4, seed=seed)
    _assert_rows_equal(later, list(task.get_dataset(LENGTHS, split="train", seed=seed)
                                   .skip(40).take(4).as_numpy_iterator()))
    # ... and a second pass draws new chunks and noise (fresh, not the first pass again).
    first_pass = list(task.get_dataset(LENGTHS, split="train", seed=seed, num_epochs=1)
                      .as_numpy_iterator())
    second = _first_batch(task, len(first_pass), batch=4, seed=seed)
    assert not np.array_equal(second["encoder_token_ids"], batch["encoder_token_ids"])
    # `t5pre tasks show` prints exactly those examples.
    assert main(["tasks", "show", task.name, "-n", "2", "--seed", str(seed), "--ids",
                 "--inputs-length", "64", "--targets-length", "16", "--width", "0"]) == 0
    out = capsys.readouterr().out
    for example in examples[:2]:
        for key in ("inputs", "targets"):
            assert " ".join(str(i) for i in example[key]) in out


def test_a_mixture_get_dataset_is_its_training_stream(cache_home, tmp_path):
    a = pretraining.register_text_pretraining_task(
        "test_implicit_show_a", {"train": _write_corpus(str(tmp_path / "a"))}, replace=True)
    b = pretraining.register_text_pretraining_task(
        "test_implicit_show_b", {"train": _write_corpus(str(tmp_path / "b"), lines=50)},
        replace=True, objective="prefix_lm")
    mixture = t5pre.MixtureRegistry.add("test_implicit_show", [(a.name, 1.0), (b.name, 1.0)],
                                        replace=True)
    batch = _first_batch(mixture, 0, batch=8, seed=2)
    examples = list(mixture.get_dataset(LENGTHS, split="train", seed=2).take(8)
                    .as_numpy_iterator())
    _assert_rows_equal(batch, examples)


def test_data_cache_without_out_prebuilds_what_training_reads(cache_home, task, capsys):
    from t5pre.cli import main

    assert main(["data", "cache", task.name, "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert "building the token cache" in out and "train: 300 documents" in out
    lines = []
    _first_batch(task, 0, log=lines.append)
    assert not any("building" in line for line in lines), lines  # training reuses it
    assert main(["data", "cache", "default_summarize", "--split", "validation"]) == 2
    assert "--inputs-length" in capsys.readouterr().err
