"""Adafactor as T5/t5x train with it (Shazeer & Stern 2018), memory-lean: a Keras 3 optimizer.

Keras' own ``keras.optimizers.Adafactor`` keeps a full-size ``velocity`` beside its row/column
statistics for every variable, so its state is as large as the parameters and the memory that
Adafactor is chosen for is spent anyway. This one keeps, per variable:

* a **factored** second moment -- a row statistic (``shape[:-1]``) and a column statistic
  (``shape[:-2] + shape[-1:]``) -- when the variable has rank >= 2 and both of its last two
  dimensions are >= ``min_dim_size_to_factor`` (128, T5's): the weight matrices and embeddings;
* a **full** second moment otherwise (layer-norm scales, relative-position tables);
* a first moment only when ``beta_1`` is set (T5: none).

The update of a variable ``w`` with gradient ``g`` at step ``t`` (1-based)::

    beta2_t = 1 - t ** -decay_rate                    # 0 at t = 1: v starts at g^2
    G       = g^2 + epsilon_1
    factored:   R = beta2_t R + (1 - beta2_t) mean(G, -1)       # row statistic
                C = beta2_t C + (1 - beta2_t) mean(G, -2)       # column statistic
                v_hat = R C / mean(R)                           # outer product, rank 1
    full:       V = beta2_t V + (1 - beta2_t) G ;  v_hat = V
    u = g / sqrt(v_hat)
    u = u / max(1, RMS(u) / clipping_threshold)                # update clipping
    step size = lr * max(epsilon_2, RMS(w))  (multiply_by_parameter_scale) else lr
    u = step size * u ;  with beta_1: M = beta_1 M + (1 - beta_1) u ; u = M
    w = w - u

The learning rate and ``iterations`` are Keras' own (a schedule is called with the number of
updates done, like every Keras optimizer); optional decoupled weight decay is Keras' too
(``w -= w * weight_decay * lr`` before the update). Statistics are float32 whatever the
variable's dtype. Only ``keras.ops`` is used: it runs on the TensorFlow backend (including inside
a ``tf.distribute`` replica step) and on JAX (``stateless_apply``).

One difference from t5x: our attention kernels are fused (``qkv_kernel`` [d, 3*H*d_kv]), so a
row statistic averages over queries, keys and values together where t5x keeps one per projection.
"""

from __future__ import annotations

import keras
from keras import ops

from t5pre.training.optimizer_state import MIN_DIM_SIZE_TO_FACTOR, is_factored


def _dense(gradient):
    """TensorFlow hands embedding gradients over as ``IndexedSlices``; the statistics need them
    dense (the trainer densifies anyway; a plain ``tf.GradientTape`` loop does not)."""
    if type(gradient).__name__ == "IndexedSlices":
        import tensorflow as tf

        return tf.convert_to_tensor(gradient)
    return gradient


def _rms(x):
    return ops.sqrt(ops.mean(ops.square(x)))


