"""Data-parallel training: MirroredStrategy on two logical CPUs and MultiWorkerMirroredStrategy
with two real worker processes on 127.0.0.1 give the single-device result on the same global
batch; the workers stay in lock-step; and Keras' own gradient all-reduce is really switched off
(with it left on, gradients would be summed twice)."""

import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from t5pre.training.testing import SyntheticTask, tiny_config, weights_of

# Unshuffled data: one device reading examples 0..7 of each step sees what two shards
# (0,2,4,6 / 1,3,5,7) or two replicas (0..3 / 4..7) see together.
RUN = ("data.shuffle=false", "training.steps=4", "training.batch_size=8", "training.log_every=1",
       "training.checkpoint_every=2", "optimizer.name=adamw", "optimizer.schedule=constant",
       "optimizer.warmup_steps=0", "optimizer.learning_rate=1e-3")


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    from t5pre.training.trainer import Trainer

    model_dir = tmp_path_factory.mktemp("one") / "run"
    trainer = Trainer(tiny_config(*RUN), str(model_dir), task=SyntheticTask())
    result = trainer.train()
    return weights_of(trainer.model), dict(result.history)


def _driver(model_dir, dump, *args, env=None):
    cmd = [sys.executable, "-m", "t5pre.training.testing", "--model-dir", str(model_dir),
           "--dump", str(dump)]
    for o in RUN:
        cmd += ["--set", o]
    base = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env = dict(base, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.Popen(cmd + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)


def _finish(procs, timeout=400):
    outs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    return outs


def _load(dump):
    with np.load(str(dump) + ".npz") as z:
        weights = [z[f"arr_{i}"] for i in range(len(z.files))]
    with open(str(dump) + ".json") as f:
        meta = json.load(f)
    return weights, meta


def _max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


@pytest.mark.slow
def test_mirrored_two_replicas_match_one_device(tmp_path, one_device):
    ref, ref_history = one_device
    outs = _finish([_driver(tmp_path / "m", tmp_path / "m", "--logical-cpus", "2",
                            "--set", "strategy.name=mirrored",
                            "--also-keras-all-reduce", str(tmp_path / "d"))])
    assert "MirroredStrategy with 2 replica(s)" in outs[0]
    weights, meta = _load(tmp_path / "m")
    assert meta["step"] == 4
    assert _max_diff(weights, ref) < 1e-5
    for step, loss in meta["history"]:
        assert loss == pytest.approx(ref_history[step], rel=1e-5)
    # Leaving Keras' optimizer all-reduce on sums the (already summed) gradients again.
    doubled, _ = _load(tmp_path / "d")
    assert _max_diff(doubled, ref) > 1e-4


@pytest.mark.slow
def test_gradient_accumulation_matches_the_full_batch(tmp_path, one_device):
    from t5pre.training.trainer import Trainer

    ref, _ = one_device
    trainer = Trainer(tiny_config(*RUN, "training.grad_accum_steps=2"), str(tmp_path / "acc"),
                      task=SyntheticTask())
    trainer.train()
    assert _max_diff(weights_of(trainer.model), ref) < 1e-5


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.mark.slow
def test_multi_worker_two_processes_in_lock_step(tmp_path, one_device):
    ref, _ = one_device
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(_driver(tmp_path / "mw", tmp_path / f"w{i}",
                             "--set", "strategy.name=multi_worker",
                             env={"TF_CONFIG": tf_config}))
    outs = _finish(procs)
    strategy_line = [line for line in outs[0].splitlines() if "; strategy " in line]
    assert strategy_line and "MultiWorkerMirroredStrategy with 2 replica(s), worker worker:0 of 2" \
        in strategy_line[0], outs[0][-2000:]
    w0, m0 = _load(tmp_path / "w0")
    w1, m1 = _load(tmp_path / "w1")
    assert m0["step"] == m1["step"] == 4
    for a, b in zip(w0, w1):  # lock-step: identical updates on both workers
        np.testing.assert_array_equal(a, b)
    assert _max_diff(w0, ref) < 1e-5
    # Only the chief wrote the model directory; the other worker's temporary copy is gone.
    ckpts = sorted(os.listdir(tmp_path / "mw" / "checkpoints"))
    assert "ckpt-4.index" in ckpts and "ckpt-2.index" in ckpts
    assert (tmp_path / "mw" / "logs" / "train").is_dir()


def test_auto_strategy_choice(monkeypatch):
    from t5pre.errors import ConfigError
    from t5pre.training.strategy import resolve_strategy_name

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert resolve_strategy_name("auto") == "one_device"  # no GPU on the test machine
    assert resolve_strategy_name("auto", tpu="grpc://10.0.0.2:8470") == "tpu"
    assert resolve_strategy_name("mirrored") == "mirrored"
    two = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(two))
    assert resolve_strategy_name("auto") == "multi_worker"
    one = {"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(one))
    assert resolve_strategy_name("auto") == "one_device"
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="TF_CONFIG is not valid JSON"):
        resolve_strategy_name("auto")


