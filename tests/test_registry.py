"""Task / Mixture registries, Task.get_dataset's pipeline contract, standard preprocessors."""

import sys
from collections import Counter

import pytest

from t5pre.data import preprocessors as prep
from t5pre.data.registry import (
    Feature,
    MixtureRegistry,
    TaskRegistry,
    get_mixture,
    get_task,
    get_task_or_mixture,
)
from t5pre.data.sources import FunctionSource
from t5pre.data.vocabulary import SentencePieceVocabulary
from t5pre.errors import DataError

WORDS = ["test", "this", "what", "a", "the", "sheet", "cat", "wheel"]


@pytest.fixture(scope="module")
def vocab(shared_data):
    return SentencePieceVocabulary(str(shared_data / "spm" / "seqio_test_sentencepiece.model"), extra_ids=10)


def _docs(n):
    """n distinct documents, of growing length (so trimming matters for the long ones)."""
    return [" ".join([f"doc {i}:"] + [WORDS[(i + j) % len(WORDS)] for j in range(3 + i % 20)]) for i in range(n)]


def _source(n=40, name="docs"):
    import tensorflow as tf

    def fn(split, shuffle, seed):
        docs = _docs(n) if split == "train" else _docs(5)
        return tf.data.Dataset.from_tensor_slices({"doc": docs, "title": [d.split(":")[0] for d in docs]})

    return FunctionSource(fn, splits=("train", "validation"), name=name)


@pytest.fixture
def registered():
    """Registers tasks/mixtures under unique names and removes them afterwards."""
    names = []

    def add_task(name, *args, **kwargs):
        names.append(("task", name))
        return TaskRegistry.add(name, *args, **kwargs)

    def add_mixture(name, *args, **kwargs):
        names.append(("mixture", name))
        return MixtureRegistry.add(name, *args, **kwargs)

    yield add_task, add_mixture
    for kind, name in names:
        (TaskRegistry if kind == "task" else MixtureRegistry).remove(name)


def _standard(vocab, n=40, name="docs", extra=()):
    return dict(
        source=_source(n, name),
        preprocessors=[prep.rekey({"inputs": "doc", "targets": "title"}), prep.tokenize, *extra, prep.append_eos_after_trim],
        output_features={"inputs": Feature(vocab), "targets": Feature(vocab)},
    )


def _inputs(dataset):
    return [ex["inputs_pretokenized"].decode() for ex in dataset.as_numpy_iterator()]


def test_task_pipeline_lengths_eos_and_pretokenized(vocab, registered):
    add_task, _ = registered
    task = add_task("t_pipeline", **_standard(vocab))
    lengths = {"inputs": 12, "targets": 4}
    examples = list(task.get_dataset(lengths, split="train", shuffle=False, num_epochs=1).as_numpy_iterator())
    assert len(examples) == 40
    for ex, doc in zip(examples, _docs(40)):
        assert ex["inputs_pretokenized"].decode() == doc
        assert ex["inputs"].dtype.name == "int32" and ex["inputs"].ndim == 1
        assert 1 < len(ex["inputs"]) <= 12 and len(ex["targets"]) <= 4
        assert ex["inputs"][-1] == vocab.eos_id and ex["targets"][-1] == vocab.eos_id
        full = vocab.encode(doc)
        assert ex["inputs"].tolist() == (full[:11] + [1] if len(full) >= 12 else full + [1])
    assert any(len(vocab.encode(d)) > 11 for d in _docs(40))  # trimming was exercised


def test_task_determinism_shuffle_and_epochs(vocab, registered):
    add_task, _ = registered
    task = add_task("t_determinism", **_standard(vocab), shuffle_buffer_size=100)
    lengths = {"inputs": 64, "targets": 8}
    a = _inputs(task.get_dataset(lengths, seed=1, num_epochs=1))
    assert a == _inputs(task.get_dataset(lengths, seed=1, num_epochs=1))
    assert a != _inputs(task.get_dataset(lengths, seed=2, num_epochs=1))
    assert sorted(a) == sorted(_docs(40)) and a != _docs(40)
    assert Counter(_inputs(task.get_dataset(lengths, seed=1, num_epochs=3))) == Counter(_docs(40) * 3)
    forever = task.get_dataset(lengths, seed=1, num_epochs=None).take(100)
    assert len(list(forever)) == 100


