"""t5pre: T5-style denoising pretraining and fine-tuning of encoder-decoder models on Keras 3.

The layout follows the flow of the work:

* ``t5pre.data``        vocabulary, sources, task registry, denoising objectives, packing
* ``t5pre.models``      the T5.1.1 encoder-decoder, loss, decoding, checkpoint conversion
* ``t5pre.training``    configs, optimizers, the distributed training loop, checkpoints
* ``t5pre.evaluation``  metrics (ROUGE, SQuAD), evaluation and prediction
* ``t5pre.export``      SavedModel export (strings in, strings out)
* ``t5pre.tasks``       the registered task catalogue (``tasks/`` in the repository)

Heavy modules (TensorFlow) are imported lazily, so ``import t5pre`` and ``t5pre --help`` are fast.
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "TaskRegistry": "t5pre.data.registry",
    "MixtureRegistry": "t5pre.data.registry",
    "Task": "t5pre.data.registry",
    "Mixture": "t5pre.data.registry",
    "Feature": "t5pre.data.registry",
    "get_task": "t5pre.data.registry",
    "get_mixture": "t5pre.data.registry",
    "SentencePieceVocabulary": "t5pre.data.vocabulary",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 't5pre' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