def _free_port_pair():
    """A base port p with p and p + 1 both free (Slurm's resolver numbers a node's tasks so)."""
    for _ in range(50):
        base = _free_ports(1)[0]
        if base >= 65535:
            continue
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.1", base + 1))
            return base
        except OSError:
            continue
        finally:
            probe.close()
    raise RuntimeError("no two consecutive free ports")


@pytest.mark.slow
def test_slurm_cluster_two_local_workers(tmp_path, one_device):
    """strategy.cluster=slurm: the srun variables of a 2-task step on one node (127.0.0.1)
    give two workers that train in lock-step and match one device."""
    ref, _ = one_device
    base = _free_port_pair()
    procs = []
    for rank in range(2):
        slurm = {"SLURM_PROCID": str(rank), "SLURM_STEP_NUM_TASKS": "2",
                 "SLURM_STEP_NODELIST": "127.0.0.1", "SLURM_STEP_TASKS_PER_NODE": "2",
                 "CUDA_VISIBLE_DEVICES": ""}
        procs.append(_driver(tmp_path / "slurm", tmp_path / f"s{rank}",
                             "--set", "strategy.name=auto", "--set", "strategy.cluster=slurm",
                             "--set", f"strategy.port_base={base}",
                             env=slurm))  # auto under slurm: 2 tasks -> multi_worker
    outs = _finish(procs)
    line = [x for x in outs[0].splitlines() if "; strategy " in x]  # the chief (rank 0) logs
    assert line and "MultiWorkerMirroredStrategy with 2 replica(s), worker worker:0 of 2" in line[0]
    w0, m0 = _load(tmp_path / "s0")
    w1, _ = _load(tmp_path / "s1")
    assert m0["step"] == 4
    for a, b in zip(w0, w1):
        np.testing.assert_array_equal(a, b)
    assert _max_diff(w0, ref) < 1e-5


def test_slurm_cluster_errors_are_clear(monkeypatch):
    from t5pre.errors import ConfigError
    from t5pre.training.strategy import create_strategy, resolve_strategy_name

    for name in ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_NODELIST",
                 "SLURM_STEP_TASKS_PER_NODE", "TF_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match=r"SLURM_PROCID.*srun"):
        create_strategy("multi_worker", cluster="slurm")
    with pytest.raises(ConfigError, match="unknown strategy.cluster 'mpi'"):
        create_strategy("auto", cluster="mpi")
    assert resolve_strategy_name("auto", cluster="slurm") == "one_device"  # not under srun
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    assert resolve_strategy_name("auto", cluster="slurm") == "multi_worker"
    assert resolve_strategy_name("auto") == "one_device"  # tf_config ignores Slurm


@pytest.mark.slow
def test_multi_worker_sigterm_to_the_chief_alone_stops_both_at_the_same_step(tmp_path):
    """A preemption notice often reaches one host first: both workers agree on the stop (an
    all-reduce of the local flags after every step) and save the same checkpoint."""
    import signal
    import time

    from t5pre.models.checkpoints import all_checkpoint_steps

    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs, logs = [], []
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        logs.append(tmp_path / f"w{i}.log")
        cmd = [sys.executable, "-m", "t5pre.training.testing", "--model-dir",
               str(tmp_path / "mw"), "--slow", "0.3"]
        for o in RUN + ("strategy.name=multi_worker", "training.steps=60",
                        "training.checkpoint_every=20"):
            cmd += ["--set", o]
        env = dict({k: v for k, v in os.environ.items() if k != "TF_CONFIG"},
                   TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=tf_config)
        procs.append(subprocess.Popen(cmd, stdout=open(logs[-1], "w"),
                                      stderr=subprocess.STDOUT, env=env))
    try:
        deadline = time.time() + 300
        while "step 3/" not in logs[0].read_text() and time.time() < deadline:
            assert all(p.poll() is None for p in procs), logs[0].read_text()[-2000:]
            time.sleep(0.2)
        procs[0].send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=120)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    outs = [log.read_text() for log in logs]
    stops = [re.search(r"TrainingInterrupted: (.*): stopped at step (\d+);", out) for out in outs]
    assert all(stops), outs[0][-2000:] + outs[1][-2000:]
    step = int(stops[0].group(2))
    assert stops[0].group(1) == "SIGTERM" and int(stops[1].group(2)) == step < 60
    assert all_checkpoint_steps(str(tmp_path / "mw"))[-1] == step
