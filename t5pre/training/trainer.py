"""The training loop: a custom tf.distribute step, exact resume, TensorBoard, NaN skipping.

Why a custom loop and not ``model.fit``: Keras 3's ``fit`` fails under
MultiWorkerMirroredStrategy (keras-team/keras#20585, #20329), its ``BackupAndRestore`` does not
save the data position, and Keras clips gradients per replica before the all-reduce. Here one
``tf.function`` step, run with ``strategy.run`` on every replica:

1. splits the replica's batch into ``grad_accum_steps`` micro-batches and sums their gradients;
   each micro-batch's loss is weighted by its share of the GLOBAL number of target tokens, so the
   summed gradient is exactly the gradient of the global token-mean loss whatever the number of
   replicas or micro-batches (MirroredStrategy on 2 devices == one device, tested);
2. all-reduces the gradients once (SUM), measures the global norm, clips by it;
3. applies them only when the loss and the norm are finite -- otherwise the update is skipped
   (optimizer state and ``iterations`` untouched) and counted; more than
   ``nonfinite_skip_limit`` consecutive skips stop the run, keeping the last good checkpoint.

Keras 3's TF optimizer would all-reduce (sum) the gradients a second time when applied in a
replica context; we switch that off on our optimizer instance (``_no_second_all_reduce``), and a
test checks that the multi-replica update equals the single-device one.

SIGTERM (a preempted VM, ``kill``, a cluster manager) and Ctrl-C stop the run between two steps
after saving a checkpoint of the current step (see ``_StopRequests``): nothing is lost and the
same command resumes. ``train`` then raises ``TrainingInterrupted`` (a KeyboardInterrupt; the
CLI exits with 130). Under MultiWorkerMirroredStrategy every worker must receive the signal, as
every worker takes part in the save.

The Trainer is generic: any task/mixture, any feature lengths, and an optional ``eval_hook`` for
downstream metrics, so ``t5pre finetune`` reuses it with a pretrained starting point.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable

from t5pre.errors import CheckpointError, ConfigError, StorageError, T5preError, WorkerLostError
from t5pre.training import checkpointing, summaries
from t5pre.training.config import RunConfig, profile_range, save_config
from t5pre.training.data import feature_spec, make_dataset_fn, zeros_like_spec
from t5pre.training.optimizers import inner_optimizer, make_optimizer


class TrainingDivergedError(T5preError):
    """Too many consecutive steps with a non-finite loss or gradient."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGTERM or Ctrl-C stopped training after a checkpoint of the current step was saved.

    A KeyboardInterrupt, so every caller that already treats Ctrl-C as "stop" (the CLI maps it
    to exit code 130) does the right thing; ``step`` and ``checkpoint`` say where it stopped."""

    def __init__(self, message: str, step: int, checkpoint: str | None):
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


class _StopRequests:
    """Turns SIGTERM and the first Ctrl-C into a flag the loop checks between steps.

    A signal must not interrupt a step half-way: a KeyboardInterrupt raised by Python's default
    handler lands after the compiled step has updated the weights but before the step counter
    moved, so a checkpoint saved then would not resume exactly. A second Ctrl-C aborts at once
    (no save), for a save that hangs. Handlers are installed only in the main thread (Python
    allows no other) and the previous ones are restored on exit."""

    def __init__(self):
        self.signal_name = None
        self._previous = {}

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except (ValueError, OSError):  # e.g. not allowed in an embedded interpreter
                pass
        return self

    def _handle(self, signum, frame):
        import signal

        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: the user wants out now
        self.signal_name = signal.Signals(signum).name

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def __exit__(self, *exc):
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}
        return False


from t5pre.lazy import tensorflow as _tf  # noqa: E402


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


def seed_keras(seed: int) -> None:
    """Seeds Keras (initialisers, dropout), Python and NumPy, but not TensorFlow's global seed.

    ``tf.random.set_seed`` (which ``keras.utils.set_random_seed`` calls) clears TF's eager
    kernel cache, and that destroys resources held by earlier kernels: a SentencePiece tokenizer
    used before training starts then fails inside tf.data with "Resource ...SentencepieceOp does
    not exist". Nothing here needs the TF global seed: Keras draws from its own seed generator
    and the data pipelines seed their random ops explicitly."""
    import keras

    tf = _tf()
    original = tf.random.set_seed
    tf.random.set_seed = lambda _seed: None
    try:
        keras.utils.set_random_seed(seed)
    finally:
        tf.random.set_seed = original


@dataclasses.dataclass
class TrainResult:
    step: int
    last_metrics: dict
    skipped_steps: int
    checkpoint: str | None
    history: list  # (step, loss) for every logged window


def build_t5_model(run_config: RunConfig, vocabulary):
    """The T5Model of ``run_config.model`` with the vocabulary's size resolved."""
    from t5pre.models import T5Config, T5Model

    m = run_config.model
    config = T5Config.from_name(m.name)
    if m.overrides:
        values = {**config.to_dict(), **m.overrides}
        config = T5Config.from_dict(values, source="model.overrides")
    if vocabulary is not None:
        config = config.resolve_vocab_size(vocabulary)
    return T5Model(config)