@pytest.mark.parametrize("shuffle", [False, True])
def test_task_shards_are_disjoint_and_cover(vocab, registered, shuffle):
    add_task, _ = registered
    task = add_task("t_shards", **_standard(vocab))
    shards = [
        _inputs(task.get_dataset({"inputs": 64, "targets": 8}, shuffle=shuffle, seed=4, shard_info=(i, 3), num_epochs=1))
        for i in range(3)
    ]
    assert Counter(sum(shards, [])) == Counter(_docs(40))


def test_preprocessors_get_distinct_reproducible_seeds(vocab, registered):
    add_task, _ = registered
    seen = []

    def spy(dataset, ctx):
        seen.append((ctx.seed, ctx.split, ctx.shuffle, ctx.task_name, dict(ctx.sequence_length)))
        return dataset

    task = add_task("t_seeds", **_standard(vocab, extra=[spy, spy]))
    task.get_dataset({"inputs": 8, "targets": 4}, split="validation", seed=3, shuffle=False)
    task.get_dataset({"inputs": 8, "targets": 4}, split="validation", seed=3, shuffle=False)
    task.get_dataset({"inputs": 8, "targets": 4}, split="validation", seed=3, shuffle=False, shard_info=(1, 2))
    first, second, again_first, again_second, shard_first, _ = seen
    assert first[0] != second[0] and (first, second) == (again_first, again_second)
    assert shard_first[0] != first[0]  # another shard, another seed
    assert first[1:] == ("validation", False, "t_seeds", {"inputs": 8, "targets": 4})


def test_map_with_seeds_is_reproducible_and_per_example():
    import tensorflow as tf

    def draw(seed):
        ds = prep.map_with_seeds(tf.data.Dataset.range(6), lambda ex, s: tf.random.stateless_uniform([], s), seed)
        return [float(x) for x in ds.as_numpy_iterator()]

    assert draw(5) == draw(5) and draw(5) != draw(6)
    assert len(set(draw(5))) == 6


def test_duplicate_and_unknown_names(vocab, registered):
    add_task, add_mixture = registered
    add_task("t_dup_name", **_standard(vocab))
    with pytest.raises(DataError, match="'t_dup_name' is already registered"):
        TaskRegistry.add("t_dup_name", **_standard(vocab))
    replaced = add_task("t_dup_name", **_standard(vocab, n=3), replace=True)
    assert get_task("t_dup_name") is replaced
    with pytest.raises(DataError, match="unknown task 't_dup_nam'; did you mean t_dup_name"):
        get_task("t_dup_nam")
    add_mixture("m_dup_name", [("t_dup_name", 1.0)])
    with pytest.raises(DataError, match="'m_dup_name' is already registered"):
        MixtureRegistry.add("m_dup_name", [("t_dup_name", 1.0)])
    with pytest.raises(DataError, match="is a mixture: use get_mixture"):
        get_task("m_dup_name")
    assert get_task_or_mixture("m_dup_name") is get_mixture("m_dup_name")
    assert "t5pre.tasks" in sys.modules  # lookups import the catalogue


def test_missing_or_untokenized_features_are_named(vocab, registered):
    add_task, _ = registered
    features = {"inputs": Feature(vocab), "targets": Feature(vocab)}
    no_tokenize = add_task("t_untok", _source(), [prep.rekey({"inputs": "doc", "targets": "title"})], features)
    with pytest.raises(DataError, match="task 't_untok': feature 'inputs' is still text"):
        no_tokenize.get_dataset({"inputs": 8, "targets": 4})
    no_rekey = add_task("t_norekey", _source(), [prep.tokenize], features)
    with pytest.raises(DataError, match=r"task 't_norekey': tokenize: examples have no 'inputs' feature"):
        no_rekey.get_dataset({"inputs": 8, "targets": 4})
    bad_key = add_task("t_badkey", _source(), [prep.rekey({"inputs": "body", "targets": "title"})], features)
    with pytest.raises(DataError, match="task 't_badkey': rekey: the source has no field 'body'"):
        bad_key.get_dataset({"inputs": 8, "targets": 4})
    with pytest.raises(DataError, match="has no split 'test'"):
        no_rekey.get_dataset(split="test")


def _constant_task(add_task, vocab, name, text):
    import tensorflow as tf

    def fn(split, shuffle, seed):
        return tf.data.Dataset.from_tensors({"doc": text, "title": text}).repeat(50)

    src = FunctionSource(fn, splits=("train",), name=name)
    return add_task(
        name,
        src,
        [prep.rekey({"inputs": "doc", "targets": "title"}), prep.tokenize, prep.append_eos_after_trim],
        {"inputs": Feature(vocab), "targets": Feature(vocab)},
    )


