"""The one training loop: pretraining and fine-tuning, on TensorFlow or JAX, exact resume.

``Trainer(config, model_dir).train()`` trains to ``training.steps``. What differs between runs is
given to it, not subclassed:

* the **backend** (``backend=``; default by ``keras.backend.backend()``): the compiled step, the
  distribution of the input and the TF/JAX patches -- :class:`t5pre.training.step_tf.TFBackend`
  (tf.distribute) or :class:`t5pre.training.step_jax.JaxBackend` (``keras.distribution``);
* the **init source** (``init=``, or ``model.init_from``): the weights a new run starts from,
  read through the model-directory owner :mod:`t5pre.models.store`; never used on resume;
* the **actions** (``actions=``): what happens at each evaluation besides the token loss
  (decoded scores, the best-checkpoint keeper, text samples), see :mod:`t5pre.training.actions`.

The loop is short and reads top-down (nanoT5-style ``_maybe_*`` pieces): ``_start`` (lock held by
``train``; build, resume or init, model files), then per step ``_step``, ``_maybe_log``,
``_maybe_checkpoint``, ``_maybe_evaluate``, ``_maybe_stop``.

Steps whose loss or gradient is not finite are skipped by the backend (optimizer state and
``iterations`` untouched) and counted here; more than ``nonfinite_skip_limit`` in a row stop the
run, naming the last checkpoint from before the streak (none is written during a streak).

SIGTERM (a preempted VM, ``kill``, a cluster manager) and Ctrl-C stop the run between two steps
after saving a checkpoint of the current step (:mod:`t5pre.training.signals`): nothing is lost
and the same command resumes. ``train`` then raises ``TrainingInterrupted`` (a
KeyboardInterrupt; the CLI exits with 130). With several JAX processes a signal to any one of
them stops every process at the same step (the backend's ``stop_sync``, JAX's preemption sync
point); on TensorFlow every worker must receive the signal, as every worker takes part in the
save.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable, Sequence

from t5pre.errors import CheckpointError, ConfigError, StorageError, T5preError, WorkerLostError
from t5pre.models import checkpoints
from t5pre.models.layout import MODEL_CONFIG_FILE, RUN_CONFIG_FILE
from t5pre.training import summaries
from t5pre.training.actions import Action, TextSamples
from t5pre.training.config import RunConfig, profile_range, save_config
from t5pre.training.data import feature_spec, make_dataset_fn, zeros_like_spec
from t5pre.training.optimizers import inner_optimizer, make_optimizer
from t5pre.training.signals import StopRequests, TrainingInterrupted


class TrainingDivergedError(T5preError):
    """Too many consecutive steps with a non-finite loss or gradient."""


def make_backend(strategy_section=None, *, strategy=None):
    """The backend piece for the Keras backend in use (``KERAS_BACKEND``)."""
    import keras

    name = keras.backend.backend()
    if name == "tensorflow":
        from t5pre.training.step_tf import TFBackend
        return TFBackend(strategy_section, strategy=strategy)
    if name == "jax":
        if strategy is not None:
            raise ConfigError("a tf.distribute strategy was given, but Keras runs on JAX")
        from t5pre.training.step_jax import JaxBackend
        return JaxBackend(strategy_section)
    raise ConfigError(f"KERAS_BACKEND={name}: t5pre trains on the tensorflow or jax backend")


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
    """Trains a model on a task or mixture; pretraining and fine-tuning alike.

    Args:
      run_config: a resolved RunConfig.
      model_dir: where checkpoints, logs and the model files go (and are resumed from).
      backend: the backend piece (default: :func:`make_backend` for the Keras backend in use).
      strategy: a tf.distribute strategy for the TensorFlow backend (default: from
        ``run_config.strategy``).
      task: the task/mixture object (default: looked up by ``run_config.data`` names).
      model_fn: ``(run_config, vocabulary) -> keras.Model`` (default: T5 from config.model).
      vocabulary: default: the task's ``targets`` vocabulary.
      feature_converter: default: ``EncDecFeatureConverter(pack=data.pack)``.
      loss_fn: default: ``t5pre.models.seq2seq_loss``.
      init: an ``InitModel`` (:func:`t5pre.models.store.read_init`) whose weights start a new run
        (default: ``model.init_from``, when set).
      actions: :class:`~t5pre.training.actions.Action` s run at each evaluation, in order
        (``training.text_samples`` adds a TextSamples action).
      log: a ``print``-like function for the progress lines.
    """

    def __init__(self, run_config: RunConfig, model_dir: str, *, backend=None, strategy=None,
                 task=None, model_fn: Callable | None = None, vocabulary=None,
                 feature_converter=None, loss_fn: Callable | None = None, init=None,
                 actions: Sequence[Action] = (), log: Callable = summaries.console):
        self.config = run_config
        self.model_dir = os.fspath(model_dir)
        self.backend = backend or make_backend(run_config.strategy, strategy=strategy)
        self.strategy = getattr(self.backend, "strategy", None)
        self.worker = self.backend.worker
        self.is_chief = self.worker.is_chief
        self.task = task
        self.model_fn = model_fn or build_t5_model
        self.vocabulary = vocabulary
        self.feature_converter = feature_converter
        self.loss_fn = loss_fn
        self.init = init
        self.actions = list(actions)
        if run_config.training.text_samples:
            self.actions.append(TextSamples(run_config.training.text_samples))
        self._log = log if self.is_chief else (lambda *a, **k: None)
        self.model = None
        self.optimizer = None
        self.keeper = None

    # ---------------------------------------------------------------------------- setup
    def log(self, msg: str) -> None:
        self._log(msg)

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

    def _check_model_dir(self, model) -> None:
        """A model directory holds one model: refuse to resume it with another model config."""
        from t5pre.models.io import model_config_values

        values = model_config_values(model)
        path = os.path.join(self.model_dir, MODEL_CONFIG_FILE)
        if values is None or not os.path.exists(path):
            return
        try:
            with open(path, encoding="utf-8") as f:
                old = json.load(f)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path}: cannot read the model config ({e})") from None
        if old != values:
            raise CheckpointError(self._other_model_message(old, values))

    def _other_model_message(self, old: dict, new: dict) -> str:
        """What happened, in the user's terms: the directory already holds another model (its
        vocabulary or architecture, and the task it was trained on, against this run's)."""
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        kinds = (["vocabulary"] if "vocab_size" in changed else []) + (
            ["architecture"] if set(changed) - {"vocab_size"} else [])
        shown = "; ".join(f"{k} {old.get(k)} there, {new.get(k)} in this run"
                          for k in changed[:3]) + ("; ..." if len(changed) > 3 else "")
        tasks = ""
        try:
            import yaml

            with open(os.path.join(self.model_dir, "config.yaml"), encoding="utf-8") as f:
                data = (yaml.safe_load(f) or {}).get("data") or {}
            before, now = data.get("task") or data.get("mixture"), self.config.task_name
            if before and before != now:
                tasks = f"; it was trained on {before!r}, this run trains {now!r}"
        except (OSError, ValueError, AttributeError, yaml.YAMLError):
            pass
        return (f"{self.model_dir} already holds another model, with another "
                f"{' and '.join(kinds) or 'config'} ({shown}, model_config.json){tasks}: a run "
                "in a model directory continues the model in it, so give this run a new "
                f"--model-dir (or delete {self.model_dir} to start over)")

    def _prepare_model_dir(self, model) -> None:
        """Chief writes config.yaml and the model files (model_config.json, spiece.model,
        vocab.json; :func:`t5pre.models.io.write_model_files`)."""
        if not self.is_chief:
            return
        from t5pre.models.io import write_model_files

        os.makedirs(self.model_dir, exist_ok=True)
        save_config(self.config, os.path.join(self.model_dir, RUN_CONFIG_FILE))
        vocabulary = self.vocabulary if hasattr(self.vocabulary, "save") else None
        write_model_files(self.model_dir, model, vocabulary)

    def _dataset_fn(self, split, *, shuffle, start_examples=0, take_batches=None,
                    global_batch_size=None, seed=None):
        d = self.config.data
        return make_dataset_fn(
            self.task, {"inputs": d.sequence_length.inputs, "targets": d.sequence_length.targets},
            split=split, global_batch_size=global_batch_size or self.config.training.batch_size,
            pack=d.pack, shuffle=shuffle, seed=self.config.data_seed if seed is None else seed,
            num_epochs=None, start_examples=start_examples, take_batches=take_batches,
            feature_converter=self.feature_converter, cache=d.cache_dir, log=self.log)

    def _check_run(self) -> None:
        """Checks and warnings that need the task (splits) and the backend (replicas)."""
        t, d, o = self.config.training, self.config.data, self.config.optimizer
        replicas = self.backend.num_replicas
        if t.batch_size % (replicas * t.grad_accum_steps):
            raise ConfigError(
                f"training.batch_size ({t.batch_size}) must be divisible by the number of "
                f"replicas ({replicas}) x training.grad_accum_steps ({t.grad_accum_steps})")
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
        if 0 < t.steps <= o.warmup_steps and o.warmup_steps:
            self.log(f"warning: training.steps ({t.steps}) <= optimizer.warmup_steps "
                     f"({o.warmup_steps}): the whole run is warm-up and the learning rate never "
                     "reaches its peak")

    def build(self) -> None:
        """Creates model, optimizer and checkpoint state (idempotent)."""
        if self.model is not None:
            return
        t = self.config.training
        self.backend.setup_numerics(t)
        self._resolve_task_and_vocabulary()
        self._check_run()
        spec = feature_spec(self._dataset_fn(self.config.data.train_split, shuffle=False))
        self._spec = spec
        with self.backend.scope():
            self.model = self.model_fn(self.config, self.vocabulary)
            self.model(zeros_like_spec(spec), training=False)
            self.optimizer = make_optimizer(self.config.optimizer, t.precision)
            self.optimizer.build(self.model.trainable_variables)
        self.backend.prepare(self.model, self.optimizer)
        self.keeper = checkpoints.CheckpointKeeper(
            self.model_dir, model=self.model, optimizer=self.optimizer,
            is_chief=self.is_chief, max_to_keep=t.keep_checkpoints, log=self.log,
            **self._checkpoint_format())

    def _checkpoint_format(self) -> dict:
        """``training.checkpoint_format`` resolved for the backend and the directory
        (:func:`t5pre.models.checkpoints.choose_format`)."""
        backend = "jax" if getattr(self.backend, "name", "") == "jax" else "tensorflow"
        fmt = checkpoints.choose_format(self.model_dir, self.config.training.checkpoint_format,
                                        backend, log=self.log)
        return {} if fmt == "tf" else {"format": fmt}

    # ---------------------------------------------------------------------------- helpers
    def _learning_rate_at(self, update_index: int) -> float:
        import keras

        opt = inner_optimizer(self.optimizer)
        schedule = opt._learning_rate
        if callable(schedule):
            return float(keras.ops.convert_to_numpy(schedule(max(update_index, 0))))
        return float(keras.ops.convert_to_numpy(opt.learning_rate))

    def _updates_applied(self) -> int:
        import keras

        return int(keras.ops.convert_to_numpy(inner_optimizer(self.optimizer).iterations))

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

    def _init_weights(self) -> None:
        """A new run's starting weights: ``init``, else ``model.init_from``, else random."""
        init = self.init
        if init is None and self.config.model.init_from:
            from t5pre.models.store import read_init, resolve_init

            init = read_init(resolve_init(self.config.model.init_from,
                                          where="model.init_from"))
        if init is None:
            return
        self.log(f"initialised weights from {init.load_into(self.model)}")

    def evaluate(self, steps: int | None = None) -> dict:
        """Token loss/accuracy over the first ``steps`` batches of the eval split."""
        d, t = self.config.data, self.config.training
        steps = steps or t.eval_steps
        if not hasattr(self, "_eval_step"):
            self._eval_step = self.backend.eval_step_fn(self.model, self.loss_fn)
        batches = self.backend.distribute(
            self._dataset_fn(d.eval_split, shuffle=False, take_batches=steps))
        total = {"loss": 0.0, "accuracy": 0.0, "tokens": 0.0}
        for batch in batches:
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
        batch = {k: np.asarray(v) for k, v in next(iter(fn())).items()}
        logits = self.model(batch, training=False)
        import keras

        pred = np.argmax(keras.ops.convert_to_numpy(logits), axis=-1)
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
        self.backend.sync()
        metrics = self.evaluate()
        for action in self.actions:
            metrics.update(action.on_eval(self, step, dict(metrics), writer) or {})
        writer.scalars("eval", step, metrics)
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
            try:
                return self._train()
            except OSError as e:  # disk full, read-only or unwritable directory
                raise StorageError.from_os_error(e, self.model_dir) from None
            except self.backend.worker_lost_errors() as e:
                lost = getattr(self.backend, "is_worker_lost", lambda error: True)
                if self.worker.num_workers <= 1 or isinstance(e, T5preError) or not lost(e):
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
        examples, pipelines = self.keeper.restored_position()
        return step, examples, pipelines, latest

    def _check_resumed_config(self) -> None:
        """A resumed run must read the same data stream: refuse changed task, lengths, batch size,
        packing or data seed (one line listing them) unless training.allow_data_change."""
        from t5pre.training.config import data_stream_changes, load_config

        path = os.path.join(self.model_dir, RUN_CONFIG_FILE)
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

    def _start(self) -> "_Run":
        """Build, resume (or initialise), write the model files and open the logs."""
        self.build()
        t, d = self.config.training, self.config.data
        self._check_model_dir(self.model)
        step, data_examples, _, latest = self._resume()
        if latest:
            self.log(f"resumed from {latest} (step {step})")
        else:
            self._init_weights()
        for action in self.actions:
            action.on_start(self)
        self._prepare_model_dir(self.model)
        writer = summaries.Summaries(self.model_dir, enabled=self.is_chief)
        self.log(f"model directory {self.model_dir}; strategy {self.backend.describe()} "
                 f"({self.backend.name} backend)")
        self.log(f"TensorBoard: tensorboard --logdir {summaries.log_dir(self.model_dir)}")
        if step == 0:
            writer.text("train", 0, "config", "```\n" + self.config.to_yaml() + "\n```")
            writer.hparams(self.config.to_dict(), run_name=os.path.basename(
                os.path.abspath(self.model_dir)))
        pipelines = self.worker.num_workers  # recorded; the position is global, so exact for any
        return _Run(step=step, start_step=step, saved_step=step, data_examples=data_examples,
                    pipelines=pipelines, last_ckpt=latest, writer=writer)

    def _train(self) -> TrainResult:
        run = self._start()
        t, d = self.config.training, self.config.data
        if run.step >= t.steps:
            self.log(f"already at step {run.step} >= training.steps {t.steps}; nothing to do "
                     f"(pass a larger --steps to continue)")
            run.writer.close()
            return TrainResult(run.step, {}, 0, run.last_ckpt, [])
        dataset_fn = self._dataset_fn(d.train_split, shuffle=d.shuffle,
                                      start_examples=run.data_examples)
        if dataset_fn.packing_note:
            self.log(dataset_fn.packing_note)
        run.examples_per_step = t.batch_size * dataset_fn.examples_per_row
        batches = iter(self.backend.distribute(dataset_fn))
        train_step = self.backend.train_step_fn(self.model, self.optimizer, self.loss_fn, t)
        self._flops = self._flops_per_token() if t.peak_flops else None
        stop = StopRequests(sync=getattr(self.backend, "stop_sync", lambda: None)())
        profiler = _Profiler(profile_range(t.profile_steps), summaries.log_dir(self.model_dir),
                             enabled=self.is_chief, log=self.log, backend=self.backend)
        try:
            stop.__enter__()
            while run.step < t.steps:
                self._step(run, batches, train_step, profiler)
                self._maybe_log(run)
                self._maybe_checkpoint(run)
                self.keeper.poll()  # lists an asynchronous save once its files are complete
                self._maybe_evaluate(run)
                self._maybe_stop(run, stop)
            self.keeper.wait()  # the last checkpoint listed before the run says done
        finally:
            stop.__exit__(None, None, None)
            profiler.stop()
            run.writer.close()
            self.keeper.close()
        done = run.step - run.start_step
        if done:
            self.log(f"done: step {run.step}, {done} steps in {sum(run.step_times):.1f}s"
                     f"{f', {run.skipped} skipped' if run.skipped else ''}; "
                     f"checkpoint {run.last_ckpt}")
        return TrainResult(run.step, run.last_metrics, run.skipped, run.last_ckpt, run.history)

    def _step(self, run: "_Run", batches, train_step, profiler) -> None:
        """One optimizer step; counts a non-finite one and stops after too many in a row."""
        t = self.config.training
        profiler.before_step(run.step + 1)
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        out = train_step(batch)
        t2 = time.perf_counter()
        run.step += 1
        run.eta.mark(run.step)
        profiler.after_step(run.step)
        run.data_examples += run.examples_per_step
        finite = bool(out["finite"])
        if finite:
            run.bad_streak = 0
        else:
            run.bad_streak += 1
            run.skipped += 1
            self.log(f"step {run.step}: non-finite loss/gradient (loss "
                     f"{float(out['global_loss'])}, grad norm {float(out['grad_norm'])}); "
                     f"update skipped ({run.bad_streak} in a row, limit "
                     f"{t.nonfinite_skip_limit})")
            if run.bad_streak > t.nonfinite_skip_limit:
                raise TrainingDivergedError(
                    f"training diverged: {run.bad_streak} consecutive steps with a non-finite "
                    f"loss or gradient at step {run.step} (limit training.nonfinite_skip_limit"
                    f" = {t.nonfinite_skip_limit}); the last good checkpoint is "
                    f"{run.last_ckpt or 'none'}. Lower the learning rate, use float32 or "
                    "raise the limit.")
        run.window.add(out, t1 - t0, t2 - t0, finite)
        run.step_times.append(t2 - t0)

    def _maybe_log(self, run: "_Run") -> None:
        t, d = self.config.training, self.config.data
        if not (run.step % t.log_every == 0 or run.step == t.steps):
            return
        self.backend.sync()
        metrics = run.window.summary(self)
        metrics["learning_rate"] = self._learning_rate_at(self._updates_applied() - 1)
        if self._flops and t.peak_flops:
            # Hardware FLOPs: every position of the padded example is computed.
            seq = d.sequence_length.inputs + d.sequence_length.targets
            peak = t.peak_flops * self.backend.num_replicas
            metrics["mfu"] = self._flops * seq * metrics["examples_per_sec"] / peak
        metrics["skipped_steps"] = run.skipped
        eta = run.eta.seconds_left(t.steps)  # this process's steps, the first (compile) left out
        self.log(summaries.progress_line(run.step, t.steps, metrics, eta))
        run.writer.scalars("train", run.step, metrics)
        run.writer.flush()
        run.history.append((run.step, metrics.get("loss")))
        run.last_metrics = metrics
        run.window = _Window()

    def _save(self, run: "_Run") -> None:
        self.backend.sync()
        path = self.keeper.save(run.step, run.data_examples, run.pipelines)
        run.last_ckpt, run.saved_step = path or run.last_ckpt, run.step

    def _maybe_checkpoint(self, run: "_Run") -> None:
        t = self.config.training
        if not (run.step % t.checkpoint_every == 0 or run.step == t.steps):
            return
        if run.bad_streak:
            # The weights may already be blowing up: keep the last checkpoint from before the
            # streak as the newest one (and out of rotation's reach).
            self.log(f"step {run.step}: checkpoint not written during a streak of non-finite "
                     f"steps (last good: {run.last_ckpt or 'none'})")
            return
        self._save(run)

    def _maybe_evaluate(self, run: "_Run") -> None:
        t = self.config.training
        if self._eval_enabled and (run.step % t.eval_every == 0 or run.step == t.steps):
            run.last_metrics.update({f"eval_{k}": v
                                     for k, v in self._run_eval(run.step, run.writer).items()})

    def _maybe_stop(self, run: "_Run", stop: StopRequests) -> None:
        # Asked after every step (a sync point needs every process at every step).
        if not stop.should_stop(run.step) or run.step >= self.config.training.steps:
            return
        # Every worker stops here (a sync point names the same step to all) and every worker
        # takes part in the save; the chief's copy is kept.
        if run.saved_step != run.step and not run.bad_streak:
            self._save(run)
        self.keeper.wait()  # listed before the message names it
        run.writer.flush()
        message = (f"{stop.describe()}: stopped at step {run.step}; checkpoint saved to "
                   f"{run.last_ckpt}; re-run the same command to resume")
        self.log(message)
        raise TrainingInterrupted(message, run.step, run.last_ckpt)


