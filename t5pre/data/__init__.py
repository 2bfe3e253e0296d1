"""t5pre.data: vocabulary, data sources, the task registry, preprocessors, the default corpus.

Importing the package imports none of its modules (each name below is imported on first use,
see :mod:`t5pre.lazy`); the modules import TensorFlow only when a dataset is built.

* :mod:`t5pre.data.vocabulary`      ``SentencePieceVocabulary``, ``train_vocabulary``,
  ``default_vocabulary``
* :mod:`t5pre.data.sources`         ``TextLineSource``, ``JSONLSource``, ``TFRecordSource``,
  ``TFDSSource``, ``FunctionSource``
* :mod:`t5pre.data.registry`        ``DatasetProvider`` (what ``Task`` and ``Mixture`` share),
  ``Feature``, ``Task`` (``Task.replace``), ``TaskRegistry``, ``Mixture``, ``MixtureRegistry``,
  ``get_task``, ``get_mixture``, ``get_downstream_task``, ``PreprocessContext``
* :mod:`t5pre.data.task_vocabulary` ``check_vocabulary``, ``task_with_vocabulary``: a task over
  a model's vocabulary
* :mod:`t5pre.data.preprocessors`   ``rekey``, ``tokenize``, ``append_eos_after_trim``, ``trim``
* :mod:`t5pre.data.default_corpus`  docstrings of the installed Python as an embedded corpus
* :mod:`t5pre.data.denoising`       ``random_spans_helper``, span corruption, prefix-LM, i.i.d., UL2
* :mod:`t5pre.data.chunking`        concatenate documents and cut exact-length chunks
* :mod:`t5pre.data.feature_converter` ``EncDecFeatureConverter`` (model features, packing)
* :mod:`t5pre.data.cache`           ``build_cache``/``open_cache``: random-access token shards
* :mod:`t5pre.data.build_progress`  progress lines of a cache build, across its workers
* :mod:`t5pre.data.random_access`   global example index -> model features, numpy only
* :mod:`t5pre.data.index_sampler`   seeded per-pass permutation, exact elastic sharding
* :mod:`t5pre.data.denoising_numpy` the objectives without TensorFlow
* :mod:`t5pre.data.mixing`          ``rate_num_examples`` (mixture rates by size, temperature)
"""

from t5pre.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["DatasetProvider", "Feature", "Mixture", "MixtureRegistry",
                     "PreprocessContext", "Task", "TaskRegistry", "get_downstream_task",
                     "get_mixture", "get_task", "get_task_or_mixture"], "t5pre.data.registry"),
    **dict.fromkeys(["DataSource", "FunctionSource", "JSONLSource", "TextLineSource",
                     "TFDSSource", "TFRecordSource", "data_errors"], "t5pre.data.sources"),
    **dict.fromkeys(["SentencePieceVocabulary", "default_vocabulary", "load_vocabulary",
                     "train_vocabulary"], "t5pre.data.vocabulary"),
    **dict.fromkeys(["check_vocabulary", "task_with_vocabulary"], "t5pre.data.task_vocabulary"),
    "random_spans_helper": "t5pre.data.denoising",
    "EncDecFeatureConverter": "t5pre.data.feature_converter",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
