"""t5pre.training: run configs, optimizers, the tf.distribute training loop, checkpoints, logs.

* ``config``        ``load_config(path, overrides)`` -> validated, resolved ``RunConfig``
* ``schedules``     T5's inverse-square-root, warmup + cosine/linear/constant
* ``optimizers``    Adafactor (t5x recipe) / AdamW (nanoT5), loss scaling for float16
* ``strategy``      ``create_strategy(auto|one_device|mirrored|multi_worker|tpu)``
* ``data``          sharded, step-addressable input pipelines (exact resume)
* ``trainer``       ``Trainer(config, model_dir).train()`` -- used by pretrain and finetune
* ``checkpointing`` atomic checkpoints, chief-only writes
* ``summaries``     TensorBoard scalars/text and the progress line
* ``model_dir``     ``load_model(DIR, checkpoint=None) -> (model, vocabulary, run_config)``

Imports are lazy: ``from t5pre.training import Trainer`` pulls in TensorFlow only then.
"""

import importlib

_LAZY = {
    "RunConfig": "t5pre.training.config",
    "load_config": "t5pre.training.config",
    "Trainer": "t5pre.training.trainer",
    "TrainingDivergedError": "t5pre.training.trainer",
    "create_strategy": "t5pre.training.strategy",
    "load_model": "t5pre.training.model_dir",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 't5pre.training' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
