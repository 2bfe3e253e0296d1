"""Exact resume: after a SIGKILL (mid-run, or in the middle of writing a checkpoint) re-running
the same command ends with the weights of an uninterrupted run (op determinism on), continues
the loss curve, and `--steps` larger than a finished run continues it."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from t5pre.training.checkpointing import all_checkpoint_steps, latest_checkpoint
from t5pre.training.testing import SyntheticTask, tiny_config, weights_of

# Adafactor with T5's rsqrt schedule: the rate depends on the step and on nothing else, so a
# lost or repeated step, a reset step counter or a lost optimizer state all change the weights.
RUN = ("optimizer.name=adafactor", "optimizer.schedule=rsqrt", "optimizer.learning_rate=0.3",
       "optimizer.warmup_steps=4", "training.steps=20", "training.checkpoint_every=5",
       "training.log_every=1", "training.keep_checkpoints=10")


def train(model_dir, *overrides):
    from t5pre.training.trainer import Trainer

    cfg = tiny_config(*RUN, *overrides, model_dir=str(model_dir))
    trainer = Trainer(cfg, str(model_dir), task=SyntheticTask())
    return trainer, trainer.train()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    trainer, result = train(tmp_path_factory.mktemp("ref") / "run")
    return weights_of(trainer.model), dict(result.history)


def _driver(model_dir, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "t5pre.training.testing", "--model-dir", str(model_dir)]
    for o in RUN:
        cmd += ["--set", o]
    return subprocess.Popen(cmd + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)


def assert_same_weights(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_sigkill_inside_a_checkpoint_write_then_resume_and_continue(tmp_path, reference):
    ref_weights, ref_history = reference
    run = tmp_path / "run"
    proc = _driver(run, "--die-in-save-at", "10")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, out
    assert "step 10/20" in out
    # The ckpt-10 data files were written but the state file still names ckpt-5: a reader can
    # never pick up the interrupted checkpoint.
    assert os.path.exists(run / "checkpoints" / "ckpt-10.index")
    assert latest_checkpoint(str(run)).endswith("ckpt-5")
    assert all_checkpoint_steps(str(run)) == [5]

    # Resume, stopping at 12 (as if killed again), then continue with a larger --steps.
    _, first = train(run, "training.steps=12")
    assert first.step == 12 and sorted(dict(first.history)) == list(range(6, 13))
    trainer, second = train(run)  # the original command: training.steps=20
    assert second.step == 20 and sorted(dict(second.history)) == list(range(13, 21))
    assert_same_weights(weights_of(trainer.model), ref_weights)
    # The loss curve continues exactly where the uninterrupted one was.
    for step, loss in {**dict(first.history), **dict(second.history)}.items():
        assert loss == pytest.approx(ref_history[step], rel=1e-6), step
    assert all_checkpoint_steps(str(run)) == [5, 10, 12, 15, 20]


def test_resumed_data_stream_is_the_uninterrupted_one():
    """The data position is a skip count over a deterministic stream: check the stream itself."""
    import tensorflow as tf

    from t5pre.training.data import make_dataset_fn

    def batches(start, n):
        fn = make_dataset_fn(SyntheticTask(), {"inputs": 16, "targets": 8}, split="train",
                             global_batch_size=4, pack=False, shuffle=True, seed=3,
                             start_examples=start)
        return [b["encoder_token_ids"].numpy() for b in fn(tf.distribute.InputContext()).take(n)]

    full = batches(0, 6)
    for got, want in zip(batches(8, 4), full[2:]):
        np.testing.assert_array_equal(got, want)


def test_sigterm_saves_the_current_step_and_resumes_exactly(tmp_path, reference):
    """A SIGTERM between periodic checkpoints loses nothing: the run saves the step it is at
    (not the last multiple of checkpoint_every) and the resumed run ends as if never stopped."""
    import re

    ref_weights, ref_history = reference
    run = tmp_path / "run"
    proc = _driver(run, "--slow", "0.3")  # sleeps after each logged step: time to signal
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "step 6/20" in line:
            proc.send_signal(signal.SIGTERM)
            break
    out = "".join(lines) + proc.communicate(timeout=300)[0]
    assert proc.returncode not in (0, -signal.SIGTERM), out  # stopped by us, not killed
    stopped = re.search(r"SIGTERM: stopped at step (\d+); checkpoint saved to (\S+);", out)
    assert stopped, out
    step = int(stopped.group(1))
    assert 6 <= step < 20 and step % 5, out  # between two periodic checkpoints
    assert stopped.group(2) == latest_checkpoint(str(run)) == str(run / "checkpoints" /
                                                                  f"ckpt-{step}")
    assert f"step {step + 1}/20" not in out

    trainer, resumed = train(run)
    assert resumed.step == 20 and sorted(dict(resumed.history)) == list(range(step + 1, 21))
    assert_same_weights(weights_of(trainer.model), ref_weights)
    for s, loss in resumed.history:
        assert loss == pytest.approx(ref_history[s], rel=1e-6), s
