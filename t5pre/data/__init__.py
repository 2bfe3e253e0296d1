"""t5pre.data: vocabulary, data sources, the task registry, preprocessors, the default corpus.

Nothing here imports TensorFlow at import time; the modules import it when a dataset is built.

* :mod:`t5pre.data.vocabulary`      ``SentencePieceVocabulary``, ``train_vocabulary``,
  ``default_vocabulary``
* :mod:`t5pre.data.sources`         ``TextLineSource``, ``JSONLSource``, ``TFRecordSource``,
  ``TFDSSource``, ``FunctionSource``
* :mod:`t5pre.data.registry`        ``Feature``, ``Task``, ``TaskRegistry``, ``Mixture``,
  ``MixtureRegistry``, ``get_task``, ``get_mixture``, ``PreprocessContext``
* :mod:`t5pre.data.preprocessors`   ``rekey``, ``tokenize``, ``append_eos_after_trim``, ``trim``
* :mod:`t5pre.data.default_corpus`  docstrings of the installed Python as an embedded corpus
* :mod:`t5pre.data.denoising`       ``random_spans_helper``, span corruption, prefix-LM, i.i.d., UL2
* :mod:`t5pre.data.chunking`        concatenate documents and cut exact-length chunks
* :mod:`t5pre.data.feature_converter` ``EncDecFeatureConverter`` (model features, packing)
* :mod:`t5pre.data.cache`           ``build_cache``/``open_cache``: random-access token shards
* :mod:`t5pre.data.random_access`   global example index -> model features, numpy only
* :mod:`t5pre.data.index_sampler`   seeded per-pass permutation, exact elastic sharding
* :mod:`t5pre.data.denoising_numpy` the objectives without TensorFlow
* :mod:`t5pre.data.mixing`          ``rate_num_examples`` (mixture rates by size, temperature)
"""

from t5pre.data.registry import (  # noqa: F401
    Feature,
    Mixture,
    MixtureRegistry,
    PreprocessContext,
    Task,
    TaskRegistry,
    get_mixture,
    get_task,
    get_task_or_mixture,
)
from t5pre.data.sources import (  # noqa: F401
    DataSource,
    FunctionSource,
    JSONLSource,
    TextLineSource,
    TFDSSource,
    TFRecordSource,
    data_errors,
)
from t5pre.data.vocabulary import (  # noqa: F401
    SentencePieceVocabulary,
    default_vocabulary,
    load_vocabulary,
    train_vocabulary,
)
from t5pre.data.denoising import random_spans_helper  # noqa: F401,E402
from t5pre.data.feature_converter import EncDecFeatureConverter  # noqa: F401,E402