@dataclasses.dataclass
class _Run:
    """The loop's state between steps."""

    step: int
    start_step: int
    saved_step: int
    data_examples: int
    pipelines: int
    last_ckpt: str | None
    writer: object
    bad_streak: int = 0
    skipped: int = 0
    examples_per_step: int = 0  # global examples a step consumes (batch size x packed per row)
    window: "_Window" = dataclasses.field(default_factory=lambda: _Window())
    history: list = dataclasses.field(default_factory=list)
    last_metrics: dict = dataclasses.field(default_factory=dict)
    step_times: list = dataclasses.field(default_factory=list)
    eta: summaries.Eta = dataclasses.field(default_factory=lambda: summaries.Eta())


class _Profiler:
    """A profiler trace (TensorFlow's or JAX's) of steps START..END (``training.profile_steps``), written to
    ``DIR/logs/train`` for TensorBoard's Profile tab; stopped on any exit from the loop."""

    def __init__(self, steps, log_dir: str, *, enabled: bool, log, backend):
        self.steps = steps if enabled else None
        self.backend = backend
        self.log_dir = os.path.join(log_dir, "train")
        self.active = False
        self._log = log

    def before_step(self, step: int) -> None:
        if self.steps and step == self.steps[0] and not self.active:
            self.backend.start_profiler(self.log_dir)
            self.active = True

    def after_step(self, step: int) -> None:
        if self.active and step >= self.steps[1]:
            self.stop()
            self._log(f"profiler trace of steps {self.steps[0]}-{self.steps[1]} written to "
                      f"{self.log_dir} (TensorBoard: Profile)")

    def stop(self) -> None:
        if self.active:
            self.active = False
            self.backend.stop_profiler()


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