@keras.saving.register_keras_serializable(package="t5pre")
class Adafactor(keras.optimizers.Optimizer):
    """T5/t5x Adafactor (see the module docstring for the update).

    Args:
        learning_rate: float or ``LearningRateSchedule`` (T5: ``InverseSquareRootSchedule``).
        decay_rate: exponent of the second-moment decay ``1 - t^-decay_rate`` (0.8).
        beta_1: first-moment decay; ``None`` keeps no first moment (T5's default).
        clipping_threshold: update clipping at this RMS; ``None`` disables it (1.0).
        multiply_by_parameter_scale: scale the step by ``max(epsilon_2, RMS(w))`` (True).
        epsilon_1: added to the squared gradient (1e-30).
        epsilon_2: lower bound of the parameter scale (1e-3).
        min_dim_size_to_factor: factor variables whose last two dimensions are both at least
            this (128).
        weight_decay: Keras' decoupled weight decay (``None``: none).
    """

    def __init__(self, learning_rate=0.01, decay_rate=0.8, beta_1=None, clipping_threshold=1.0,
                 multiply_by_parameter_scale=True, epsilon_1=1e-30, epsilon_2=1e-3,
                 min_dim_size_to_factor=MIN_DIM_SIZE_TO_FACTOR, weight_decay=None,
                 name="adafactor", **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, name=name,
                         **kwargs)
        if decay_rate <= 0:
            raise ValueError(f"Adafactor: decay_rate must be > 0, got {decay_rate!r}")
        if beta_1 is not None and not 0.0 <= beta_1 <= 1.0:
            raise ValueError(f"Adafactor: beta_1 must be in [0, 1] or None, got {beta_1!r}")
        if clipping_threshold is not None and clipping_threshold <= 0:
            raise ValueError(
                f"Adafactor: clipping_threshold must be > 0 or None, got {clipping_threshold!r}")
        if int(min_dim_size_to_factor) < 1:
            raise ValueError("Adafactor: min_dim_size_to_factor must be >= 1, got "
                             f"{min_dim_size_to_factor!r}")
        self.decay_rate = float(decay_rate)
        self.beta_1 = None if beta_1 is None else float(beta_1)
        self.clipping_threshold = None if clipping_threshold is None else float(clipping_threshold)
        self.multiply_by_parameter_scale = bool(multiply_by_parameter_scale)
        self.epsilon_1 = float(epsilon_1)
        self.epsilon_2 = float(epsilon_2)
        self.min_dim_size_to_factor = int(min_dim_size_to_factor)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        # One entry per variable in each list; None where the variable has no such state.
        self._v_row, self._v_col, self._v, self._m = [], [], [], []
        for var in var_list:
            if self._overwrite_variable_with_gradient(var):
                for slots in (self._v_row, self._v_col, self._v, self._m):
                    slots.append(None)
                continue
            shape = tuple(var.shape)
            prefix = var.path.replace("/", "_")
            if is_factored(shape, self.min_dim_size_to_factor):
                self._v_row.append(self.add_variable(shape[:-1], dtype="float32",
                                                     name=f"{prefix}_v_row"))
                self._v_col.append(self.add_variable(shape[:-2] + shape[-1:], dtype="float32",
                                                     name=f"{prefix}_v_col"))
                self._v.append(None)
            else:
                self._v_row.append(None)
                self._v_col.append(None)
                self._v.append(self.add_variable(shape, dtype="float32", name=f"{prefix}_v"))
            self._m.append(self.add_variable(shape, dtype="float32", name=f"{prefix}_m")
                           if self.beta_1 else None)

    def update_step(self, gradient, variable, learning_rate):
        i = self._get_variable_index(variable)
        g = ops.cast(_dense(gradient), "float32")
        step = ops.cast(self.iterations + 1, "float32")
        beta2 = 1.0 - ops.power(step, -self.decay_rate)
        g2 = ops.square(g) + self.epsilon_1
        if self._v[i] is None:
            row, col = self._v_row[i], self._v_col[i]
            new_row = beta2 * row + (1.0 - beta2) * ops.mean(g2, axis=-1)
            new_col = beta2 * col + (1.0 - beta2) * ops.mean(g2, axis=-2)
            self.assign(row, new_row)
            self.assign(col, new_col)
            row_factor = ops.rsqrt(new_row / ops.mean(new_row, axis=-1, keepdims=True))
            update = (g * ops.expand_dims(row_factor, -1)
                      * ops.expand_dims(ops.rsqrt(new_col), -2))
        else:
            new_v = beta2 * self._v[i] + (1.0 - beta2) * g2
            self.assign(self._v[i], new_v)
            update = g * ops.rsqrt(new_v)
        if self.clipping_threshold is not None:
            update = update / ops.maximum(1.0, _rms(update) / self.clipping_threshold)
        step_size = ops.cast(learning_rate, "float32")
        if self.multiply_by_parameter_scale:
            step_size = step_size * ops.maximum(self.epsilon_2,
                                                _rms(ops.cast(variable, "float32")))
        update = step_size * update
        if self._m[i] is not None:
            update = self.beta_1 * self._m[i] + (1.0 - self.beta_1) * update
            self.assign(self._m[i], update)
        self.assign_sub(variable, ops.cast(update, variable.dtype))

    def get_config(self):
        config = super().get_config()
        config.update({
            "decay_rate": self.decay_rate,
            "beta_1": self.beta_1,
            "clipping_threshold": self.clipping_threshold,
            "multiply_by_parameter_scale": self.multiply_by_parameter_scale,
            "epsilon_1": self.epsilon_1,
            "epsilon_2": self.epsilon_2,
            "min_dim_size_to_factor": self.min_dim_size_to_factor,
        })
        return config
