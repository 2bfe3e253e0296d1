"""Standard preprocessors: ``fn(dataset, ctx) -> dataset`` (ctx: a PreprocessContext).

A task's preprocessor list usually reads::

    [rekey({"inputs": "document", "targets": "summary"}),   # source fields -> feature names
     tokenize,                                              # text -> ids, keeps *_pretokenized
     <task-specific ones, e.g. span corruption>,
     append_eos_after_trim]                                 # trim to length-1, then EOS

Parameterised preprocessors are factories (``rekey(mapping)``) or take keyword arguments after
``ctx`` (use ``functools.partial``). All maps run with ``num_parallel_calls=AUTOTUNE``;
``tf.data`` keeps their order, so pipelines stay deterministic.
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping

from t5pre.errors import DataError

AUTOTUNE = -1  # tf.data.AUTOTUNE, without importing TensorFlow at module import


from t5pre.lazy import tensorflow as _tf  # noqa: E402


def _spec_keys(dataset, ctx, name):
    spec = dataset.element_spec
    if not isinstance(spec, dict):
        where = f"task {ctx.task_name!r}: " if ctx and ctx.task_name else ""
        raise DataError(f"{where}{name}: examples must be dicts, got {spec}")
    return spec


def rekey(key_map: Mapping[str, str | None]) -> Callable:
    """Preprocessor renaming features: output ``{new: example[old]}``; ``old=None`` gives an
    empty string (e.g. an empty ``inputs`` for prefix-free LM). Other keys are dropped."""
    key_map = dict(key_map)

    def rekey_preprocessor(dataset, ctx=None):
        tf = _tf()
        spec = _spec_keys(dataset, ctx, "rekey")
        missing = [old for old in key_map.values() if old is not None and old not in spec]
        if missing:
            where = f"task {ctx.task_name!r}: " if ctx and ctx.task_name else ""
            raise DataError(f"{where}rekey: the source has no field {missing[0]!r} (it has {sorted(spec)})")

        def fn(example):
            return {new: (example[old] if old is not None else tf.constant("")) for new, old in key_map.items()}

        return dataset.map(fn, num_parallel_calls=AUTOTUNE)

    rekey_preprocessor.__name__ = f"rekey({key_map})"
    return rekey_preprocessor


def tokenize(dataset, ctx, copy_pretokenized: bool = True, with_eos: bool = False):
    """Tokenize the text features named in ``ctx.output_features`` with each feature's vocabulary.

    Keeps the text as ``<key>_pretokenized`` (evaluation and ``t5pre tasks show`` use it). With
    ``with_eos`` EOS is appended here (usually left to :func:`append_eos_after_trim` instead).
    A required feature missing from the examples is a DataError naming the task.
    """
    tf = _tf()
    spec = _spec_keys(dataset, ctx, "tokenize")
    to_tokenize = {}
    for key, feature in ctx.output_features.items():
        if key not in spec:
            if feature.required:
                raise DataError(
                    f"task {ctx.task_name!r}: tokenize: examples have no {key!r} feature "
                    f"(they have {sorted(spec)}); rekey the source fields first"
                )
            continue
        if spec[key].dtype == tf.string:
            to_tokenize[key] = feature

    def fn(example):
        example = dict(example)
        for key, feature in to_tokenize.items():
            text = example[key]
            ids = feature.vocabulary.encode_tf(text)
            if isinstance(ids, tf.RaggedTensor):  # a 1-D field (list of texts): join the pieces
                ids = ids.flat_values
            if with_eos and feature.add_eos:
                ids = tf.concat([ids, [feature.vocabulary.eos_id]], axis=0)
            if copy_pretokenized:
                example[f"{key}_pretokenized"] = text
            example[key] = tf.cast(ids, tf.int32)
        return example

    return dataset.map(fn, num_parallel_calls=AUTOTUNE)


def tokenize_and_append_eos(dataset, ctx, copy_pretokenized: bool = True):
    """:func:`tokenize` with EOS appended (no trimming)."""
    return tokenize(dataset, ctx, copy_pretokenized=copy_pretokenized, with_eos=True)


def _lengths_for(ctx, key):
    if not ctx.sequence_length:
        return None
    return ctx.sequence_length.get(key)


def append_eos(dataset, ctx):
    """Append EOS to every output feature with ``add_eos`` (no trimming)."""
    return _append_eos(dataset, ctx, trim_first=False)


def append_eos_after_trim(dataset, ctx):
    """Trim each ``add_eos`` feature to ``sequence_length - 1`` and append EOS, so the result
    fits ``sequence_length`` and always ends in EOS; other features are left alone."""
    return _append_eos(dataset, ctx, trim_first=True)


def _append_eos(dataset, ctx, trim_first):
    tf = _tf()
    spec = _spec_keys(dataset, ctx, "append_eos")
    plan = {}
    for key, feature in ctx.output_features.items():
        if key in spec and feature.add_eos:
            length = _lengths_for(ctx, key) if trim_first else None
            if length is not None and length < 1:
                raise DataError(f"task {ctx.task_name!r}: sequence_length[{key!r}] must be >= 1, got {length}")
            plan[key] = (feature.vocabulary.eos_id, length)

    def fn(example):
        example = dict(example)
        for key, (eos, length) in plan.items():
            ids = example[key]
            if length is not None:
                ids = ids[: length - 1]
            example[key] = tf.concat([ids, tf.constant([eos], dtype=ids.dtype)], axis=0)
        return example

    return dataset.map(fn, num_parallel_calls=AUTOTUNE)


def trim(dataset, ctx):
    """Trim every output feature to its ``sequence_length`` (no EOS handling)."""
    spec = _spec_keys(dataset, ctx, "trim")
    lengths = {k: _lengths_for(ctx, k) for k in ctx.output_features if k in spec and _lengths_for(ctx, k)}

    def fn(example):
        example = dict(example)
        for key, length in lengths.items():
            example[key] = example[key][:length]
        return example

    return dataset.map(fn, num_parallel_calls=AUTOTUNE)


def filter_empty(keys=("inputs", "targets")) -> Callable:
    """Preprocessor dropping examples whose named text (or id) features are empty."""
    keys = tuple(keys)

    def filter_empty_preprocessor(dataset, ctx=None):
        tf = _tf()
        spec = _spec_keys(dataset, ctx, "filter_empty")
        present = [k for k in keys if k in spec]

        def keep(example):
            ok = tf.constant(True)
            for key in present:
                value = example[key]
                if value.dtype == tf.string and value.shape.rank == 0:
                    ok = tf.logical_and(ok, tf.strings.length(tf.strings.strip(value)) > 0)
                else:
                    ok = tf.logical_and(ok, tf.size(value) > 0)
            return ok

        return dataset.filter(keep)

    filter_empty_preprocessor.__name__ = f"filter_empty({keys})"
    return filter_empty_preprocessor


def map_with_seeds(dataset, fn, seed: int, num_parallel_calls=AUTOTUNE):
    """``dataset.map(lambda ex: fn(ex, example_seed))`` where ``example_seed`` is an int32 [2]
    tensor, distinct per example and reproducible from ``seed`` (for ``tf.random.stateless_*``).

    The seeds come from a counter, not from the example content, so identical texts still get
    different noise; the same ``seed`` and example position always give the same seed.
    """
    tf = _tf()
    seeds = tf.data.Dataset.random(seed=seed).batch(2, drop_remainder=True)
    paired = tf.data.Dataset.zip((dataset, seeds))

    def call(example, pair):
        return fn(example, tf.cast(pair % 2147483647, tf.int32))

    return paired.map(call, num_parallel_calls=num_parallel_calls)


def preprocessor(fn: Callable | None = None, **kwargs):
    """``functools.partial`` that keeps a readable ``__name__`` for ``t5pre tasks list``."""
    if fn is None:
        return functools.partial(preprocessor, **kwargs)
    bound = functools.partial(fn, **kwargs)
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    bound.__name__ = f"{getattr(fn, '__name__', 'preprocessor')}({args})"
    return bound