@pytest.mark.slow
def test_mixture_rates_are_respected(vocab, registered):
    add_task, add_mixture = registered
    _constant_task(add_task, vocab, "t_mix_a", "a test")
    _constant_task(add_task, vocab, "t_mix_b", "what")
    _constant_task(add_task, vocab, "t_mix_zero", "this")
    mixture = add_mixture(
        "m_rates", [("t_mix_a", 3.0), ("t_mix_b", lambda task: 1.0), ("t_mix_zero", 0)]
    )
    assert mixture.rates() == {"t_mix_a": 0.75, "t_mix_b": 0.25}
    lengths = {"inputs": 8, "targets": 8}
    drawn = [ex["inputs_pretokenized"] for ex in mixture.get_dataset(lengths, seed=0).take(2000).as_numpy_iterator()]
    counts = Counter(drawn)
    assert set(counts) == {b"a test", b"what"}
    assert 0.71 < counts[b"a test"] / 2000 < 0.79
    again = [ex["inputs_pretokenized"] for ex in mixture.get_dataset(lengths, seed=0).take(200).as_numpy_iterator()]
    assert again == drawn[:200]
    finite = list(mixture.get_dataset(lengths, seed=0, num_epochs=1).as_numpy_iterator())
    assert len(finite) == 100  # with num_epochs, every task is read to its end


def test_mixture_of_supervised_and_unsupervised_tasks_keeps_shared_keys(vocab, registered):
    """A pretraining task has no *_pretokenized texts; mixing it with a supervised task keeps
    inputs/targets and drops the texts only one side has."""
    import tensorflow as tf

    add_task, add_mixture = registered
    _constant_task(add_task, vocab, "t_sup", "a test")

    def strip_texts(ds, ctx):
        return ds.map(lambda ex: {"inputs": ex["inputs"], "targets": ex["targets"]})

    def fn(split, shuffle, seed):
        return tf.data.Dataset.from_tensors({"doc": "what", "title": "what"}).repeat(50)

    add_task("t_unsup", FunctionSource(fn, splits=("train",), name="u"),
             [prep.rekey({"inputs": "doc", "targets": "title"}), prep.tokenize,
              prep.append_eos_after_trim, strip_texts],
             {"inputs": Feature(vocab), "targets": Feature(vocab)})
    mixture = add_mixture("m_sup_unsup", [("t_sup", 1), ("t_unsup", 1)])
    examples = list(mixture.get_dataset({"inputs": 8, "targets": 8}, seed=0, num_epochs=1)
                    .as_numpy_iterator())
    assert len(examples) == 100
    assert all(set(ex) == {"inputs", "targets"} for ex in examples)
    assert {tuple(ex["inputs"]) for ex in examples} == {
        tuple(vocab.encode("a test") + [1]), tuple(vocab.encode("what") + [1])}


def test_mixture_of_incompatible_tasks_is_refused(vocab, registered):
    add_task, add_mixture = registered
    _constant_task(add_task, vocab, "t_inc_a", "a")
    task_b = add_task(
        "t_inc_b",
        _source(),
        [prep.rekey({"inputs": "doc"}), prep.tokenize],
        {"inputs": Feature(vocab)},
    )
    assert task_b.vocabulary is vocab
    mixture = add_mixture("m_incompatible", [("t_inc_a", 1), ("t_inc_b", 1)])
    with pytest.raises(DataError, match="mixture 'm_incompatible': task 't_inc_b' has features"):
        mixture.get_dataset({"inputs": 8, "targets": 8})
    with pytest.raises(DataError, match="unknown task 't_nope'"):
        add_mixture("m_unknown", [("t_nope", 1)]).rates()


def test_postprocess_accepts_seqio_and_plain_signatures(vocab, registered):
    add_task, _ = registered
    task = add_task("t_post", **_standard(vocab), postprocess_fn=lambda text, example=None, is_target=False: (text.upper(), is_target))
    assert task.postprocess("ab", is_target=True) == ("AB", True)
    plain = add_task("t_post_plain", **_standard(vocab), postprocess_fn=str.strip)
    assert plain.postprocess("  x ") == "x"
    assert add_task("t_post_none", **_standard(vocab)).postprocess("y") == "y"


