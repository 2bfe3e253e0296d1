"""The Trainer's JAX piece: a jitted stateless train step under ``keras.distribution``.

:class:`JaxBackend` is the twin of ``step_tf.TFBackend``: the Trainer's loop (resume, logging,
checkpoints, NaN streaks, signals, lock) is the same; only the step, the input distribution and
the checkpoint format differ. The maths is the TensorFlow step's:

1. the global batch is split into ``training.grad_accum_steps`` micro-batches (row ``j*A + i``
   goes to micro-batch ``i``, so every device holds an equal part of every micro-batch and the
   split needs no communication); each micro-batch's loss is weighted by its share of the GLOBAL
   number of target tokens, so the summed gradient is the gradient of the global token-mean loss
   for any number of devices or micro-batches; the micro-batches run in a ``jax.lax.scan``;
2. the global gradient norm is measured and the gradients clipped by it (``training.clip_norm``);
3. the update (``optimizer.stateless_apply``) is applied only when the loss and the norm are
   finite (``jax.lax.cond``): otherwise the trainable weights and every optimizer variable,
   ``iterations`` included, come out unchanged.

The state ``(trainable, non_trainable, optimizer variables)`` lives as JAX arrays between steps
and is donated to the step (updated in place). :meth:`JaxBackend.sync` writes it into the Keras
variables; after the next step those variables hold donated (deleted) buffers again, so read
them only after a ``sync``. A restore that assigns the Keras variables (checkpoint, init_from)
must happen before :meth:`train_step_fn` or be followed by :meth:`reload`.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Callable, Iterable

import numpy as np

from t5pre.errors import ConfigError
from t5pre.lazy import hide_accelerators_from_tensorflow
from t5pre.training.seeding import seed_keras
from t5pre.training.distribution_jax import (BATCH_AXIS, check_strategy_name, create_distribution,
                                             initialize_multi_host)

OUTPUT_KEYS = ("loss", "z_loss", "accuracy", "target_tokens", "input_tokens", "examples",
               "grad_norm", "finite", "global_loss")


class _Prefetcher:
    """Iterates numpy batches from a tf.data dataset on a thread and puts each on the devices
    (``place``) ahead of use, ``depth`` batches deep, so the step never waits for the host."""

    _END = object()

    def __init__(self, dataset, place: Callable, depth: int = 2):
        self._queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(dataset, place), daemon=True)
        self._thread.start()

    def _run(self, dataset, place):
        try:
            for batch in dataset.as_numpy_iterator():
                if not self._put(place(batch)):
                    return
            self._put(self._END)
        except BaseException as e:  # handed to the consumer
            self._put(e)

    def _put(self, item) -> bool:
        """Queues ``item`` unless the consumer closed the prefetcher; returns whether."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        return self

    def __next__(self):
        item = self._queue.get()
        if item is self._END:
            self._queue.put(item)
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self):
        self._stop.set()

    def __del__(self):
        self._stop.set()


