"""Exact resume: after a SIGKILL (mid-run, or in the middle of writing a checkpoint) re-running
the same command ends with the weights of an uninterrupted run (op determinism on), continues
the loss curve, and `--steps` larger than a finished run continues it."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from t5pre.models.checkpoints import all_checkpoint_steps, latest_checkpoint
from t5pre.training.testing import SyntheticTask

pytestmark = pytest.mark.slow  # CLI subprocesses / training runs: see pyproject's markers

# Adafactor with T5's rsqrt schedule: the rate depends on the step and on nothing else, so a
# lost or repeated step, a reset step counter or a lost optimizer state all change the weights.
RUN = ("optimizer.name=adafactor", "optimizer.schedule=rsqrt", "optimizer.learning_rate=0.3",
       "optimizer.warmup_steps=4", "training.steps=20", "training.checkpoint_every=5",
       "training.log_every=1", "training.keep_checkpoints=10")


def _driver(model_dir, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "t5pre.training.testing", "--model-dir", str(model_dir)]
    for o in RUN:
        cmd += ["--set", o]
    return subprocess.Popen(cmd + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)


def train_in_subprocess(model_dir, *overrides):
    """Train with the test driver in a fresh process; returns (weights, {step: loss}, step).

    The exactness checks compare fresh processes only: runs inside the pytest process inherit
    whatever earlier tests left in TensorFlow's global state, which perturbs the last bits of a
    float, and with Adafactor at lr 0.3 such bits grow into visibly different weights."""
    dump = f"{model_dir}.dump"
    args = [a for o in overrides for a in ("--set", o)]
    proc = _driver(model_dir, *args, "--dump", dump)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    with np.load(dump + ".npz") as arrays:
        weights = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
    with open(dump + ".json") as f:
        result = json.load(f)
    return weights, {int(s): loss for s, loss in result["history"]}, result["step"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    weights, history, step = train_in_subprocess(tmp_path_factory.mktemp("ref") / "run")
    assert step == 20
    return weights, history


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
    _, first, first_step = train_in_subprocess(run, "training.steps=12")
    assert first_step == 12 and sorted(first) == list(range(6, 13))
    weights, second, second_step = train_in_subprocess(run)  # the original command: 20 steps
    assert second_step == 20 and sorted(second) == list(range(13, 21))
    assert_same_weights(weights, ref_weights)
    # The loss curve continues exactly where the uninterrupted one was.
    for step, loss in {**first, **second}.items():
        assert loss == pytest.approx(ref_history[step], rel=1e-6), step
    assert all_checkpoint_steps(str(run)) == [5, 10, 12, 15, 20]


def test_xla_step_resumes_exactly(tmp_path_factory):
    """The XLA-compiled step (`training.jit_compile`, on by default for long runs) resumes as
    exactly as the graph step: killed in a checkpoint write, resumed, same weights."""
    xla = "training.jit_compile=true"
    ref_weights, ref_history, _ = train_in_subprocess(tmp_path_factory.mktemp("xla") / "ref", xla)
    run = tmp_path_factory.mktemp("xla") / "run"
    proc = _driver(run, "--set", xla, "--die-in-save-at", "10")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, out
    weights, resumed, step = train_in_subprocess(run, xla)
    assert step == 20 and sorted(resumed) == list(range(6, 21))
    assert_same_weights(weights, ref_weights)
    for s, loss in resumed.items():
        assert loss == pytest.approx(ref_history[s], rel=1e-6), s


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

    weights, resumed, resumed_step = train_in_subprocess(run)
    assert resumed_step == 20 and sorted(resumed) == list(range(step + 1, 21))
    assert_same_weights(weights, ref_weights)
    for s, loss in resumed.items():
        assert loss == pytest.approx(ref_history[s], rel=1e-6), s
