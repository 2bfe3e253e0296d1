"""t5pre.training: run configs, optimizers, the tf.distribute training loop, checkpoints, logs.

* ``config``        ``load_config(path, overrides)`` -> validated, resolved ``RunConfig``
* ``schedules``     T5's inverse-square-root, warmup + cosine/linear/constant
* ``optimizers``    Adafactor (t5x recipe) / AdamW (nanoT5), loss scaling for float16
* ``strategy``      ``create_strategy(auto|one_device|mirrored|multi_worker|tpu)``
* ``data``          sharded, step-addressable input pipelines (exact resume)
* ``trainer``       ``Trainer(config, model_dir).train()`` -- used by pretrain and finetune
* ``finetune``      ``finetune(run_config, model_dir, init=...)``: the trainer plus periodic
  evaluation and the best checkpoint (a module of the same name: import it from there)
* ``checkpointing`` atomic checkpoints, chief-only writes
* ``summaries``     TensorBoard scalars/text and the progress line
* ``model_dir``     ``load_model(DIR, checkpoint=None) -> (model, vocabulary, run_config)`` of a
  training directory (the readers are :mod:`t5pre.models.store`'s)

Imports are lazy: ``from t5pre.training import Trainer`` pulls in TensorFlow only then.
"""

from t5pre.lazy import lazy_exports

_EXPORTS = {
    "RunConfig": "t5pre.training.config",
    "load_config": "t5pre.training.config",
    "Trainer": "t5pre.training.trainer",
    "TrainingDivergedError": "t5pre.training.trainer",
    "create_strategy": "t5pre.training.strategy",
    "load_model": "t5pre.training.model_dir",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