def test_trim_and_append_eos_preprocessors(vocab):
    import tensorflow as tf

    from t5pre.data.registry import PreprocessContext

    features = {"inputs": Feature(vocab), "targets": Feature(vocab, add_eos=False)}
    ctx = PreprocessContext({"inputs": 3, "targets": 2}, features, "train", 0, False)
    ds = tf.data.Dataset.from_tensors({"inputs": tf.constant([5, 6, 7, 8]), "targets": tf.constant([9, 10, 11])})
    eos = next(prep.append_eos_after_trim(ds, ctx).as_numpy_iterator())
    assert eos["inputs"].tolist() == [5, 6, 1] and eos["targets"].tolist() == [9, 10, 11]
    trimmed = next(prep.trim(ds, ctx).as_numpy_iterator())
    assert trimmed["inputs"].tolist() == [5, 6, 7] and trimmed["targets"].tolist() == [9, 10]
    appended = next(prep.append_eos(ds, ctx).as_numpy_iterator())
    assert appended["inputs"].tolist() == [5, 6, 7, 8, 1]


def test_a_user_task_cannot_silently_take_a_catalogue_name(vocab):
    catalogue = TaskRegistry.names()  # imports t5pre.tasks
    if not catalogue:
        pytest.skip("the catalogue registers no task")
    with pytest.raises(DataError, match=f"task '{catalogue[0]}' is already registered"):
        TaskRegistry.add(catalogue[0], **_standard(vocab))


def test_task_and_mixture_are_dataset_providers(vocab, registered):
    """Callers may treat a task and a mixture alike: both have the provider's faces."""
    from t5pre.data.registry import DatasetProvider, Mixture, Task

    add_task, add_mixture = registered
    task = add_task("t_provider", **_standard(vocab))
    mixture = add_mixture("m_provider", [("t_provider", 1.0)])
    assert isinstance(task, Task) and isinstance(mixture, Mixture)
    for provider in (task, mixture):
        assert isinstance(provider, DatasetProvider)
        assert provider.splits == ("train", "validation")
        assert sorted(provider.output_features) == ["inputs", "targets"]
        assert provider.vocabulary is vocab
        dataset = provider.get_dataset({"inputs": 8, "targets": 4}, split="validation",
                                       shuffle=False, seed=0, shard_info=None, num_epochs=1)
        assert len(list(dataset.as_numpy_iterator())) == 5
    assert mixture.metric_fns == ()
    assert get_task_or_mixture(mixture) is mixture  # providers pass through the lookup
    for provider in (task, mixture):  # one split check, naming the provider
        with pytest.raises(DataError, match=rf"{provider.kind} '{provider.name}' has no split 'test'"):
            provider.get_dataset(split="test")


def test_task_replace_returns_a_new_unregistered_task(vocab, registered, shared_data):
    import dataclasses

    add_task, _ = registered
    metric = lambda targets, predictions: {"n": len(targets)}  # noqa: E731
    task = add_task("t_replace", metric_fns=[metric], description="original", **_standard(vocab))
    other = SentencePieceVocabulary(str(shared_data / "spm" / "seqio_test_sentencepiece.model"),
                                    extra_ids=20)
    features = {k: dataclasses.replace(f, vocabulary=other) for k, f in task.output_features.items()}
    copy = task.replace(output_features=features)
    assert copy is not task and copy.vocabulary is other and task.vocabulary is vocab
    # everything else is kept, and the registry still holds the original
    assert (copy.name, copy.source, copy.preprocessors, copy.metric_fns, copy.description) == \
        (task.name, task.source, task.preprocessors, task.metric_fns, task.description)
    assert get_task("t_replace") is task
    renamed = task.replace(name="t_replace_variant")
    assert renamed.name == "t_replace_variant" and "t_replace_variant" not in TaskRegistry.names()
    lengths = {"inputs": 16, "targets": 8}
    assert _inputs(renamed.get_dataset(lengths, split="validation", shuffle=False, num_epochs=1)) \
        == _inputs(task.get_dataset(lengths, split="validation", shuffle=False, num_epochs=1))
    with pytest.raises(DataError, match=r"unknown fields \['vocab'\]"):
        task.replace(vocab=other)
    with pytest.raises(DataError, match="non-empty name"):  # validated like a new task
        task.replace(name="")


def test_get_downstream_task_hints(registered):
    from t5pre.data.registry import get_downstream_task
    from t5pre.errors import ConfigError

    with pytest.raises(ConfigError, match="no task given"):
        get_downstream_task("")
    with pytest.raises(DataError, match="--module PYTHON_MODULE"):
        get_downstream_task("no_such_task_xyz")
