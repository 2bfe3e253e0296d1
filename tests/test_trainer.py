"""The training loop: loss falls, model directory layout, NaN skipping, load_model, the `t5pre pretrain` command and its errors."""

import json
import os

import numpy as np
import pytest

from t5pre.errors import CheckpointError, ConfigError
from t5pre.training.testing import SyntheticTask, tiny_config, weights_of


def train(model_dir, *overrides, task=None, **kwargs):
    from t5pre.training.trainer import Trainer

    trainer = Trainer(tiny_config(*overrides, model_dir=str(model_dir)), str(model_dir),
                      task=task or SyntheticTask(), **kwargs)
    return trainer, trainer.train()


SHORT_RUN = ("training.steps=40", "training.log_every=10", "training.checkpoint_every=20",
             "optimizer.learning_rate=1e-2", "optimizer.warmup_steps=4")


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """One 40-step run shared by the tests that only read its results."""
    model_dir = tmp_path_factory.mktemp("short") / "run"
    trainer, result = train(model_dir, *SHORT_RUN)
    return model_dir, trainer, result


def test_short_run_loss_falls_and_writes_the_model_dir(short_run):
    run, _, result = short_run
    losses = [loss for _, loss in result.history]
    assert [s for s, _ in result.history] == [10, 20, 30, 40]
    assert losses[-1] < losses[0] - 0.5, losses  # ln(128)=4.85 at the start
    assert result.step == 40 and result.skipped_steps == 0
    for name in ("config.yaml", "model_config.json", "checkpoints/checkpoint",
                 "checkpoints/ckpt-20.index", "checkpoints/ckpt-40.index"):
        assert (run / name).exists(), name
    assert json.loads((run / "model_config.json").read_text())["d_model"] == 32


def test_rerunning_a_finished_run_does_nothing(short_run, capsys):
    run, _, _ = short_run
    _, again = train(run, *SHORT_RUN)
    assert again.step == 40 and again.history == []
    assert "nothing to do" in capsys.readouterr().out


def _poisoned_loss(bad_calls):
    """seq2seq_loss that returns +inf on the given (0-based) calls, i.e. training steps."""
    import tensorflow as tf

    from t5pre.models import seq2seq_loss

    calls = tf.Variable(0, dtype=tf.int64, trainable=False)
    bad = tf.constant(sorted(bad_calls), dtype=tf.int64)

    def loss_fn(targets, logits, weights, z_loss=0.0):
        loss, metrics = seq2seq_loss(targets, logits, weights, z_loss=z_loss)
        poisoned = tf.reduce_any(tf.equal(bad, calls))
        calls.assign_add(1)
        return loss * tf.where(poisoned, np.inf, 1.0), metrics

    return loss_fn


@pytest.mark.parametrize("jit", ["null", "true"])
def test_nonfinite_steps_are_skipped(tmp_path, jit):
    trainer, result = train(tmp_path / "nan", "training.steps=10", "training.nonfinite_skip_limit=2",
                            f"training.jit_compile={jit}", loss_fn=_poisoned_loss({3, 4}))
    assert result.step == 10 and result.skipped_steps == 2
    assert int(trainer.optimizer.iterations.numpy()) == 8  # skipped steps do not update
    assert all(np.isfinite(w).all() for w in weights_of(trainer.model))


def test_xla_train_step_by_default_for_long_single_replica_runs():
    from t5pre.training.config import XLA_MIN_STEPS
    from t5pre.training.step_tf import TFBackend

    backend = TFBackend(tiny_config().strategy)
    assert backend.num_replicas == 1

    def jit(*overrides):
        return backend.jit_compile(tiny_config(*overrides).training)

    assert jit(f"training.steps={XLA_MIN_STEPS}") is True
    assert jit(f"training.steps={XLA_MIN_STEPS - 1}") is None  # compiling would not pay off
    assert jit("training.steps=20", "training.jit_compile=true") is True
    assert jit(f"training.steps={XLA_MIN_STEPS}", "training.jit_compile=false") is None


def test_divergence_stops_with_a_clear_error_and_keeps_the_good_checkpoint(tmp_path, capsys):
    from t5pre.training.trainer import TrainingDivergedError

    with pytest.raises(TrainingDivergedError) as e:
        train(tmp_path / "div", "training.steps=20", "training.checkpoint_every=4",
              "training.nonfinite_skip_limit=2", loss_fn=_poisoned_loss(set(range(5, 100))))
    msg = str(e.value)
    assert "3 consecutive steps" in msg and "at step 8" in msg and "ckpt-4" in msg
    from t5pre.models.checkpoints import latest_checkpoint
    assert latest_checkpoint(str(tmp_path / "div")).endswith("ckpt-4")
    model, _, _ = load_model(tmp_path / "div")
    assert all(np.isfinite(w).all() for w in weights_of(model))


