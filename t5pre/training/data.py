"""Input pipelines for training and evaluation: the random-access path, on both backends.

**One path.** Every training (and token-loss evaluation) batch is read by global example index
from a token store (:mod:`t5pre.data.random_access`): a task's split is tokenized once into a
token cache -- ``data.cache_dir`` when set, else the task's implicit cache, built on first use
and reused (:mod:`t5pre.data.implicit_cache`) -- and chunking, the denoising objective and the
model features run in numpy at read time. A mixture reads each task's store and interleaves
them by its rates (:class:`~t5pre.data.random_access.RandomAccessMixture`).

**Data position and resume.** The position is the GLOBAL number of examples consumed; step ``s``
reads examples ``[start + s*G, start + (s+1)*G)`` whatever the number of input pipelines, and
example ``i`` depends only on ``(seed, i)``, so a resume at any position costs what a start
costs (no skipping) and the stream after a resume is the uninterrupted one, exactly.
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
                    feature_converter: Callable | None = None, cache=None,
                    log: Callable | None = print) -> Callable:
    """A ``dataset_fn(input_context)`` for ``strategy.distribute_datasets_from_function`` (and
    the JAX backend's per-process pipeline).

    ``source`` (a task or mixture) is read through the random-access path (module doc): global
    example ``start_examples`` is reached in O(1), exactly for any number of pipelines. ``cache``
    is a token cache directory (or opened cache) of a task (``data.cache_dir``); without one each
    task's implicit cache is used (built once, progress lines to ``log``). With ``pack``, each
    row packs several examples (:func:`~t5pre.data.random_access.packing_factor`): the
    returned function's ``examples_per_row`` says how many a row's share of a step consumes
    and ``packing_note`` what it costs. The stream repeats forever (``num_epochs`` must be None).
    """
    from t5pre.data.feature_converter import EncDecFeatureConverter
    from t5pre.data.random_access import packing_factor, random_access_pipeline, tf_dataset

    if feature_converter is not None and not isinstance(feature_converter, EncDecFeatureConverter):
        raise ConfigError("the training pipeline converts features itself; a custom feature "
                          f"converter ({type(feature_converter).__name__}) is not supported")
    if num_epochs is not None:
        raise ConfigError("the training pipeline streams forever (num_epochs=None)")
    if feature_converter is not None:
        pack = feature_converter.pack
    pipeline = random_access_pipeline(source, sequence_length, split=split, seed=seed,
                                      shuffle=shuffle, cache=cache, log=log)
    factor, note = packing_factor(pipeline) if pack else (1, None)

    def dataset_fn(input_context=None):
        return tf_dataset(pipeline, start_examples=start_examples,
                          global_batch_size=global_batch_size, input_context=input_context,
                          pack=pack, take_batches=take_batches, examples_per_row=factor)

    dataset_fn.examples_per_row = factor
    dataset_fn.packing_note = note
    return dataset_fn


def feature_spec(dataset_fn) -> dict:
    """The per-replica ``TensorSpec``s a dataset_fn yields (builds the pipeline, reads nothing)."""
    return dataset_fn(_tf().distribute.InputContext()).element_spec


def zeros_like_spec(spec: dict, batch_size: int = 1) -> dict:
    """A dummy batch matching ``spec`` (used to build a model's variables)."""
    tf = _tf()
    return {k: tf.zeros([batch_size] + [d or 1 for d in s.shape[1:]], s.dtype)
            for k, s in spec.items()}
