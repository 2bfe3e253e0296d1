"""t5pre: T5-style denoising pretraining and fine-tuning of encoder-decoder models on Keras 3.

The layout follows the flow of the work:

* ``t5pre.data``        vocabulary, sources, task registry, denoising objectives, packing
* ``t5pre.models``      the T5.1.1 encoder-decoder, loss, decoding, checkpoint conversion
* ``t5pre.training``    configs, optimizers, the distributed training loop, checkpoints
* ``t5pre.evaluation``  metrics (ROUGE, SQuAD), evaluation and prediction
* ``t5pre.finetune``    fine-tuning: the training loop + an init model + decoded evaluation
* ``t5pre.export``      SavedModel export (strings in, strings out)
* ``t5pre.tasks``       the registered task catalogue (``tasks/`` in the repository)

Heavy modules (TensorFlow) are imported lazily, so ``import t5pre`` and ``t5pre --help`` are fast.
"""

from t5pre.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "TaskRegistry": "t5pre.data.registry",
    "MixtureRegistry": "t5pre.data.registry",
    "Task": "t5pre.data.registry",
    "Mixture": "t5pre.data.registry",
    "Feature": "t5pre.data.registry",
    "get_task": "t5pre.data.registry",
    "get_mixture": "t5pre.data.registry",
    "SentencePieceVocabulary": "t5pre.data.vocabulary",
}

__all__ = ["__version__", *sorted(_EXPORTS)]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
