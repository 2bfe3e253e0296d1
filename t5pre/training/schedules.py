"""Learning-rate schedules (Keras ``LearningRateSchedule``s, serialisable, step = updates done).

* ``InverseSquareRootSchedule``: T5/t5x's ``lr = scale / sqrt(max(step, warmup))`` -- flat at
  ``scale/sqrt(warmup)`` (0.01 for 10k) and then decaying. It does not depend on the total number
  of steps, which is why a finished run can simply be continued with a larger ``--steps``.
* ``WarmupCosineSchedule``: linear warmup to a peak, then cosine decay to a final value at
  ``decay_steps`` and flat afterwards (nanoT5's AdamW recipe).
* ``WarmupLinearSchedule`` / ``WarmupConstantSchedule``: the same warmup with linear decay / none
  (T5 fine-tunes at a constant rate).
"""

import math

import keras
from keras import ops


def _step(step):
    return ops.cast(step, "float32")


@keras.saving.register_keras_serializable(package="t5pre")
class InverseSquareRootSchedule(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, scale=1.0, warmup_steps=10000):
        self.scale = float(scale)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        return self.scale * ops.rsqrt(ops.maximum(_step(step), float(max(self.warmup_steps, 1))))

    def get_config(self):
        return {"scale": self.scale, "warmup_steps": self.warmup_steps}


class _Warmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup: step s (0-based) gets peak * (s+1)/warmup, so the first update is not 0."""

    def __init__(self, peak, warmup_steps=0, decay_steps=None, final_learning_rate=0.0):
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = int(decay_steps) if decay_steps is not None else None
        self.final_learning_rate = float(final_learning_rate)

    def _warm(self, s):
        if self.warmup_steps <= 0:
            return ops.ones_like(s)
        return ops.minimum(1.0, (s + 1.0) / float(self.warmup_steps))

    def _progress(self, s):
        """0 at the end of warmup, 1 at decay_steps, clipped to [0, 1]."""
        span = float(max((self.decay_steps or 1) - self.warmup_steps, 1))
        return ops.clip((s - float(self.warmup_steps)) / span, 0.0, 1.0)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps,
                "decay_steps": self.decay_steps,
                "final_learning_rate": self.final_learning_rate}


@keras.saving.register_keras_serializable(package="t5pre")
class WarmupCosineSchedule(_Warmup):
    def __call__(self, step):
        s = _step(step)
        cosine = 0.5 * (1.0 + ops.cos(math.pi * self._progress(s)))
        decayed = self.final_learning_rate + (self.peak - self.final_learning_rate) * cosine
        return ops.where(s < float(self.warmup_steps), self.peak * self._warm(s), decayed)


@keras.saving.register_keras_serializable(package="t5pre")
class WarmupLinearSchedule(_Warmup):
    def __call__(self, step):
        s = _step(step)
        decayed = self.peak + (self.final_learning_rate - self.peak) * self._progress(s)
        return ops.where(s < float(self.warmup_steps), self.peak * self._warm(s), decayed)


@keras.saving.register_keras_serializable(package="t5pre")
class WarmupConstantSchedule(_Warmup):
    def __call__(self, step):
        return self.peak * self._warm(_step(step))


def make_schedule(opt_cfg):
    """The schedule an ``OptimizerSection`` (resolved) asks for."""
    name = opt_cfg.schedule
    if name == "rsqrt":
        return InverseSquareRootSchedule(opt_cfg.learning_rate, opt_cfg.warmup_steps)
    kwargs = dict(peak=opt_cfg.learning_rate, warmup_steps=opt_cfg.warmup_steps,
                  decay_steps=opt_cfg.decay_steps,
                  final_learning_rate=opt_cfg.final_learning_rate)
    if name == "cosine":
        return WarmupCosineSchedule(**kwargs)
    if name == "linear":
        return WarmupLinearSchedule(**kwargs)
    if name == "constant":
        return WarmupConstantSchedule(**kwargs)
    raise ValueError(f"unresolved schedule {name!r}")
