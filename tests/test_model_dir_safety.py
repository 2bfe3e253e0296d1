"""The model directory never loses work: damaged checkpoints (F1, F2, F7), a second process (F3,
the lock), non-finite streaks (F4), a changed data stream on resume (F5), an unwritable
directory (F6), leftovers of killed saves, and TensorBoard steps written once after a resume."""

import os
import subprocess
import sys

import pytest

from t5pre.errors import CheckpointError, ConfigError, StorageError
from t5pre.training.testing import SyntheticTask, tiny_config

RUN = ("training.steps=12", "training.log_every=2", "training.checkpoint_every=4",
       "training.keep_checkpoints=2", "training.eval_every=0")


def train(model_dir, *overrides, **kwargs):
    from t5pre.training.trainer import Trainer

    messages = []
    trainer = Trainer(tiny_config(*RUN, *overrides, model_dir=str(model_dir)), str(model_dir),
                      task=SyntheticTask(), log=messages.append, **kwargs)
    return trainer, trainer.train(), "\n".join(messages)


def ckpt_files(run):
    from t5pre.models.layout import CHECKPOINTS_DIR

    return sorted(os.listdir(run / CHECKPOINTS_DIR))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A 12-step run with checkpoints 8 and 12 kept."""
    run = tmp_path_factory.mktemp("safety") / "run"
    train(run)
    return run


def copy_of(finished, tmp_path):
    import shutil

    dest = tmp_path / "run"
    shutil.copytree(finished, dest)
    return dest


def test_missing_index_of_newest_falls_back_and_keeps_the_good_one(finished, tmp_path):
    """F1: the newest .index is gone -> resume from ckpt-8, never restart at step 1, and the
    good checkpoint is only deleted once newer readable ones supersede it."""
    from t5pre.models.checkpoints import all_checkpoint_steps

    run = copy_of(finished, tmp_path)
    os.remove(run / "checkpoints" / "ckpt-12.index")
    _, result, log = train(run, "training.steps=14")
    assert "ckpt-12.index is missing" in log
    assert f"resumed from {run / 'checkpoints' / 'ckpt-8'} (step 8)" in log
    assert result.step == 14
    assert all_checkpoint_steps(str(run)) == [12, 14]  # 8 superseded by two readable ones
    assert "ckpt-12.index" in ckpt_files(run)


def test_every_checkpoint_damaged_is_an_error_not_a_restart(finished, tmp_path):
    run = copy_of(finished, tmp_path)
    for name in ckpt_files(run):
        if name.endswith(".index"):
            os.remove(run / "checkpoints" / name)
    with pytest.raises(CheckpointError, match="no checkpoint can be read.*ckpt-12, ckpt-8"):
        train(run, "training.steps=14")
    assert not (run / "checkpoints" / "ckpt-1.index").exists()


def test_unparsable_state_file_recovers_from_the_files_on_disk(finished, tmp_path):
    """F2: a garbled `checkpoint` file -> the ckpt-N.index files on disk are used."""
    from t5pre.models.checkpoints import latest_checkpoint

    run = copy_of(finished, tmp_path)
    (run / "checkpoints" / "checkpoint").write_bytes(b"\x00\xffnot a {{ proto")
    assert latest_checkpoint(str(run)).endswith("ckpt-12")
    _, result, log = train(run, "training.steps=13")
    assert "unreadable; recovering from the checkpoint files on disk (steps 8, 12)" in log
    assert "resumed from" in log and "(step 12)" in log and result.step == 13
    assert "ckpt-13" in (run / "checkpoints" / "checkpoint").read_text()  # state rewritten


def test_zeroed_data_file_is_called_corrupt_and_falls_back(finished, tmp_path):
    """F7: a zeroed .data file is 'corrupt', not 'another model config', and F1 applies."""
    from t5pre.models.checkpoints import restore_model_weights

    run = copy_of(finished, tmp_path)
    data = run / "checkpoints" / "ckpt-12.data-00000-of-00001"
    data.write_bytes(b"\0" * data.stat().st_size)
    _, result, log = train(run, "training.steps=13")
    assert "ckpt-12: checkpoint is truncated or corrupt" in log
    assert "another model" not in log
    assert "(step 8)" in log and result.step == 13
    trainer, _, _ = train(tmp_path / "other", "training.steps=1")
    data = tmp_path / "other" / "checkpoints" / "ckpt-1.data-00000-of-00001"
    data.write_bytes(b"\0" * data.stat().st_size)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        restore_model_weights(trainer.model, str(tmp_path / "other"))


def test_leftovers_of_killed_saves_are_removed(finished, tmp_path):
    run = copy_of(finished, tmp_path)
    (run / "checkpoints" / "ckpt-16_temp").mkdir()
    (run / "checkpoints" / "ckpt-16_temp" / "part-00000-of-00001.index").write_bytes(b"x")
    (run / "checkpoints" / "checkpoint.tmp1234abcd").write_text("partial")
    _, _, log = train(run, "training.steps=13")
    assert "removed 2 leftover(s) of interrupted saves" in log
    assert not any("_temp" in n or n.startswith("checkpoint.tmp") for n in ckpt_files(run))


LOCK_HOLDER = r"""
import sys, time
from t5pre.models.dir_lock import ModelDirLock
with ModelDirLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_second_process_is_refused_naming_the_holder_and_a_killed_holder_frees_it(tmp_path):
    """F3: an exclusive lock for the run; a SIGKILLed holder leaves no stale lock."""
    from t5pre.models.dir_lock import ModelDirLockedError

    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(run)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ModelDirLockedError) as e:
            train(run, "training.steps=2")
        assert f"pid {holder.pid} on host" in str(e.value) and "in use by" in str(e.value)
        assert not (run / "checkpoints").exists() and not (run / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    _, result, _ = train(run, "training.steps=2")  # the kernel dropped the dead holder's lock
    assert result.step == 2


@pytest.mark.slow
def test_cli_second_process_exits_2_with_one_line(tmp_path, capsys):
    from t5pre.cli import main
    from t5pre.models.dir_lock import ModelDirLock

    run = tmp_path / "run"
    with ModelDirLock(str(run)):
        # Same process re-entering is allowed (finetune's evaluation hooks); another is not:
        code = subprocess.run(
            [sys.executable, "-m", "t5pre", "pretrain", "--model-dir", str(run), "--steps", "1"],
            capture_output=True, text=True, timeout=300)
    assert code.returncode == 2, code.stderr
    last = code.stderr.strip().splitlines()[-1]
    assert last.startswith("t5pre: error: ") and "in use by pid" in last
    assert "Traceback" not in code.stderr


def test_no_checkpoint_during_a_nonfinite_streak(tmp_path):
    """F4: the checkpoint named by the divergence error is from before the streak."""
    from t5pre.models.checkpoints import all_checkpoint_steps
    from t5pre.training.trainer import Trainer, TrainingDivergedError

    from tests.test_trainer import _poisoned_loss

    run = tmp_path / "div"
    messages = []
    trainer = Trainer(tiny_config(*RUN, "training.steps=20", "training.checkpoint_every=2",
                                  "training.nonfinite_skip_limit=5", model_dir=str(run)),
                      str(run), task=SyntheticTask(), log=messages.append,
                      loss_fn=_poisoned_loss(set(range(5, 100))))
    with pytest.raises(TrainingDivergedError) as e:
        trainer.train()
    assert "last good checkpoint is" in str(e.value) and "ckpt-4" in str(e.value)
    assert all_checkpoint_steps(str(run)) == [2, 4]  # rotation kept the pre-streak one
    assert "checkpoint not written during a streak" in "\n".join(messages)


@pytest.mark.slow
def test_resume_with_another_data_stream_is_refused_unless_allowed(finished, tmp_path):
    """F5: lengths / batch / task changes are refused in one line; steps may change."""
    run = copy_of(finished, tmp_path)
    before = (run / "config.yaml").read_text()
    with pytest.raises(ConfigError) as e:
        train(run, "training.steps=14", "training.batch_size=4",
              "data.sequence_length={inputs: 24, targets: 8}")
    msg = str(e.value)
    assert "training.batch_size: 8 -> 4" in msg and "data.sequence_length.inputs" in msg
    assert "\n" not in msg and "allow_data_change" in msg
    assert (run / "config.yaml").read_text() == before  # not overwritten
    _, result, log = train(run, "training.steps=14", "training.batch_size=4",
                           "training.allow_data_change=true")
    assert result.step == 14 and "data stream changed" in log
    _, result, _ = train(run, "training.steps=15", "training.batch_size=4",
                         "training.log_every=5")  # the saved config now has batch 4
    assert result.step == 15


def test_failing_checkpoint_write_is_one_clear_error_with_its_own_exit_code(finished, tmp_path,
                                                                             monkeypatch):
    """F6: disk full while saving -> StorageError (exit 3), earlier checkpoints intact."""
    import tensorflow as tf

    from t5pre.models.checkpoints import all_checkpoint_steps, latest_checkpoint

    run = copy_of(finished, tmp_path)
    original = tf.train.Checkpoint.write

    def full_disk(self, file_prefix, options=None):
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(tf.train.Checkpoint, "write", full_disk)
    with pytest.raises(StorageError) as e:
        train(run, "training.steps=16")
    assert "cannot write (No space left on device)" in str(e.value)
    assert StorageError.exit_code == 3
    monkeypatch.setattr(tf.train.Checkpoint, "write", original)
    assert all_checkpoint_steps(str(run)) == [8, 12]
    assert latest_checkpoint(str(run)).endswith("ckpt-12")
    assert not (run / "checkpoints" / "ckpt-16.index").exists()


@pytest.mark.slow
def test_resumed_steps_are_written_to_tensorboard_once(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train(run, "training.steps=6")
    # As if killed after logging step 6 but before a checkpoint of it: drop ckpt-6 from state.
    from t5pre.models.checkpoints import _write_state

    _write_state(str(run / "checkpoints"), str(run / "checkpoints" / "ckpt-4"),
                 [str(run / "checkpoints" / "ckpt-4")])
    train(run, "training.steps=8")
    steps = []
    for name in os.listdir(run / "logs" / "train"):
        if not name.startswith("events"):
            continue
        acc = EventAccumulator(str(run / "logs" / "train" / name), purge_orphaned_data=False)
        acc.Reload()
        steps += [e.step for e in acc.Tensors("loss")]
    assert sorted(steps) == [2, 4, 6, 8]


def test_config_typos_and_unknown_tasks_are_reported_before_tensorflow_is_imported(tmp_path):
    """A wrong key or value is reported without the 5-10 s TensorFlow import (0.13 s measured
    for `t5pre pretrain --set training.stepz=1` on the 2-core CI machine)."""
    code = ("import sys\nfrom t5pre.cli import main\n"
            f"rc = main(['pretrain', '--model-dir', {str(tmp_path / 'r')!r}, "
            "'--set', 'training.stepz=1'])\n"
            "print(rc, 'tensorflow' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.split() == ["2", "False"], out.stderr
    assert "unknown key 'training.stepz' (did you mean 'steps'?)" in out.stderr
    # Unknown task names too, for pretrain and finetune (~0.3 s instead of ~4.5 s).
    for argv, expected in (
            (["pretrain", "--set", "data.task=nosuch"], "data.task = 'nosuch': unknown task"),
            (["finetune", "--init-from", "random", "--task", "nosuch"], "unknown task 'nosuch'")):
        argv = argv + ["--model-dir", str(tmp_path / "t")]
        code = ("import sys\nfrom t5pre.cli import main\n"
                f"rc = main({argv!r})\nprint(rc, 'tensorflow' in sys.modules)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=120)
        assert out.stdout.split() == ["2", "False"], (argv, out.stderr)
        assert expected in out.stderr


@pytest.mark.slow
def test_warns_when_evaluating_on_the_training_split_and_when_all_steps_are_warmup(tmp_path):
    _, _, log = train(tmp_path / "w", "training.steps=2", "training.eval_every=2",
                      "data.eval_split=train", "optimizer.warmup_steps=10")
    assert "data.eval_split and data.train_split are both 'train'" in log
    assert "training.steps (2) <= optimizer.warmup_steps (10)" in log
    _, _, log = train(tmp_path / "ok", "training.steps=2", "optimizer.warmup_steps=1")
    assert "warm-up" not in log and "both" not in log


def test_write_model_files_is_the_one_writer_of_model_config_json(tmp_path):
    """t5pre.models.store.write_model_files: vocabulary files, then model_config.json, atomic
    (no temporary file left), readable by read_model_config; save_pretrained goes through it."""
    from t5pre.data.vocabulary import default_vocabulary
    from t5pre.models.config import T5Config
    from t5pre.models.io import read_model_config
    from t5pre.models.store import MODEL_CONFIG_FILE, model_config_values, write_model_files

    config = T5Config(d_model=8, num_heads=2, d_kv=4, d_ff=16, num_encoder_layers=1,
                      num_decoder_layers=1, vocab_size=4224)
    values = write_model_files(tmp_path / "run", config, default_vocabulary())
    assert sorted(os.listdir(tmp_path / "run")) == [MODEL_CONFIG_FILE, "spiece.model", "vocab.json"]
    assert values == model_config_values(config) and values["format_version"] == 1
    assert read_model_config(tmp_path / "run") == config

    class NoConfig:  # a test double without a config: nothing to write
        config = None

    assert write_model_files(tmp_path / "other", NoConfig()) is None
    assert os.listdir(tmp_path / "other") == []

