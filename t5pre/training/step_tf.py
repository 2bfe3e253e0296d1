"""The TensorFlow backend of the Trainer: a ``tf.function`` step run under a tf.distribute strategy.

Why a custom step and not ``model.fit``: Keras 3's ``fit`` fails under
MultiWorkerMirroredStrategy (keras-team/keras#20585, #20329), its ``BackupAndRestore`` does not
save the data position, and Keras clips gradients per replica before the all-reduce. Here one
``tf.function`` step, run with ``strategy.run`` on every replica:

1. splits the replica's batch into ``grad_accum_steps`` micro-batches and sums their gradients;
   each micro-batch's loss is weighted by its share of the GLOBAL number of target tokens, so the
   summed gradient is exactly the gradient of the global token-mean loss whatever the number of
   replicas or micro-batches (MirroredStrategy on 2 devices == one device, tested);
2. all-reduces the gradients once (SUM), measures the global norm, clips by it;
3. applies them only when the loss and the norm are finite -- otherwise the update is skipped
   (optimizer state and ``iterations`` untouched) and the Trainer counts it.

Keras 3's TF optimizer would all-reduce (sum) the gradients a second time when applied in a
replica context; we switch that off on our optimizer instance (``_no_second_all_reduce``), and a
test checks that the multi-replica update equals the single-device one.

Every TensorFlow-specific patch of the training path lives in this module (the seeding both
backends share is :mod:`t5pre.training.seeding`); the Trainer talks to
it through the backend interface it shares with :mod:`t5pre.training.step_jax`:
``setup_numerics``, ``scope``, ``prepare``, ``train_step_fn``, ``eval_step_fn``, ``distribute``,
``sync``, ``describe`` and ``worker_lost_errors``.
"""

from __future__ import annotations

from t5pre.lazy import tensorflow as _tf
from t5pre.training.optimizers import inner_optimizer
from t5pre.training.seeding import seed_keras


def _no_second_all_reduce(optimizer) -> None:
    """We all-reduce gradients ourselves (global-norm clipping and the finite check need the
    reduced gradient), so the Keras optimizer must apply them as they are."""
    opt = inner_optimizer(optimizer)
    if hasattr(opt, "_all_reduce_sum_gradients"):
        opt._all_reduce_sum_gradients = lambda grads_and_vars: list(grads_and_vars)


def _apply_if_finite(optimizer, grads, variables, finite):
    """Applies ``grads`` only when ``finite`` (identical on all replicas); replica context.

    A ``tf.cond`` whose branch calls ``merge_call`` (as the optimizer does) is not allowed in a
    replica context, so -- like Keras' LossScaleOptimizer -- we move to the cross-replica
    context, branch there and go back to each replica to apply."""
    tf = _tf()

    def apply():
        optimizer.apply_gradients(zip(grads, variables))
        return tf.constant(True)

    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(finite, apply, lambda: tf.constant(False))
        return

    def cross_replica(distribution, grads, finite):
        finite_0 = distribution.experimental_local_results(finite)[0]

        def apply_all():
            distribution.extended.call_for_each_replica(
                lambda g: optimizer.apply_gradients(zip(g, variables)), args=(grads,))
            return tf.constant(True)

        tf.cond(finite_0, apply_all, lambda: tf.constant(False))

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(grads, finite))