class Trainer:
    """Trains a model on a task or mixture under a tf.distribute strategy.

    Args:
      run_config: a resolved RunConfig.
      model_dir: where checkpoints, logs and the model files go (and are resumed from).
      strategy: a tf.distribute strategy (default: created from ``run_config.strategy``).
      task: the task/mixture object (default: looked up by ``run_config.data`` names).
      model_fn: ``(run_config, vocabulary) -> keras.Model`` (default: T5 from config.model).
      vocabulary: default: the task's ``targets`` vocabulary.
      feature_converter: default: ``EncDecFeatureConverter(pack=data.pack)``.
      loss_fn: default: ``t5pre.models.seq2seq_loss``.
      eval_hook: ``(trainer, step) -> {name: value}``, extra metrics at each evaluation
        (e.g. ROUGE from decoding), written to the eval logs.
      log: a ``print``-like function for the progress lines.
    """

    def __init__(self, run_config: RunConfig, model_dir: str, *, strategy=None, task=None,
                 model_fn: Callable | None = None, vocabulary=None, feature_converter=None,
                 loss_fn: Callable | None = None, eval_hook: Callable | None = None,
                 log: Callable = summaries.console):
        from t5pre.training.distribution_jax import keras_backend_name

        self.config = run_config
        self.model_dir = os.fspath(model_dir)
        # The backend-specific piece: None = the TensorFlow step below (tf.distribute);
        # on KERAS_BACKEND=jax, t5pre.training.step_jax.JaxBackend (keras.distribution).
        self.backend = None
        if strategy is None and keras_backend_name() == "jax":
            from t5pre.training.step_jax import JaxBackend

            self.backend = JaxBackend(run_config.strategy)
            self.strategy = None
            self.worker = self.backend.worker
        else:
            from t5pre.training.strategy import strategy_for, worker_info

            self.strategy = strategy or strategy_for(run_config.strategy)
            self.worker = worker_info(self.strategy)
        self.is_chief = self.worker.is_chief
        self.task = task
        self.model_fn = model_fn or build_t5_model
        self.vocabulary = vocabulary
        self.feature_converter = feature_converter
        self.loss_fn = loss_fn
        self.eval_hook = eval_hook
        self._log = log if self.is_chief else (lambda *a, **k: None)
        self.model = None
        self.optimizer = None
        self.keeper = None

    # ---------------------------------------------------------------------------- setup
    def log(self, msg: str) -> None:
        self._log(msg)

    def _setup_numerics(self) -> None:
        import keras

        t = self.config.training
        if self.backend is not None:
            self.backend.setup_numerics(t)
            return
        tf = _tf()
        if t.deterministic:
            tf.config.experimental.enable_op_determinism()
        seed_keras(t.seed)
        keras.mixed_precision.set_global_policy(
            "float32" if t.precision == "float32" else t.precision)

    def _resolve_task_and_vocabulary(self) -> None:
        from t5pre.training.data import get_task_or_mixture

        if self.task is None:
            self.task = get_task_or_mixture(self.config.data)
        if self.vocabulary is None:
            features = getattr(self.task, "output_features", None) or {}
            feature = features.get("targets")
            self.vocabulary = getattr(feature, "vocabulary", None)
        if self.loss_fn is None:
            from t5pre.models import seq2seq_loss
            self.loss_fn = seq2seq_loss

    def _model_config_values(self, model):
        model_config = getattr(model, "config", None)
        if model_config is None or not hasattr(model_config, "to_dict"):
            return None
        from t5pre.models.io import FORMAT_VERSION
        return {"format_version": FORMAT_VERSION, **model_config.to_dict()}

    def _check_model_dir(self, model) -> None:
        """A model directory holds one model: refuse to resume it with another model config."""
        from t5pre.models.io import MODEL_CONFIG_FILE

        values = self._model_config_values(model)
        path = os.path.join(self.model_dir, MODEL_CONFIG_FILE)
        if values is None or not os.path.exists(path):
            return
        try:
            with open(path, encoding="utf-8") as f:
                old = json.load(f)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path}: cannot read the model config ({e})") from None
        if old != values:
            changed = sorted(k for k in set(old) | set(values) if old.get(k) != values.get(k))
            raise CheckpointError(
                f"{path}: this model directory holds a model with another config (fields "
                f"{', '.join(changed)} differ from model.name={self.config.model.name!r} + "
                "overrides); use a new --model-dir or the same model config")

    def _prepare_model_dir(self, model) -> None:
        """Chief writes config.yaml, model_config.json, spiece.model and vocab.json."""
        if not self.is_chief:
            return
        from t5pre.models.io import MODEL_CONFIG_FILE

        os.makedirs(self.model_dir, exist_ok=True)
        save_config(self.config, os.path.join(self.model_dir, "config.yaml"))
        values = self._model_config_values(model)
        if values is not None:
            from t5pre.files import atomic_write_json

            atomic_write_json(os.path.join(self.model_dir, MODEL_CONFIG_FILE), values)
        if self.vocabulary is not None and hasattr(self.vocabulary, "save"):
            self.vocabulary.save(self.model_dir)

    def _dataset_fn(self, split, *, shuffle, start_examples=0, take_batches=None,
                    global_batch_size=None, seed=None):
        d = self.config.data
        return make_dataset_fn(
            self.task, {"inputs": d.sequence_length.inputs, "targets": d.sequence_length.targets},
            split=split, global_batch_size=global_batch_size or self.config.training.batch_size,
            pack=d.pack, shuffle=shuffle, seed=self.config.data_seed if seed is None else seed,
            num_epochs=None, start_examples=start_examples, take_batches=take_batches,
            feature_converter=self.feature_converter,
            cache=d.cache_dir if split == d.train_split else None)

    def build(self) -> None:
        """Creates model, optimizer and checkpoint state (idempotent)."""
        if self.model is not None:
            return
        self._setup_numerics()
        self._resolve_task_and_vocabulary()
        t = self.config.training
        replicas = self._num_replicas()
        if t.batch_size % (replicas * t.grad_accum_steps):
            raise ConfigError(
                f"training.batch_size ({t.batch_size}) must be divisible by the number of "
                f"replicas ({replicas}) x training.grad_accum_steps ({t.grad_accum_steps})")
        d = self.config.data
        splits = getattr(self.task, "splits", None)
        if splits is not None and d.train_split not in splits:
            raise ConfigError(f"data.train_split = {d.train_split!r}: task {self.config.task_name!r}"
                              f" has splits {', '.join(splits)}")
        self._eval_enabled = bool(d.eval_split and t.eval_every)
        if self._eval_enabled and splits is not None and d.eval_split not in splits:
            self.log(f"warning: task {self.config.task_name!r} has no {d.eval_split!r} split "
                     f"(it has {', '.join(splits)}); periodic evaluation is off")
            self._eval_enabled = False
        if self._eval_enabled and d.eval_split == d.train_split:
            self.log(f"warning: data.eval_split and data.train_split are both {d.train_split!r}: "
                     "the evaluation measures examples the model trains on")
        o = self.config.optimizer
        if 0 < t.steps <= o.warmup_steps and o.warmup_steps:
            self.log(f"warning: training.steps ({t.steps}) <= optimizer.warmup_steps "
                     f"({o.warmup_steps}): the whole run is warm-up and the learning rate never "
                     "reaches its peak")
        spec = feature_spec(self._dataset_fn(d.train_split, shuffle=False))
        self._spec = spec
        scope = self.backend.scope() if self.backend is not None else self.strategy.scope()
        with scope:
            self.model = self.model_fn(self.config, self.vocabulary)
            dummy = zeros_like_spec(spec)
            if self.backend is not None:
                dummy = {k: v.numpy() for k, v in dummy.items()}
            self.model(dummy, training=False)
            self.optimizer = make_optimizer(self.config.optimizer, t.precision)
            self.optimizer.build(self.model.trainable_variables)
        if self.backend is not None:
            self.backend.prepare(self.model, self.optimizer)
        else:
            _no_second_all_reduce(self.optimizer)
        self.keeper = checkpointing.CheckpointKeeper(
            self.model_dir, model=self.model, optimizer=self.optimizer,
            is_chief=self.is_chief, max_to_keep=t.keep_checkpoints, log=self.log,
            format=self.backend.checkpoint_format if self.backend is not None else "tf")

    def _num_replicas(self) -> int:
        if self.backend is not None:
            return self.backend.num_replicas
        return self.strategy.num_replicas_in_sync

    def _sync(self) -> None:
        """Makes the Keras variables hold the current state (the JAX step keeps it apart)."""
        if self.backend is not None:
            self.backend.sync()

    def _distribute(self, dataset_fn):
        if self.backend is not None:
            return self.backend.distribute(dataset_fn)
        return self.strategy.distribute_datasets_from_function(dataset_fn)

    # ---------------------------------------------------------------------------- steps
    def _make_train_step(self):
        if self.backend is not None:
            return self.backend.train_step_fn(self.model, self.optimizer, self.loss_fn,
                                              self.config.training)
        tf = _tf()
        t = self.config.training
        model, optimizer, strategy = self.model, self.optimizer, self.strategy
        loss_fn = self.loss_fn
        accum = t.grad_accum_steps
        fp16 = t.precision == "mixed_float16"
        clip_norm = t.clip_norm
        z_loss = t.z_loss

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

        return tf.function(step_fn, jit_compile=t.jit_compile or None, reduce_retracing=True)

    def _make_eval_step(self):
        if self.backend is not None:
            return self.backend.eval_step_fn(self.model, self.loss_fn)
        tf = _tf()
        model, strategy, loss_fn = self.model, self.strategy, self.loss_fn

        def replica_eval(batch):
            logits = model(batch, training=False)
            loss, m = loss_fn(batch["decoder_target_ids"], logits, batch["decoder_loss_weights"],
                              z_loss=0.0)
            n = tf.cast(m["num_tokens"], tf.float32)
            return {"loss": loss * n, "accuracy": m["accuracy"] * n, "tokens": n}

        def eval_fn(batch):
            out = strategy.run(replica_eval, args=(batch,))
            return {k: strategy.reduce("SUM", v, axis=None) for k, v in out.items()}

        return tf.function(eval_fn, reduce_retracing=True)

    # ---------------------------------------------------------------------------- helpers
    def _learning_rate_at(self, update_index: int) -> float:
        import keras

        opt = inner_optimizer(self.optimizer)
        schedule = opt._learning_rate
        if callable(schedule):
            return float(keras.ops.convert_to_numpy(schedule(max(update_index, 0))))
        return float(keras.ops.convert_to_numpy(opt.learning_rate))

    def _flops_per_token(self):
        try:
            from t5pre.models import training_flops_per_token
        except (ImportError, AttributeError):
            return None
        config = getattr(self.model, "config", None)
        if config is None:
            return None
        d = self.config.data.sequence_length
        try:
            return float(training_flops_per_token(config, d.inputs, d.targets))
        except Exception:  # an unknown signature must not stop training; MFU is optional
            return None

    def _init_from_pretrained(self) -> None:
        src = self.config.model.init_from
        if not src:
            return
        from t5pre.models.io import WEIGHTS_FILE, load_weights_into

        if checkpointing.latest_checkpoint(src):
            path = checkpointing.restore_model_weights(self.model, src)
        elif os.path.isfile(os.path.join(src, WEIGHTS_FILE)):
            path = os.path.join(src, WEIGHTS_FILE)
            load_weights_into(self.model, path)
        else:
            raise CheckpointError(f"model.init_from = {src!r}: neither checkpoints/ nor "
                                  f"{WEIGHTS_FILE} found there")
        self.log(f"initialised weights from {path}")

    def evaluate(self, steps: int | None = None) -> dict:
        """Token loss/accuracy over the first ``steps`` batches of the eval split."""
        d, t = self.config.data, self.config.training
        steps = steps or t.eval_steps
        if not hasattr(self, "_eval_step"):
            self._eval_step = self._make_eval_step()
        self._sync()
        dist = self._distribute(
            self._dataset_fn(d.eval_split, shuffle=False, take_batches=steps))
        total = {"loss": 0.0, "accuracy": 0.0, "tokens": 0.0}
        for batch in dist:
            out = self._eval_step(batch)
            for k in total:
                total[k] += float(out[k])
        n = max(total["tokens"], 1.0)
        return {"loss": total["loss"] / n, "accuracy": total["accuracy"] / n}

    def text_samples(self, n: int) -> str:
        """Markdown table of a few eval examples: input, target and argmax prediction."""
        import numpy as np

        vocab = self.vocabulary
        if vocab is None or n <= 0:
            return ""
        fn = self._dataset_fn(self.config.data.eval_split, shuffle=False, take_batches=1,
                              global_batch_size=n)
        batch = next(iter(fn()))
        self._sync()
        if self.backend is not None:
            batch = {k: v.numpy() for k, v in batch.items()}
        logits = self.model(batch, training=False)
        pred = np.argmax(np.asarray(logits), axis=-1)
        rows = ["| input | target | prediction (teacher-forced argmax) |", "|---|---|---|"]

        def first_segment(ids, key):
            ids = np.asarray(ids)
            seg = batch.get(key)
            if seg is not None:
                ids = ids[np.asarray(seg[i]) == 1]
            return [int(x) for x in ids if x != 0]

        for i in range(n):
            enc = first_segment(batch["encoder_token_ids"][i], "encoder_segment_ids")
            tgt = first_segment(batch["decoder_target_ids"][i], "decoder_segment_ids")
            w = np.asarray(batch["decoder_loss_weights"][i]) > 0
            seg = batch.get("decoder_segment_ids")
            if seg is not None:
                w &= np.asarray(seg[i]) == 1
            prd = [int(x) for x in pred[i][w]]
            cells = [vocab.decode(x).replace("|", "\\|").replace("\n", " ")
                     for x in (enc, tgt, prd)]
            rows.append("| " + " | ".join(cells) + " |")
        return "\n".join(rows)

    def _run_eval(self, step: int, writer) -> dict:
        metrics = self.evaluate()
        if self.eval_hook is not None:
            metrics.update(self.eval_hook(self, step) or {})
        writer.scalars("eval", step, metrics)
        if self.is_chief and self.config.training.text_samples:
            try:
                writer.text("eval", step, "samples",
                            self.text_samples(self.config.training.text_samples))
            except Exception as e:  # samples are a convenience; never stop training for them
                self.log(f"(text samples skipped: {type(e).__name__}: {e})")
        writer.flush()
        self.log(f"eval at step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return metrics

    # ---------------------------------------------------------------------------- train
    def train(self) -> TrainResult:
        """Trains to ``training.steps``, resuming from the latest checkpoint in model_dir.

        The chief holds the model directory's lock (``DIR/.lock``) for the whole run, so a
        second process on the same directory is refused at once, naming the holder."""
        from t5pre.models.dir_lock import ModelDirLock

        with ModelDirLock(self.model_dir, enabled=self.is_chief):
            tf = _tf()
            try:
                return self._train()
            except OSError as e:  # disk full, read-only or unwritable directory
                raise StorageError.from_os_error(e, self.model_dir) from None
            except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as e:
                if self.worker.num_workers <= 1:
                    raise
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                raise WorkerLostError(
                    f"a worker of this {self.worker.num_workers}-worker run stopped answering "
                    f"({first}); the checkpoints in {self.model_dir} are intact: restart every "
                    "worker with the same command to resume") from None

    def _resume(self):
        """Restores the newest readable checkpoint: ``(step, data_examples, pipelines, path)``."""
        removed = self.keeper.remove_orphans()
        if removed:
            self.log(f"removed {len(removed)} leftover(s) of interrupted saves "
                     f"({', '.join(sorted(removed)[:3])}{' ...' if len(removed) > 3 else ''})")
        step, latest = self.keeper.restore_latest()
        if latest is None:
            return 0, 0, None, None
        self._check_resumed_config()
        data_examples, data_pipelines = self.keeper.restored_position()
        return step, data_examples, data_pipelines, latest

    def _check_resumed_config(self) -> None:
        """A resumed run must read the same data stream: refuse changed task, lengths, batch size,
        packing or data seed (one line listing them) unless training.allow_data_change."""
        from t5pre.training.config import data_stream_changes, load_config

        path = os.path.join(self.model_dir, "config.yaml")
        if not os.path.isfile(path):
            return
        try:
            old = load_config(path)
        except ConfigError as e:
            self.log(f"warning: cannot compare with the saved run config ({e})")
            return
        changes = data_stream_changes(old, self.config)
        if not changes:
            return
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changes)
        if not self.config.training.allow_data_change:
            raise ConfigError(
                f"{path}: resuming with another data stream ({listed}); the checkpoint's data "
                "position would be meaningless. Use a new --model-dir, or set "
                "training.allow_data_change=true to continue anyway")
        self.log(f"warning: data stream changed ({listed}); training.allow_data_change is set, "
                 "so the run continues from the same count of consumed examples in the new "
                 "stream (not the same examples)")

    def _train(self) -> TrainResult:
        self.build()
        t, d = self.config.training, self.config.data
        # Resume (or start) -------------------------------------------------------------
        self._check_model_dir(self.model)
        step, data_examples, old_pipelines, latest = self._resume()
        if latest:
            self.log(f"resumed from {latest} (step {step})")
        else:
            self._init_from_pretrained()
        self._prepare_model_dir(self.model)
        writer = summaries.Summaries(self.model_dir, enabled=self.is_chief)
        self.log(f"model directory {self.model_dir}; strategy "
                 f"{self._describe_strategy()}")
        self.log(f"TensorBoard: tensorboard --logdir {summaries.log_dir(self.model_dir)}")
        if step == 0:
            writer.text("train", 0, "config", "```\n" + self.config.to_yaml() + "\n```")
            writer.hparams(self.config.to_dict(), run_name=os.path.basename(
                os.path.abspath(self.model_dir)))
        if step >= t.steps:
            self.log(f"already at step {step} >= training.steps {t.steps}; nothing to do "
                     f"(pass a larger --steps to continue)")
            writer.close()
            return TrainResult(step, {}, 0, latest, [])

        dataset_fn = self._dataset_fn(d.train_split, shuffle=d.shuffle,
                                      start_examples=data_examples)
        dist = self._distribute(dataset_fn)
        pipelines = self.worker.num_workers
        if old_pipelines is not None and old_pipelines != pipelines and not d.cache_dir:
            self.log(f"warning: the checkpoint's data was read by {old_pipelines} input "
                     f"pipelines, now {pipelines}: shards differ, so the data position is "
                     "approximate")
        iterator = iter(dist)
        train_step = self._make_train_step()
        flops_per_token = self._flops_per_token() if t.peak_flops else None

        window = _Window()
        history, skipped_total, consecutive_bad = [], 0, 0
        last_ckpt, last_metrics = latest, {}
        start_step = saved_step = step
        step_times = []
        stop = _StopRequests()
        profiler = _Profiler(profile_range(t.profile_steps), summaries.log_dir(self.model_dir),
                             enabled=self.is_chief, log=self.log,
                             jax=self.backend is not None)
        try:
            stop.__enter__()
            while step < t.steps:
                profiler.before_step(step + 1)
                t0 = time.perf_counter()
                batch = next(iterator)
                t1 = time.perf_counter()
                out = train_step(batch)
                out = {k: v.numpy() if hasattr(v, "numpy") else v for k, v in out.items()}
                t2 = time.perf_counter()
                step += 1
                profiler.after_step(step)
                data_examples += t.batch_size
                finite = bool(out["finite"])
                if finite:
                    consecutive_bad = 0
                else:
                    consecutive_bad += 1
                    skipped_total += 1
                    self.log(f"step {step}: non-finite loss/gradient (loss "
                             f"{float(out['global_loss'])}, grad norm {float(out['grad_norm'])}"
                             f"); update skipped ({consecutive_bad} in a row, limit "
                             f"{t.nonfinite_skip_limit})")
                    if consecutive_bad > t.nonfinite_skip_limit:
                        raise TrainingDivergedError(
                            f"training diverged: {consecutive_bad} consecutive steps with a "
                            f"non-finite loss or gradient at step {step} (limit "
                            f"training.nonfinite_skip_limit = {t.nonfinite_skip_limit}); the "
                            f"last good checkpoint is {last_ckpt or 'none'}. Lower the "
                            "learning rate, use float32 or raise the limit.")
                window.add(out, t1 - t0, t2 - t0, finite)
                step_times.append(t2 - t0)
                if step % t.log_every == 0 or step == t.steps:
                    metrics = window.summary(self)
                    self._sync()
                    updates = int(inner_optimizer(self.optimizer).iterations.numpy())
                    metrics["learning_rate"] = self._learning_rate_at(updates - 1)
                    if flops_per_token and t.peak_flops:
                        # Hardware FLOPs: every position of the padded example is computed.
                        seq = d.sequence_length.inputs + d.sequence_length.targets
                        peak = t.peak_flops * self._num_replicas()
                        metrics["mfu"] = (flops_per_token * seq * metrics["examples_per_sec"]
                                          / peak)
                    metrics["skipped_steps"] = skipped_total
                    recent = step_times[-t.log_every:]
                    eta = (t.steps - step) * (sum(recent) / max(len(recent), 1))
                    self.log(summaries.progress_line(step, t.steps, metrics, eta))
                    writer.scalars("train", step, metrics)
                    writer.flush()
                    history.append((step, metrics.get("loss")))
                    last_metrics = metrics
                    window = _Window()
                if step % t.checkpoint_every == 0 or step == t.steps:
                    if consecutive_bad:
                        # The weights may already be blowing up: keep the last checkpoint from
                        # before the streak as the newest one (and out of rotation's reach).
                        self.log(f"step {step}: checkpoint not written during a streak of "
                                 f"non-finite steps (last good: {last_ckpt or 'none'})")
                    else:
                        self._sync()
                        path = self.keeper.save(step, data_examples, pipelines)
                        last_ckpt, saved_step = path or last_ckpt, step
                if self._eval_enabled and (step % t.eval_every == 0 or step == t.steps):
                    last_metrics.update({f"eval_{k}": v
                                         for k, v in self._run_eval(step, writer).items()})
                if stop.requested and step < t.steps:
                    # Every worker gets the signal (a cluster manager stops them all) and
                    # every worker must take part in the save; the chief's copy is kept.
                    if saved_step != step and not consecutive_bad:
                        self._sync()
                        path = self.keeper.save(step, data_examples, pipelines)
                        last_ckpt, saved_step = path or last_ckpt, step
                    writer.flush()
                    message = (f"{stop.signal_name}: stopped at step {step}; checkpoint saved "
                               f"to {last_ckpt}; re-run the same command to resume")
                    self.log(message)
                    raise TrainingInterrupted(message, step, last_ckpt)
            self._sync()
        finally:
            stop.__exit__(None, None, None)
            profiler.stop()
            writer.close()
            self.keeper.close()
        done = step - start_step
        if done:
            self.log(f"done: step {step}, {done} steps in {sum(step_times):.1f}s"
                     f"{f', {skipped_total} skipped' if skipped_total else ''}; "
                     f"checkpoint {last_ckpt}")
        return TrainResult(step, last_metrics, skipped_total, last_ckpt, history)

    def _describe_strategy(self) -> str:
        if self.backend is not None:
            return self.backend.describe()
        from t5pre.training.strategy import describe
        return describe(self.strategy)


