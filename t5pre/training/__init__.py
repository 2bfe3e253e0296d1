"""t5pre.training: run configs, optimizers, the one training loop, checkpoints, logs.

* ``config``        ``load_config(path, overrides)`` / ``load_finetune_config`` -> validated,
  resolved ``RunConfig`` (one schema for pretraining and fine-tuning)
* ``schedules``     T5's inverse-square-root, warmup + cosine/linear/constant
* ``optimizers``    Adafactor (T5/t5x, factored) / AdamW (nanoT5), loss scaling for float16
* ``strategy``      ``create_strategy(auto|one_device|mirrored|multi_worker|tpu)``
* ``data``          sharded, step-addressable input pipelines (exact resume)
* ``trainer``       ``Trainer(config, model_dir, init=..., actions=...).train()``: the one loop
* ``step_tf``       the TensorFlow backend (tf.distribute step); ``step_jax`` the JAX one
* ``actions``       what runs at each evaluation: TextSamples, BestCheckpoint
* ``signals``       SIGTERM / Ctrl-C -> checkpoint -> ``TrainingInterrupted``
* ``summaries``     TensorBoard scalars/text/HParams and the progress line

Fine-tuning (the Trainer + an init model + decoded evaluation) is :mod:`t5pre.finetune`; the
model directory's reader is :mod:`t5pre.models.store`.

Imports are lazy: ``from t5pre.training import Trainer`` pulls in TensorFlow only then.
"""

from t5pre.lazy import lazy_exports

_EXPORTS = {
    "RunConfig": "t5pre.training.config",
    "load_config": "t5pre.training.config",
    "load_finetune_config": "t5pre.training.config",
    "Trainer": "t5pre.training.trainer",
    "TrainingDivergedError": "t5pre.training.trainer",
    "TrainingInterrupted": "t5pre.training.signals",
    "create_strategy": "t5pre.training.strategy",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
