"""Input pipelines for training and evaluation under tf.distribute.

**Data position and resume.** We make the pipeline *step-addressable* rather than checkpointing
the tf.data iterator: a task's dataset is deterministic for a fixed seed and shard (the data
contract), so the position is just the number of examples (after feature conversion and
packing) each input pipeline has consumed, and resuming rebuilds the pipeline and ``skip``s that
many. We chose this over iterator checkpoints because

* it works with every source and op (iterator checkpoints refuse ``py_function``/generator
  sources and can hold whole shuffle buffers -- megabytes per worker per checkpoint);
* it is correct under MultiWorkerMirroredStrategy, where only the chief's checkpoint survives:
  every worker's position follows from the (global) step, so the chief's checkpoint is enough;
* the resumed stream is *identical* to the uninterrupted one (tested), not merely similar.

The cost: skipping re-runs preprocessing for the skipped examples (at the pipeline's speed;
``benchmarks/pretrain_throughput.py`` measures it, so a resume at step S costs about
``S * batch / pipeline_examples_per_sec`` seconds). Changing the number of input pipelines
(workers) between runs changes the shards, so the position is then approximate (a warning says so).
"""

from __future__ import annotations

from typing import Callable

from t5pre.errors import ConfigError, T5preError


from t5pre.lazy import tensorflow as _tf  # noqa: E402


def get_task_or_mixture(data_cfg):
    """The registered task or mixture a ``DataSection`` names (ConfigError if unknown), or
    the task made of its ``data.files`` (:func:`t5pre.tasks.files.files_task`)."""
    import t5pre

    if getattr(data_cfg, "files", None):
        from t5pre.tasks.files import files_task

        return files_task(data_cfg)

    if data_cfg.task:
        key, lookup = "data.task", t5pre.get_task
    else:
        key, lookup = "data.mixture", t5pre.get_mixture
    name = data_cfg.task or data_cfg.mixture
    try:
        return lookup(name)
    except T5preError as e:
        raise ConfigError(f"{key} = {name!r}: {e}") from None
    except (KeyError, ValueError, LookupError) as e:
        msg = e.args[0] if e.args else e
        raise ConfigError(f"{key} = {name!r}: {msg}") from None


def default_feature_converter(pack: bool):
    from t5pre.data.feature_converter import EncDecFeatureConverter
    return EncDecFeatureConverter(pack=pack)


def _model_features(example):
    """Drops raw-text features (``*_pretokenized``): the model takes numbers only."""
    tf = _tf()
    return {k: v for k, v in example.items() if v.dtype != tf.string}


def make_dataset_fn(source, sequence_length: dict, *, split: str, global_batch_size: int,
                    pack: bool, shuffle: bool, seed: int, num_epochs=None,
                    start_examples: int = 0, take_batches: int | None = None,
                    feature_converter: Callable | None = None, cache=None) -> Callable:
    """A ``dataset_fn(input_context)`` for ``strategy.distribute_datasets_from_function``.

    Each input pipeline (one per worker) reads its own shard ``(pipeline id, pipelines)`` of
    ``source`` (a task or mixture), converts it to model features, skips the examples it
    consumed before ``start_examples`` (a GLOBAL count, divided over the pipelines) and batches
    to the per-replica batch size.

    With ``cache`` (a directory built by ``t5pre data cache``, or an opened
    :class:`~t5pre.data.cache.TokenCache`) the random-access pipeline is used instead: global
    example ``start_examples`` is reached in O(1), exactly for any number of pipelines
    (:mod:`t5pre.data.random_access`; one example per row, ``pack`` only adds segment fields).
    """
    tf = _tf()
    if cache is not None:
        return _cached_dataset_fn(source, sequence_length, cache, split=split,
                                  global_batch_size=global_batch_size, pack=pack, shuffle=shuffle,
                                  seed=seed, num_epochs=num_epochs, start_examples=start_examples,
                                  take_batches=take_batches, feature_converter=feature_converter)
    converter = feature_converter or default_feature_converter(pack)

    def dataset_fn(input_context=None):
        if input_context is None:
            input_context = tf.distribute.InputContext()
        pipelines = input_context.num_input_pipelines
        shard = (input_context.input_pipeline_id, pipelines) if pipelines > 1 else None
        ds = source.get_dataset(sequence_length=dict(sequence_length), split=split,
                                shuffle=shuffle, seed=seed, shard_info=shard,
                                num_epochs=num_epochs)
        ds = converter(ds, dict(sequence_length))
        ds = ds.map(_model_features, num_parallel_calls=tf.data.AUTOTUNE)
        skip = start_examples // pipelines
        if skip:
            ds = ds.skip(skip)
        ds = ds.batch(input_context.get_per_replica_batch_size(global_batch_size),
                      drop_remainder=True)
        if take_batches is not None:
            ds = ds.take(take_batches)
        return ds.prefetch(tf.data.AUTOTUNE)

    return dataset_fn


def _cached_dataset_fn(source, sequence_length, cache, *, split, global_batch_size, pack, shuffle,
                       seed, num_epochs, start_examples, take_batches, feature_converter):
    from t5pre.data.cache import TokenCache, open_cache
    from t5pre.data.feature_converter import EncDecFeatureConverter
    from t5pre.data.random_access import RandomAccessTask, tf_dataset

    if not hasattr(source, "preprocessors"):
        raise ConfigError(f"data.cache_dir: only a task can be read from a cache, "
                          f"{getattr(source, 'name', source)!r} is a mixture")
    if feature_converter is not None and not isinstance(feature_converter, EncDecFeatureConverter):
        raise ConfigError("data.cache_dir: the cached pipeline converts features itself; a custom "
                          f"feature converter ({type(feature_converter).__name__}) is not supported")
    if num_epochs is not None:
        raise ConfigError("data.cache_dir: the cached pipeline streams forever (num_epochs=None)")
    if not isinstance(cache, TokenCache):
        cache = open_cache(str(cache), task=source)
    recorded = cache.manifest.get("sequence_length")
    if recorded and dict(recorded) != dict(sequence_length):
        raise ConfigError(f"cache {cache.path}: built at sequence_length {recorded}, the run uses "
                          f"{dict(sequence_length)}; rebuild it at these lengths")
    pipeline = RandomAccessTask(source, cache.split(split), sequence_length, split, seed=seed,
                                shuffle=shuffle)
    if feature_converter is not None:
        pack = feature_converter.pack

    def dataset_fn(input_context=None):
        return tf_dataset(pipeline, start_examples=start_examples,
                          global_batch_size=global_batch_size, input_context=input_context,
                          pack=pack, take_batches=take_batches)

    return dataset_fn


def feature_spec(dataset_fn) -> dict:
    """The per-replica ``TensorSpec``s a dataset_fn yields (builds the pipeline, reads nothing)."""
    return dataset_fn(_tf().distribute.InputContext()).element_spec


def zeros_like_spec(spec: dict, batch_size: int = 1) -> dict:
    """A dummy batch matching ``spec`` (used to build a model's variables)."""
    tf = _tf()
    return {k: tf.zeros([batch_size] + [d or 1 for d in s.shape[1:]], s.dtype)
            for k, s in spec.items()}