def load_model(model_dir, checkpoint=None):
    """The model directory's reader, as training tests need it (a stand-in task has no
    vocabulary, which inference would require)."""
    from t5pre.models.store import load_training_dir

    return load_training_dir(model_dir, checkpoint)[:3]


def test_load_model_returns_the_trained_weights(short_run):

    run, trainer, _ = short_run
    model, vocabulary, run_config = load_model(run)
    assert run_config.training.steps == 40 and vocabulary is None  # the stand-in has no spiece
    for a, b in zip(weights_of(trainer.model), weights_of(model)):
        np.testing.assert_array_equal(a, b)
    older, _, _ = load_model(run, checkpoint=20)
    assert any(not np.array_equal(a, b)
               for a, b in zip(weights_of(model), weights_of(older)))
    with pytest.raises(CheckpointError, match="available steps: 20, 40"):
        load_model(run, checkpoint=30)


def test_model_dir_errors(tmp_path):

    with pytest.raises(CheckpointError, match="model directory not found"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        load_model(tmp_path / "empty")


def test_resuming_with_another_model_is_refused(short_run):
    run, _, _ = short_run
    with pytest.raises(CheckpointError, match="another model, with another architecture.*d_model 32 there, 48"):
        train(run, "training.steps=50", "model.overrides.d_model=48")
    # another task with another vocabulary into the same directory: said in those words
    with pytest.raises(CheckpointError) as info:
        train(run, "training.steps=50", "model.overrides.vocab_size=256",
              "data.task=another_task")
    message = str(info.value)
    assert message.startswith(f"{run} already holds another model, with another vocabulary "
                              "(vocab_size 128 there, 256 in this run, model_config.json); it "
                              "was trained on 'synthetic', this run trains 'another_task': ")
    assert "new --model-dir" in message and "model.name" not in message


def test_cli_refuses_a_backend_other_than_tensorflow_or_jax(tmp_path, capsys, monkeypatch):
    from t5pre.cli import main

    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert main(["pretrain", "--model-dir", str(tmp_path / "j"), "--steps", "1"]) == 2
    assert "training runs on the TensorFlow or JAX backend" in capsys.readouterr().err
    assert not (tmp_path / "j").exists()


def test_cli_errors_are_one_line(tmp_path, capsys):
    from t5pre.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  task: default_span_corruption\ntraining:\n  stepz: 3\n")
    assert main(["pretrain", "--config", str(bad), "--model-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("t5pre: error: ") and "bad.yaml:4" in err and "'steps'" in err
    assert main(["pretrain", "--model-dir", str(tmp_path / "x"), "--set",
                 "data.task=no_such_task"]) == 2
    assert "data.task = 'no_such_task'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_pretrain_on_the_real_default_task(tmp_path, capsys):
    """`t5pre pretrain` end to end: packaged default config, real span-corruption pipeline,
    shipped vocabulary saved beside the checkpoints, load_model reads it all back."""
    import tensorflow as tf

    import t5pre
    from t5pre.cli import main

    # A tokenizer used eagerly before training must survive the trainer's seeding (TF's
    # tf.random.set_seed would clear the kernel cache and delete its resource).
    vocab = t5pre.get_task("default_span_corruption").output_features["targets"].vocabulary
    assert len(vocab.encode_tf(tf.constant("hello world")).numpy()) > 0
    run = tmp_path / "default"
    code = main(["pretrain", "--model-dir", str(run), "--steps", "3",
                 "--set", "training.batch_size=4", "--set", "training.log_every=1",
                 "--set", "training.eval_every=0",
                 "--set", "data.sequence_length={inputs: 32, targets: 8}",
                 "--set", "model.overrides={d_model: 32, d_ff: 64, num_heads: 2, d_kv: 16, "
                          "num_encoder_layers: 1, num_decoder_layers: 1}"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "tensorboard --logdir" in out and "step 3/3" in out
    assert (run / "spiece.model").is_file() and (run / "vocab.json").is_file()
    model, vocabulary, cfg = load_model(run)
    assert cfg.data.task == "default_span_corruption"
    assert model.config.vocab_size >= vocabulary.vocab_size


def _truncated_copy(run, dest):
    """A copy of a model directory whose latest checkpoint's .data file is cut in half."""
    import shutil

    from t5pre.models.checkpoints import latest_checkpoint

    shutil.copytree(run, dest)
    prefix = latest_checkpoint(str(dest))
    data = f"{prefix}.data-00000-of-00001"
    os.truncate(data, os.path.getsize(data) // 2)
    return prefix


def test_truncated_checkpoint_is_a_clear_error(short_run, tmp_path):
    from t5pre.models.checkpoints import restore_model_weights

    run, trainer, _ = short_run
    prefix = _truncated_copy(run, tmp_path / "cut")
    assert prefix.endswith("ckpt-40")
    with pytest.raises(CheckpointError) as e:
        restore_model_weights(trainer.model, str(tmp_path / "cut"))
    assert str(e.value).startswith(f"{prefix}: checkpoint is truncated or corrupt")
    assert f"delete {prefix}.*" in str(e.value)
    # Training does not stop on it (issue F7/F1): it says so and resumes from ckpt-20.
    messages = []
    _, result = train(tmp_path / "cut", *SHORT_RUN, "training.steps=50", log=messages.append)
    text = "\n".join(messages)
    assert "ckpt-40: checkpoint is truncated or corrupt" in text
    assert f"resumed from {tmp_path / 'cut' / 'checkpoints' / 'ckpt-20'} (step 20)" in text
    assert result.step == 50


TEXT_MODULE = '''
from t5pre.tasks.pretraining import register_text_pretraining_task

register_text_pretraining_task("my_notes_{tag}", {{"train": [{path!r}]}})
'''

TINY_CLI = ("--set", "training.batch_size=4", "--set", "training.log_every=1",
            "--set", "training.eval_every=0", "--set", "training.checkpoint_every=100",
            "--set", "data.sequence_length={inputs: 32, targets: 8}",
            "--set", "model.overrides={d_model: 32, d_ff: 64, num_heads: 2, d_kv: 16, "
                     "num_encoder_layers: 1, num_decoder_layers: 1}")


@pytest.mark.slow
def test_cli_module_task_rerun_keeps_the_run_config_and_sigterm_saves(tmp_path, capsys,
                                                                      monkeypatch):
    """`--module` registers a user's text task; a re-run without --config keeps the first
    run's --set values; SIGTERM mid-run saves the current step and exits 130."""
    import signal

    from t5pre.cli import main
    from t5pre.training import summaries
    from t5pre.models.checkpoints import all_checkpoint_steps, latest_checkpoint

    text = tmp_path / "notes.txt"
    text.write_text("".join(f"note {i}: the quick brown fox jumps over {i} lazy dogs\n"
                            for i in range(60)))
    tag = os.urandom(4).hex()  # a fresh module and task name per run of the test
    (tmp_path / f"mynotes_{tag}.py").write_text(TEXT_MODULE.format(tag=tag, path=str(text)))
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"

    argv = ["pretrain", "--model-dir", str(run), "--module", f"mynotes_{tag}"]
    assert main([*argv, "--steps", "2", "--set", f"data.task=my_notes_{tag}", *TINY_CLI]) == 0
    out = capsys.readouterr().out
    assert "step 2/2" in out
    assert f"task: my_notes_{tag}" in (run / "config.yaml").read_text()

    # Without --config or --set: the saved config (tiny model, our task), not default.yaml.
    assert main([*argv, "--steps", "3"]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert f"using the run config saved in {run / 'config.yaml'}" in out
    assert "resumed from" in out and "step 3/3" in out
    assert f"task: my_notes_{tag}" in (run / "config.yaml").read_text()

    # SIGTERM while step 5 is being logged: the step finishes, is saved, the exit is 130.
    progress_line = summaries.progress_line

    def progress_then_sigterm(step, *args, **kwargs):
        if step == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return progress_line(step, *args, **kwargs)

    monkeypatch.setattr(summaries, "progress_line", progress_then_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    assert main([*argv, "--steps", "9"]) == 130
    out = capsys.readouterr().out
    assert f"stopped at step 5; checkpoint saved to {run / 'checkpoints' / 'ckpt-5'}" in out
    assert "re-run the same command to resume" in out and "step 6/9" not in out
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back
    assert latest_checkpoint(str(run)).endswith("ckpt-5")
    assert all_checkpoint_steps(str(run)) == [2, 3, 5]
