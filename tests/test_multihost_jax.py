"""Several JAX processes on 127.0.0.1 (2 processes x 1 CPU device, the real `t5pre pretrain`
on a token cache): the same result as 1 process x 2 devices bit for bit; SIGKILL of any one
process ends every other one with exit 4 within about 30 s and the same command resumes to
the uninterrupted result; SIGTERM to one process stops both at the same step with its
checkpoint (exit 130); an fsdp checkpoint of 2 processes resumes on 1 and the other way round
(Orbax, the default format, where each process writes only its own shards; and the arrays
format).
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from t5pre.training.signals import StopRequests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 24
RUN = ["--set", "training.batch_size=4", "--set", "training.log_every=1",
       "--set", "training.eval_every=0", "--set", "training.checkpoint_every=4",
       "--set", "training.keep_checkpoints=10", "--set", "optimizer.warmup_steps=0",
       "--set", "optimizer.schedule=constant",  # a shorter first run follows the same path
       "--set", "data.sequence_length={inputs: 32, targets: 8}",
       "--set", "model.overrides={d_model: 32, d_ff: 64, num_heads: 2, d_kv: 16, "
                "num_encoder_layers: 1, num_decoder_layers: 1}"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "default"
    result = subprocess.run([sys.executable, "-m", "t5pre", "data", "cache",
                             "default_span_corruption", "--out", str(out), "--split", "train"],
                            env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return str(out)


def _env(devices=1, **extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_", "SLURM_")) and k != "TF_CONFIG"}
    env.update(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)
    return env


class Run:
    """``processes`` x ``devices`` of `t5pre pretrain`; output of process i in ``DIR.outI``."""

    def __init__(self, model_dir, cache, *, processes=2, devices=1, steps=STEPS,
                 strategy="data_parallel", extra=()):
        self.model_dir, self.files, self.procs = str(model_dir), [], []
        self.log = self.model_dir + ".out"
        while os.path.exists(self.log + "0"):  # a re-run keeps the first run's output
            self.log += "+"
        port = _free_port()
        cmd = [sys.executable, "-m", "t5pre", "pretrain", "--model-dir", self.model_dir,
               "--steps", str(steps), "--set", f"data.cache_dir={cache}",
               "--set", f"strategy.name={strategy}"] + RUN + list(extra)
        for i in range(processes):
            extra = {} if processes == 1 else {
                "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                "JAX_NUM_PROCESSES": str(processes), "JAX_PROCESS_ID": str(i)}
            f = open(f"{self.log}{i}", "w")
            self.files.append(f)
            self.procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                                               env=_env(devices, **extra)))

    def output(self, i=0):
        with open(f"{self.log}{i}") as f:
            return f.read()

    def wait_for_step(self, step, timeout=240):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if re.search(rf"^step {step}/", self.output(), re.M):
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.2)
        self.kill()
        raise AssertionError(f"step {step} not reached:\n" + self.output()[-3000:])

    def wait(self, timeout=300):
        codes = []
        try:
            for p in self.procs:
                codes.append(p.wait(timeout=timeout))
        finally:
            self.kill()
        return codes

    def kill(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in self.files:
            f.close()

    def done(self):
        codes = self.wait()
        assert codes == [0] * len(codes), "\n".join(self.output(i)[-3000:]
                                                    for i in range(len(codes)))
        return self


def _losses(text):
    return {int(m.group(1)): m.group(2) for m in re.finditer(
        r"^step (\d+)/\d+ \| loss ([0-9.]+)", text, re.M)}


def _arrays(model_dir, step):
    """Every array of ckpt-STEP (either JAX format) as numpy, checked."""
    from t5pre.models.checkpoints import read_checkpoint_arrays

    return read_checkpoint_arrays(os.path.join(model_dir, "checkpoints", f"ckpt-{step}"))


def _assert_same(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for key in a:
        if atol:
            np.testing.assert_allclose(a[key], b[key], atol=atol, err_msg=key)
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def reference(cache, tmp_path_factory):
    """The uninterrupted run, once on 1 process x 2 devices and once on 2 processes x 1."""
    root = tmp_path_factory.mktemp("ref")
    one = Run(root / "one", cache, processes=1, devices=2)
    two = Run(root / "two", cache)
    one.done(), two.done()
    return one, two


@pytest.mark.slow
def test_two_processes_equal_one_process_with_two_devices_bit_for_bit(reference):
    one, two = reference
    assert "process 0 of 2" in two.output() and "over 2 cpu device(s)" in one.output()
    assert _losses(two.output()) == _losses(one.output())
    assert len(_losses(one.output())) == STEPS
    _assert_same(_arrays(two.model_dir, STEPS), _arrays(one.model_dir, STEPS))


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0], ids=["worker", "chief"])
def test_sigkill_of_one_process_ends_the_other_with_exit_4_and_the_rerun_resumes(
        reference, cache, tmp_path, victim):
    from t5pre.models.checkpoints import all_checkpoint_steps

    run = Run(tmp_path / "run", cache)
    run.wait_for_step(6)
    # Orbax saves asynchronously: a checkpoint is listed once its files are complete (ckpt-4 at
    # the latest when the save of ckpt-8 starts); kill once one is, so that there is one to
    # resume from (a kill before that resumes from the previous listed one, here none).
    deadline = time.time() + 60
    while not all_checkpoint_steps(str(run.model_dir)) and time.time() < deadline:
        time.sleep(0.05)
    run.procs[victim].send_signal(signal.SIGKILL)
    killed_at = time.time()
    survivor = 1 - victim
    code = run.procs[survivor].wait(timeout=90)
    elapsed = time.time() - killed_at
    run.kill()
    out = run.output(survivor)
    assert code == 4, out[-3000:]
    print(f"process {survivor} exited {code} {elapsed:.1f} s after the SIGKILL of {victim}")
    assert elapsed < 40, elapsed
    last = out.strip().splitlines()[-1]
    assert last.startswith("t5pre: error: a worker of this 2-worker run stopped answering"), \
        out[-2000:]
    steps = all_checkpoint_steps(str(run.model_dir))
    assert steps and steps[-1] >= 4 and steps[-1] < STEPS
    # the same command again resumes from the last checkpoint to the uninterrupted result
    rerun = Run(tmp_path / "run", cache).done()
    assert f"resumed from {run.model_dir}/checkpoints/ckpt-{steps[-1]}" in rerun.output()
    _assert_same(_arrays(run.model_dir, STEPS), _arrays(reference[1].model_dir, STEPS))
    ref = _losses(reference[1].output())
    assert {s: v for s, v in _losses(rerun.output()).items()} == \
        {s: ref[s] for s in range(steps[-1] + 1, STEPS + 1)}


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_the_same_step_with_its_checkpoint(
        cache, tmp_path):
    from t5pre.models.checkpoints import all_checkpoint_steps, latest_checkpoint

    # JAX's preemption sync point is a few wall-clock seconds after the signal: a long run, so
    # that the stop comes before the end however fast the steps are.
    run = Run(tmp_path / "run", cache, steps=5000)
    run.wait_for_step(3)
    run.procs[0].send_signal(signal.SIGTERM)  # the chief only, as a preemption notice may
    codes = run.wait(timeout=120)
    out = run.output(0)
    assert codes == [130, 130], out[-3000:] + run.output(1)[-3000:]
    stopped = re.search(r"stopped at step (\d+); checkpoint saved to (\S+);", out)
    assert stopped, out[-3000:]
    step = int(stopped.group(1))
    assert 3 <= step < 5000 and stopped.group(2).endswith(f"ckpt-{step}")
    assert max(_losses(out)) == step  # no process went on past the stop step
    assert latest_checkpoint(run.model_dir).endswith(f"ckpt-{step}")
    assert all_checkpoint_steps(run.model_dir)[-1] == step
    assert len(_arrays(run.model_dir, step)) > 0  # complete: every array and its sha256


def _written_by_process(checkpoint):
    """Bytes of array data each process wrote into an Orbax checkpoint (its
    ``<item>/ocdbt.process_<i>/`` data files), summed over the model and optimizer items."""
    sizes = {}
    for item in ("model", "optimizer"):
        base = os.path.join(checkpoint, item)
        for name in os.listdir(base):
            m = re.fullmatch(r"ocdbt\.process_(\d+)", name)
            if not m:
                continue
            total = 0
            for root, _, files in os.walk(os.path.join(base, name)):
                total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
            sizes[int(m.group(1))] = sizes.get(int(m.group(1)), 0) + total
    return sizes


@pytest.mark.slow
@pytest.mark.parametrize("first,second,fmt", [((2, 1), (1, 1), "auto"), ((1, 2), (2, 1), "auto"),
                                              ((2, 1), (1, 1), "arrays")],
                         ids=["2procs-then-1", "1proc-then-2", "arrays-2procs-then-1"])
def test_fsdp_checkpoint_resumes_on_another_process_count(reference, cache, tmp_path, first,
                                                          second, fmt):
    """auto is Orbax: each process writes its own shards of the fsdp state (no gather), and the
    checkpoint restores into another number of processes and devices (2 x 1 fsdp -> 1 x 1, and
    1 x 2 fsdp -> 2 x 1 fsdp). The arrays format (gathered to process 0) too."""
    half = STEPS // 2
    model_dir = tmp_path / "run"
    extra = ("--set", f"training.checkpoint_format={fmt}")
    Run(model_dir, cache, processes=first[0], devices=first[1], steps=half,
        strategy="fsdp", extra=extra).done()
    checkpoint = os.path.join(model_dir, "checkpoints", f"ckpt-{half}")
    if fmt == "auto":
        from t5pre.models.checkpoints import checkpoint_format_of

        assert checkpoint_format_of(checkpoint) == "orbax"
        written = _written_by_process(checkpoint)
        assert sorted(written) == list(range(first[0])), written
        if first[0] == 2:  # each process wrote its half of the sharded state, not all of it
            total = sum(written.values())
            print("bytes written per process:", written)
            assert all(0.25 * total < n < 0.75 * total for n in written.values()), written
    strategy = "fsdp" if second[0] * second[1] > 1 else "data_parallel"
    resumed = Run(model_dir, cache, processes=second[0], devices=second[1],
                  strategy=strategy, extra=extra).done()
    assert f"ckpt-{half} (step {half})" in resumed.output()
    # fsdp sums in another order: equal to the data-parallel run within float tolerance
    _assert_same(_arrays(str(model_dir), STEPS), _arrays(reference[1].model_dir, STEPS),
                 atol=1e-4)


def _wait_until(condition):
    deadline = time.time() + 5
    while not condition() and time.time() < deadline:
        time.sleep(0.01)


def test_stop_requests_leave_sigterm_to_a_sync_point_that_catches_it_and_forward_sigint():
    asked = []

    def sync(step, requested_here):  # JAX's preemption sync point, stood in for
        asked.append((step, requested_here))
        return step == 3

    sync.catches_sigterm = True
    notices = []
    previous = signal.signal(signal.SIGTERM, lambda *a: notices.append("SIGTERM"))
    try:
        with StopRequests(sync=sync) as stop:
            assert signal.getsignal(signal.SIGTERM) != stop._handle  # left to the notifier
            os.kill(os.getpid(), signal.SIGINT)
            _wait_until(lambda: notices)
            assert notices == ["SIGTERM"] and stop.describe() == "SIGINT"
            assert [stop.should_stop(s) for s in (1, 2, 3)] == [False, False, True]
        assert asked == [(1, True), (2, True), (3, True)]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_stop_requests_give_the_local_flag_to_an_all_reduce_sync():
    asked = []

    def sync(step, requested_here):  # TensorFlow's all-reduce of the local flags
        asked.append(requested_here)
        return requested_here

    with StopRequests(sync=sync) as stop:
        assert not stop.should_stop(1)
        os.kill(os.getpid(), signal.SIGTERM)
        _wait_until(lambda: stop.requested)
        assert stop.should_stop(2) and stop.describe() == "SIGTERM"
    assert asked == [False, True]
    assert StopRequests(sync=sync).describe() == "SIGTERM or SIGINT to one of the workers"