class JaxBackend:
    """The Trainer's backend on Keras' JAX backend (see the module docstring)."""

    name = "jax"

    def __init__(self, strategy_section=None, *, distribution=None):
        import keras

        if keras.backend.backend() != "jax":
            raise ConfigError(f"JaxBackend needs KERAS_BACKEND=jax (Keras runs on "
                              f"{keras.backend.backend()!r})")
        hide_accelerators_from_tensorflow()  # TF only feeds tf.data here: JAX owns the chips
        initialize_multi_host()
        import jax

        from t5pre.training.strategy import WorkerInfo

        if distribution is None:
            name = check_strategy_name(getattr(strategy_section, "name", "auto") or "auto", "jax")
            distribution = create_distribution(name)
        else:
            name = type(distribution).__name__
        self.strategy_name = name
        self.distribution = distribution
        self.mesh = distribution.device_mesh
        self.num_replicas = int(np.prod(self.mesh.shape))
        index, count = jax.process_index(), jax.process_count()
        self.worker = WorkerInfo("process", index, count, index == 0)
        self._state = None
        self._model = None
        self._optimizer = None

    # ------------------------------------------------------------------------- setup
    def setup_numerics(self, training_section) -> None:
        import keras

        t = training_section
        if t.precision == "mixed_float16":
            raise ConfigError(
                "training.precision = 'mixed_float16' is not supported on the JAX backend (it "
                "needs dynamic loss scaling); use mixed_bfloat16 or float32")
        if t.deterministic:
            self._deterministic_xla()
        seed_keras(t.seed)
        keras.mixed_precision.set_global_policy(
            "float32" if t.precision == "float32" else t.precision)

    @staticmethod
    def _deterministic_xla() -> None:
        """GPU XLA picks non-deterministic reductions unless told; the flag is read when the
        backend starts, so it only takes effect if JAX has not started yet (CPU is
        deterministic anyway)."""
        import os

        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_gpu_deterministic_ops" not in flags:
            os.environ["XLA_FLAGS"] = (flags + " --xla_gpu_deterministic_ops=true").strip()

    def scope(self):
        return self.distribution.scope()

    def prepare(self, model, optimizer) -> None:
        self._model, self._optimizer = model, optimizer
        self._state = None

    # ------------------------------------------------------------------------- state
    def _variables(self):
        m, o = self._model, self._optimizer
        return m.trainable_variables, m.non_trainable_variables, o.variables

    def _read_state(self):
        """The variables' arrays, committed to their devices: a step's outputs are committed,
        and a first call with uncommitted inputs (one device, no layout) would compile twice."""
        import jax

        def committed(x):
            return x if getattr(x, "committed", True) else jax.device_put(x, x.sharding)

        return tuple([committed(v.value) for v in group] for group in self._variables())

    def reload(self) -> None:
        """Takes the state from the Keras variables again (after assigning them directly)."""
        self._state = None

    def state(self):
        if self._state is None:
            self._state = self._read_state()
        return self._state

    def sync(self) -> None:
        if self._state is None:
            return
        for group, values in zip(self._variables(), self._state):
            for v, x in zip(group, values):
                v.assign(x)

    def _shardings(self):
        return tuple([x.sharding for x in group] for group in self.state())

    def _replicated(self):
        import jax

        return jax.sharding.NamedSharding(self.mesh.backend_mesh, jax.sharding.PartitionSpec())

    # ------------------------------------------------------------------------- steps
    def train_step_fn(self, model, optimizer, loss_fn, training_section) -> Callable:
        import jax
        import jax.numpy as jnp

        if model is not self._model or optimizer is not self._optimizer:
            self.prepare(model, optimizer)
        self._state = None  # a restore may have assigned the variables since prepare()
        t = training_section
        accum, clip_norm, z_loss = int(t.grad_accum_steps), t.clip_norm, t.z_loss

        def objective(trainable, non_trainable, mb, denom):
            logits, non_trainable = model.stateless_call(trainable, non_trainable, mb,
                                                         training=True)
            loss, m = loss_fn(mb["decoder_target_ids"], logits, mb["decoder_loss_weights"],
                              z_loss=z_loss)
            share = jnp.asarray(m["num_tokens"], jnp.float32) / denom
            weighted = loss * share
            sums = jnp.stack([weighted, m["z_loss"] * share, m["accuracy"] * share])
            return weighted, (non_trainable, sums)

        grad_fn = jax.value_and_grad(objective, has_aux=True)

        def step(state, batch):
            trainable, non_trainable, opt_vars = state
            weights = jnp.asarray(batch["decoder_loss_weights"], jnp.float32)
            denom = jnp.maximum(jnp.sum(weights), 1.0)
            if accum == 1:
                (_, (non_trainable, sums)), grads = grad_fn(trainable, non_trainable, batch,
                                                            denom)
            else:
                def split(x):  # [B, ...] -> [A, B/A, ...], row j*A + i into micro-batch i
                    x = jnp.reshape(x, (x.shape[0] // accum, accum) + x.shape[1:])
                    return jnp.swapaxes(x, 0, 1)

                micro = {k: split(v) for k, v in batch.items()}

                def body(carry, mb):
                    acc, sums, nt = carry
                    (_, (nt, s)), g = grad_fn(trainable, nt, mb, denom)
                    return (jax.tree_util.tree_map(jnp.add, acc, g), sums + s, nt), None

                init = ([jnp.zeros_like(v) for v in trainable], jnp.zeros([3], jnp.float32),
                        non_trainable)
                (grads, sums, non_trainable), _ = jax.lax.scan(body, init, micro)
            grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(jnp.asarray(g, jnp.float32)))
                                     for g in grads))
            global_loss = sums[0]
            finite = jnp.logical_and(jnp.isfinite(global_loss), jnp.isfinite(grad_norm))
            if clip_norm is not None:
                scale = clip_norm / jnp.maximum(grad_norm, clip_norm)
                grads = [g * scale.astype(g.dtype) for g in grads]

            def apply(operands):
                tv, ov, g = operands
                tv, ov = optimizer.stateless_apply(ov, g, tv)
                return list(tv), list(ov)

            def skip(operands):
                tv, ov, _ = operands
                return list(tv), list(ov)

            trainable, opt_vars = jax.lax.cond(finite, apply, skip,
                                               (list(trainable), list(opt_vars), grads))
            if "encoder_padding_mask" in batch:
                input_tokens = jnp.sum(jnp.asarray(batch["encoder_padding_mask"], jnp.float32))
            else:
                input_tokens = jnp.zeros([], jnp.float32)
            out = {"loss": sums[0], "z_loss": sums[1], "accuracy": sums[2],
                   "target_tokens": jnp.sum(weights), "input_tokens": input_tokens,
                   "examples": jnp.asarray(weights.shape[0], jnp.float32),
                   "grad_norm": grad_norm, "finite": finite, "global_loss": global_loss}
            return out, (trainable, non_trainable, opt_vars)

        state_shardings = self._shardings()
        replicated = self._replicated()
        jitted = jax.jit(step, donate_argnums=0,
                         out_shardings=({k: replicated for k in OUTPUT_KEYS}, state_shardings))

        def run(batch) -> dict:
            out, self._state = jitted(self.state(), batch)
            return {k: np.asarray(v) for k, v in out.items()}

        run.jitted = jitted
        return run

    def eval_step_fn(self, model, loss_fn) -> Callable:
        import jax
        import jax.numpy as jnp

        def step(trainable, non_trainable, batch):
            logits, _ = model.stateless_call(trainable, non_trainable, batch, training=False)
            loss, m = loss_fn(batch["decoder_target_ids"], logits, batch["decoder_loss_weights"],
                              z_loss=0.0)
            n = jnp.asarray(m["num_tokens"], jnp.float32)
            return {"loss": loss * n, "accuracy": m["accuracy"] * n, "tokens": n}

        replicated = self._replicated()
        jitted = jax.jit(step, out_shardings={k: replicated for k in ("loss", "accuracy",
                                                                        "tokens")})

        def run(batch) -> dict:
            if self._model is not model:
                trainable = [v.value for v in model.trainable_variables]
                non_trainable = [v.value for v in model.non_trainable_variables]
            else:
                trainable, non_trainable, _ = self.state()
            out = jitted(trainable, non_trainable, batch)
            return {k: np.asarray(v) for k, v in out.items()}

        return run

    # ------------------------------------------------------------------------- data
    def data_sharding(self):
        import jax

        return jax.sharding.NamedSharding(self.mesh.backend_mesh,
                                          jax.sharding.PartitionSpec(BATCH_AXIS))

    def place(self, batch: dict) -> dict:
        """This process's rows of the global batch -> global arrays sharded on the batch axis."""
        import jax

        sharding = self.data_sharding()
        return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
                for k, v in batch.items()}

    def input_context(self):
        import jax

        from t5pre.lazy import tensorflow

        n = jax.process_count()
        return tensorflow().distribute.InputContext(
            num_input_pipelines=n, input_pipeline_id=jax.process_index(), num_replicas_in_sync=n)

    def distribute(self, dataset_fn) -> Iterable[dict]:
        """One input pipeline per process (its own shard), batches prefetched onto the devices."""
        dataset = dataset_fn(self.input_context())
        return _Prefetcher(dataset, self.place, depth=2)

    def worker_lost_errors(self) -> tuple:
        """What a lost peer process raises in a multi-process JAX run: XLA's runtime errors,
        and a ValueError for a failed Gloo collective (CPU); :meth:`is_worker_lost` decides."""
        import jax

        errors = tuple(e for e in (getattr(jax.errors, "JaxRuntimeError", None),) if e)
        return (errors or (RuntimeError,)) + (ValueError,)

    @staticmethod
    def is_worker_lost(error: BaseException) -> bool:
        """Whether an error of :meth:`worker_lost_errors` comes from a lost peer (a ValueError
        only when a collective failed; any other ValueError is a bug to show as it is)."""
        import jax

        runtime = getattr(jax.errors, "JaxRuntimeError", RuntimeError)
        if isinstance(error, runtime):
            return True
        text = str(error)
        return any(k in text for k in ("Gloo", "UNAVAILABLE", "DEADLINE_EXCEEDED",
                                        "Connection reset", "Connection closed"))

    def stop_sync(self):
        """``step -> bool``, the same answer on every process, when a SIGTERM/SIGINT to one
        process must stop them all (JAX's preemption sync point); None for one process."""
        from t5pre.training.distribution_jax import preemption_sync_available, reached_stop_point

        return reached_stop_point if preemption_sync_available() else None

    def start_profiler(self, log_dir: str) -> None:
        import jax

        jax.profiler.start_trace(log_dir)

    def stop_profiler(self) -> None:
        import jax

        jax.profiler.stop_trace()

    def describe(self) -> str:
        import jax

        devices = self.mesh.backend_mesh.devices.flatten()
        kind = getattr(devices[0], "device_kind", None) or devices[0].platform
        s = (f"JAX {self.strategy_name} ({type(self.distribution).__name__}) over "
             f"{len(devices)} {kind} device(s)")
        if jax.process_count() > 1:
            s += f", process {jax.process_index()} of {jax.process_count()}"
        return s


@contextlib.contextmanager
def no_distribution():
    """A scope with no keras.distribution (tests)."""
    import keras

    old = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(old)


__all__ = ["JaxBackend", "OUTPUT_KEYS"]