class _Profiler:
    """A TensorFlow profiler trace of steps START..END (``training.profile_steps``), written to
    ``DIR/logs/train`` for TensorBoard's Profile tab; stopped on any exit from the loop."""

    def __init__(self, steps, log_dir: str, *, enabled: bool, log, jax: bool = False):
        self.jax = jax  # jax.profiler writes the same TensorBoard profile plugin files
        self.steps = steps if enabled else None
        self.log_dir = os.path.join(log_dir, "train")
        self.active = False
        self._log = log

    def before_step(self, step: int) -> None:
        if self.steps and step == self.steps[0] and not self.active:
            if self.jax:
                import jax

                jax.profiler.start_trace(self.log_dir)
            else:
                _tf().profiler.experimental.start(self.log_dir)
            self.active = True

    def after_step(self, step: int) -> None:
        if self.active and step >= self.steps[1]:
            self.stop()
            self._log(f"profiler trace of steps {self.steps[0]}-{self.steps[1]} written to "
                      f"{self.log_dir} (TensorBoard: Profile)")

    def stop(self) -> None:
        if self.active:
            self.active = False
            if self.jax:
                import jax

                jax.profiler.stop_trace()
            else:
                _tf().profiler.experimental.stop()


class _Window:
    """Sums of the per-step values over one logging interval."""

    def __init__(self):
        self.n = 0
        self.finite = 0
        self.sums = {}
        self.data_time = 0.0
        self.step_time = 0.0

    def add(self, out: dict, data_time: float, step_time: float, finite: bool) -> None:
        self.n += 1
        self.data_time += data_time
        self.step_time += step_time
        for k in ("target_tokens", "input_tokens", "examples"):
            self.sums[k] = self.sums.get(k, 0.0) + float(out[k])
        if finite:
            self.finite += 1
            for k in ("loss", "z_loss", "accuracy", "grad_norm"):
                self.sums[k] = self.sums.get(k, 0.0) + float(out[k])

    def summary(self, trainer) -> dict:
        f = max(self.finite, 1)
        elapsed = max(self.step_time, 1e-9)
        tokens = self.sums.get("target_tokens", 0.0) + self.sums.get("input_tokens", 0.0)
        return {
            "loss": self.sums.get("loss", float("nan")) / f if self.finite else float("nan"),
            "z_loss": self.sums.get("z_loss", 0.0) / f,
            "accuracy": self.sums.get("accuracy", 0.0) / f,
            "grad_norm": self.sums.get("grad_norm", 0.0) / f,
            "tokens_per_sec": tokens / elapsed,
            "target_tokens_per_sec": self.sums.get("target_tokens", 0.0) / elapsed,
            "examples_per_sec": self.sums.get("examples", 0.0) / elapsed,
            "step_time": elapsed / max(self.n, 1),
            "data_wait_fraction": self.data_time / elapsed,
        }