class TFBackend:
    """The Trainer's TensorFlow piece: one tf.distribute strategy, tf.function steps."""

    name = "tensorflow"

    def __init__(self, strategy_section=None, *, strategy=None):
        from t5pre.training.strategy import strategy_for, worker_info

        self.strategy = strategy or strategy_for(strategy_section)
        self.worker = worker_info(self.strategy)

    @property
    def num_replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    def setup_numerics(self, training) -> None:
        import keras

        if training.deterministic:
            _tf().config.experimental.enable_op_determinism()
        seed_keras(training.seed)
        keras.mixed_precision.set_global_policy(
            "float32" if training.precision == "float32" else training.precision)

    def scope(self):
        return self.strategy.scope()

    def prepare(self, model, optimizer) -> None:
        _no_second_all_reduce(optimizer)

    def sync(self) -> None:
        """The Keras variables are the state: nothing to copy back."""

    def describe(self) -> str:
        from t5pre.training.strategy import describe
        return describe(self.strategy)

    def jit_compile(self, training):
        """`tf.function`'s `jit_compile` for the train step: `training.jit_compile` when set;
        when null, XLA for runs of at least `XLA_MIN_STEPS` steps on one replica (not TPU), else
        None (a multi-replica step runs as a graph; TPUStrategy compiles by itself)."""
        from t5pre.training.config import XLA_MIN_STEPS

        if training.jit_compile is not None:
            return bool(training.jit_compile) or None
        single = self.num_replicas == 1 and self.worker.num_workers <= 1
        tpu = isinstance(self.strategy, _tf().distribute.TPUStrategy)
        return True if single and not tpu and training.steps >= XLA_MIN_STEPS else None

    def stop_sync(self):
        """With several workers, ``(step, requested_here) -> bool``: an all-reduce of the local
        stop flags after every step, so a signal to one worker stops all at the same step."""
        if self.worker.num_workers <= 1:
            return None
        tf = _tf()
        strategy = self.strategy

        @tf.function
        def agree(flag):
            flags = strategy.run(lambda: tf.identity(flag))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, flags, axis=None)

        def sync(step, requested_here):
            return float(agree(tf.constant(1.0 if requested_here else 0.0))) > 0

        return sync

    def worker_lost_errors(self) -> tuple:
        tf = _tf()
        return (tf.errors.UnavailableError, tf.errors.DeadlineExceededError)

    def distribute(self, dataset_fn):
        return self.strategy.distribute_datasets_from_function(dataset_fn)

    def train_step_fn(self, model, optimizer, loss_fn, training):
        tf = _tf()
        strategy = self.strategy
        accum = training.grad_accum_steps
        fp16 = training.precision == "mixed_float16"
        clip_norm = training.clip_norm
        z_loss = training.z_loss

        def replica_step(batch):
            ctx = tf.distribute.get_replica_context()
            variables = model.trainable_variables
            weights = tf.cast(batch["decoder_loss_weights"], tf.float32)
            global_tokens = ctx.all_reduce("SUM", tf.reduce_sum(weights))
            denom = tf.maximum(global_tokens, 1.0)

            def micro_grads(mb):
                with tf.GradientTape() as tape:
                    logits = model(mb, training=True)
                    loss, m = loss_fn(mb["decoder_target_ids"], logits,
                                      mb["decoder_loss_weights"], z_loss=z_loss)
                    share = tf.cast(m["num_tokens"], tf.float32) / denom
                    objective = loss * share
                    scaled = optimizer.scale_loss(objective) if fp16 else objective
                grads = tape.gradient(scaled, variables)
                grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                         for g, v in zip(grads, variables)]
                sums = tf.stack([objective, m["z_loss"] * share, m["accuracy"] * share])
                return grads, sums

            if accum == 1:
                grads, sums = micro_grads(batch)
            else:
                size = tf.shape(batch["decoder_target_ids"])[0] // accum
                grads = [tf.zeros_like(v) for v in variables]
                sums = tf.zeros([3], tf.float32)
                for i in tf.range(accum):
                    mb = {k: v[i * size:(i + 1) * size] for k, v in batch.items()}
                    g, s = micro_grads(mb)
                    grads = [a + b for a, b in zip(grads, g)]
                    sums = sums + s
            grads = ctx.all_reduce("SUM", grads)
            global_loss = ctx.all_reduce("SUM", sums[0])
            scale = tf.cast(optimizer.dynamic_scale, tf.float32) if fp16 else 1.0
            grad_norm = tf.linalg.global_norm(grads) / scale
            finite = tf.math.is_finite(global_loss)
            if not fp16:
                finite = tf.logical_and(finite, tf.math.is_finite(grad_norm))
            if clip_norm is not None:
                grads, _ = tf.clip_by_global_norm(grads, clip_norm * scale,
                                                  use_norm=grad_norm * scale)
            if fp16:
                optimizer.apply(grads, variables)  # LossScaleOptimizer: skips non-finite itself
            else:
                _apply_if_finite(optimizer, grads, variables, finite)
            enc_tokens = tf.reduce_sum(tf.cast(batch["encoder_padding_mask"], tf.float32)) \
                if "encoder_padding_mask" in batch else tf.constant(0.0)
            summed = {"loss": sums[0], "z_loss": sums[1], "accuracy": sums[2],
                      "target_tokens": tf.reduce_sum(weights), "input_tokens": enc_tokens,
                      "examples": tf.cast(tf.shape(weights)[0], tf.float32)}
            same = {"grad_norm": grad_norm, "finite": finite, "global_loss": global_loss}
            return summed, same

        def step_fn(batch):
            summed, same = strategy.run(replica_step, args=(batch,))
            out = {k: strategy.reduce("SUM", v, axis=None) for k, v in summed.items()}
            for k, v in same.items():
                out[k] = strategy.experimental_local_results(v)[0]
            return out

        compiled = tf.function(step_fn, jit_compile=self.jit_compile(training),
                               reduce_retracing=True)

        def run(batch):
            return {k: v.numpy() for k, v in compiled(batch).items()}

        return run

    def eval_step_fn(self, model, loss_fn):
        tf = _tf()
        strategy = self.strategy

        def replica_eval(batch):
            logits = model(batch, training=False)
            loss, m = loss_fn(batch["decoder_target_ids"], logits, batch["decoder_loss_weights"],
                              z_loss=0.0)
            n = tf.cast(m["num_tokens"], tf.float32)
            return {"loss": loss * n, "accuracy": m["accuracy"] * n, "tokens": n}

        def eval_fn(batch):
            out = strategy.run(replica_eval, args=(batch,))
            return {k: strategy.reduce("SUM", v, axis=None) for k, v in out.items()}

        compiled = tf.function(eval_fn, reduce_retracing=True)

        def run(batch):
            return {k: float(v) for k, v in compiled(batch).items()}

        return run

    def start_profiler(self, log_dir: str) -> None:
        _tf().profiler.experimental.start(log_dir)

    def stop_profiler(self) -> None:
        _tf().profiler.experimental.stop()
