"""Optimizers for T5 training: Adafactor (t5x's T5.1.1 recipe) and AdamW (nanoT5's).

All are Keras 3 optimizers driven by a schedule from :mod:`t5pre.training.schedules`.
Gradient clipping is NOT configured on the optimizer: Keras clips before it all-reduces
gradients across replicas, i.e. per replica, which is wrong under tf.distribute. The trainer
all-reduces, measures the global norm and clips itself (see ``trainer.py``).

``adafactor`` is :class:`t5pre.training.adafactor.Adafactor`, T5/t5x's: no momentum (unless
``optimizer.momentum`` is set), second-moment decay ``1 - t^-0.8``, update clipping at RMS 1.0,
parameter-scaled step (``max(1e-3, RMS(w)) * lr``), row/column second moments for matrices whose
two dimensions are both >= 128 -- optimizer state ~0.003x the parameters for small/base.
``keras_adafactor`` is ``keras.optimizers.Adafactor`` (what ``adafactor`` was before): the same
maths but a full-size ``velocity`` per variable (state 1.005x the parameters) and, with a
schedule, the rate capped at ``1/sqrt(t)``. It is kept so that model directories trained with it
resume (their checkpoints hold its variables) and for the memory benchmark.
"""

import keras

from t5pre.training.adafactor import Adafactor
from t5pre.training.schedules import make_schedule


def make_optimizer(opt_cfg, precision: str = "float32"):
    """Builds the optimizer of a resolved ``OptimizerSection``; wraps it in a
    ``LossScaleOptimizer`` for ``mixed_float16`` (dynamic loss scaling)."""
    schedule = make_schedule(opt_cfg)
    if opt_cfg.name == "adafactor":
        optimizer = Adafactor(
            learning_rate=schedule,
            decay_rate=float(opt_cfg.decay_rate),
            beta_1=opt_cfg.momentum,
            clipping_threshold=opt_cfg.clipping_threshold,
            weight_decay=opt_cfg.weight_decay or None,
        )
    elif opt_cfg.name == "keras_adafactor":
        optimizer = keras.optimizers.Adafactor(
            learning_rate=schedule,
            beta_2_decay=-float(opt_cfg.decay_rate),
            clip_threshold=opt_cfg.clipping_threshold,
            relative_step=False,
            weight_decay=opt_cfg.weight_decay or None,
        )
    elif opt_cfg.name == "adamw":
        optimizer = keras.optimizers.AdamW(
            learning_rate=schedule,
            weight_decay=opt_cfg.weight_decay,
            beta_1=opt_cfg.beta_1,
            beta_2=opt_cfg.beta_2,
            epsilon=opt_cfg.epsilon,
        )
    else:  # the config validation makes this unreachable
        raise ValueError(f"unknown optimizer {opt_cfg.name!r}")
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def inner_optimizer(optimizer):
    """The optimizer doing the updates (unwraps a LossScaleOptimizer)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def current_learning_rate(optimizer) -> float:
    """The rate the next update will use, as a Python float."""
    opt = inner_optimizer(optimizer)
    lr = opt._learning_rate  # the schedule object (Keras keeps it here)
    if callable(lr):
        return float(keras.ops.convert_to_numpy(lr(opt.iterations)))
    return float(keras.ops.convert_to_numpy(opt.learning_rate))
