"""Training on the Keras JAX backend (t5pre.training.step_jax.JaxBackend, keras.distribution).

JAX needs ``KERAS_BACKEND=jax`` (and two host CPU devices via ``XLA_FLAGS``) before Keras is
imported, and this pytest process has Keras on TensorFlow, so every JAX run is a subprocess:
``tests/jax_step_worker.py`` for the step and the checkpoint format, the test driver
(``python -m t5pre.training.testing``) and the CLI for whole runs. The TensorFlow side of the
comparisons runs in this process or in the same driver on TensorFlow.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
QUIET = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def jax_env(devices=2):
    return {**os.environ, **QUIET, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
            "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def tf_env():
    env = {**os.environ, **QUIET, "KERAS_BACKEND": "tensorflow",
           "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return env


def run_worker(tmp_path, *args, timeout=400):
    out = tmp_path / "worker.json"
    result = subprocess.run([sys.executable, os.path.join(HERE, "jax_step_worker.py"), str(out),
                             *args], env=jax_env(), capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(out.read_text())


def max_diff(a, b):
    return max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(a, b))


# --------------------------------------------------------------------------- the step
@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    """Three steps of a tiny T5 (AdamW, clip 1.0, z-loss) on the same three global batches of 8
    under several distributions, in one JAX process with two CPU devices."""
    return run_worker(tmp_path_factory.mktemp("steps"), "one_device:1:adamw",
                      "data_parallel:1:adamw", "fsdp:1:adamw", "data_parallel:2:adamw",
                      "data_parallel:1:adamw:poison")


@pytest.mark.slow
def test_two_device_data_parallel_equals_one_device(steps):
    one, dp = steps["one_device:1:adamw"], steps["data_parallel:1:adamw"]
    assert one["replicas"] == 1 and dp["replicas"] == 2
    for a, b in zip(one["outputs"], dp["outputs"]):
        for k in ("loss", "z_loss", "accuracy", "grad_norm", "target_tokens", "input_tokens",
                  "examples"):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), k
    assert max_diff(one["weights"], dp["weights"]) < 2e-5
    assert one["iterations"] == dp["iterations"] == 3
    assert one["eval"] == pytest.approx(dp["eval"], rel=1e-5)


@pytest.mark.slow
def test_fsdp_equals_data_parallel_and_shards_the_big_matrices(steps):
    dp, fsdp = steps["data_parallel:1:adamw"], steps["fsdp:1:adamw"]
    assert max_diff(dp["weights"], fsdp["weights"]) < 2e-5
    for a, b in zip(dp["outputs"], fsdp["outputs"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    shard = fsdp["shardings"]
    assert "batch" in shard["token_embedding/embeddings"]
    assert "batch" in shard["lm_head/kernel"]
    assert "batch" in shard["encoder_block_0/attention/qkv_kernel"]
    assert "batch" in shard["decoder_block_0/feed_forward/output_kernel"]
    assert "batch" not in shard["encoder_final_norm/scale"]  # small vectors stay replicated
    moments = [p for p in fsdp["opt_shardings"] if p.endswith("lm_head_kernel_momentum")]
    assert moments and "batch" in fsdp["opt_shardings"][moments[0]]  # AdamW state follows
    assert all("batch" not in s for s in dp["shardings"].values())


@pytest.mark.slow
def test_gradient_accumulation_2_equals_1(steps):
    a, b = steps["data_parallel:1:adamw"], steps["data_parallel:2:adamw"]
    for x, y in zip(a["outputs"], b["outputs"]):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
        assert x["grad_norm"] == pytest.approx(y["grad_norm"], rel=1e-4)
    assert max_diff(a["weights"], b["weights"]) < 2e-5


@pytest.mark.slow
def test_nonfinite_batch_skips_the_update(steps):
    poisoned = steps["data_parallel:1:adamw:poison"]
    assert [o["finite"] for o in poisoned["outputs"]] == [1.0, 0.0, 1.0]
    assert poisoned["unchanged_on_poison"] is True  # weights and optimizer variables
    assert poisoned["iterations"] == 2  # the skipped step did not count


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["arrays", "orbax"])
def test_checkpoint_round_trip_exact_resume_rotation_and_corrupt_fallback(tmp_path, fmt):
    """Each JAX format (tests/jax_step_worker.py, fsdp over 2 devices): the restored state is
    the saved one, bit for bit, in the same layout and in another (data_parallel); the next
    step equals the uninterrupted one; rotation keeps 2; a truncated file in the newest
    checkpoint falls back to the previous one with a warning naming it; a zeroed file and a
    flipped byte are CorruptCheckpoint too."""
    out = run_worker(tmp_path, "checkpoint", str(tmp_path / "run"), fmt)
    assert out["restored_step"] == 3 and out["round_trip"] is True
    assert out["position"] == [24, 1]
    assert out["exact_resume"] is True  # restored state + step 4 == the uninterrupted step 4
    assert out["other_layout"] is True
    assert out["kept"] == ["checkpoint", "ckpt-2", "ckpt-3"]  # max_to_keep=2 rotated ckpt-1
    assert out["fallback_step"] == 2 and out["fallback_position"] == [16, 1]
    says = "sha256" if fmt == "arrays" else "cannot be read"
    assert any(says in line and "ckpt-3" in line and "falling back" in line
               for line in out["logs"]), out["logs"]
    for how, message in out["damaged"].items():
        assert "ckpt-2" in message and ("sha256" in message or "fingerprint" in message
                                        or "cannot be read" in message), (how, message)
    print(fmt, "blocking save seconds", out["blocking"], out["damaged"])


# --------------------------------------------------------------------------- whole runs
RUN = ("training.steps=20", "training.log_every=1", "training.checkpoint_every=5",
       "training.keep_checkpoints=10", "training.eval_every=10", "training.eval_steps=2")


def drive(model_dir, env, *overrides, extra=(), check=True):
    dump = f"{model_dir}.dump"
    cmd = [sys.executable, "-m", "t5pre.training.testing", "--model-dir", str(model_dir),
           "--dump", dump]
    for o in RUN + overrides:
        cmd += ["--set", o]
    result = subprocess.run(cmd + list(extra), env=env, capture_output=True, text=True,
                            timeout=400)
    if not check:
        return result
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with np.load(dump + ".npz") as arrays:
        weights = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
    with open(dump + ".json") as f:
        info = json.load(f)
    return weights, {int(s): loss for s, loss in info["history"]}, result.stdout


def tiny_model():
    from t5pre.training.testing import tiny_config
    from t5pre.training.trainer import build_t5_model

    model = build_t5_model(tiny_config(), None)
    model({"encoder_token_ids": np.ones((1, 16), "int32"),
           "encoder_padding_mask": np.ones((1, 16), "int32"),
           "decoder_token_ids": np.ones((1, 8), "int32"),
           "decoder_padding_mask": np.ones((1, 8), "int32")})
    return model


@pytest.fixture(scope="module")
def init_dir(tmp_path_factory):
    """Initial weights both backends start from (Keras' initialisers draw other numbers on
    TensorFlow and JAX for the same seed): model.init_from=DIR (a save_pretrained directory)."""
    from t5pre.models.io import save_pretrained

    directory = tmp_path_factory.mktemp("init") / "model"
    save_pretrained(tiny_model(), None, directory)
    return f"model.init_from={directory}"


@pytest.fixture(scope="module")
def jax_reference(tmp_path_factory, init_dir):
    run = tmp_path_factory.mktemp("jaxref") / "run"
    return (run,) + drive(run, jax_env(), "strategy.name=data_parallel", init_dir)


@pytest.mark.slow
def test_sigkill_inside_a_checkpoint_save_then_resume_equals_an_uninterrupted_run(
        jax_reference, init_dir, tmp_path):
    ref_run, ref_weights, ref_history, _ = jax_reference
    run = tmp_path / "killed"
    killed = drive(run, jax_env(), "strategy.name=data_parallel", init_dir,
                   extra=("--die-in-save-at", "10"), check=False)
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    from t5pre.models.checkpoints import all_checkpoint_steps

    assert all_checkpoint_steps(str(run)) == [5]  # ckpt-10 written, state file not yet
    weights, history, out = drive(run, jax_env(), "strategy.name=data_parallel", init_dir)
    assert "resumed from" in out and "ckpt-5" in out
    for x, y in zip(ref_weights, weights):
        np.testing.assert_array_equal(x, y)
    assert {s: history[s] for s in range(6, 21)} == {s: ref_history[s] for s in range(6, 21)}


@pytest.mark.slow
def test_sigkill_while_an_orbax_save_is_written_then_resume_equals_an_uninterrupted_run(
        jax_reference, init_dir, tmp_path):
    """SIGKILL the moment the asynchronous save of step 10 returns (its files still being
    written, or complete but not listed): the state file names ckpt-5 only, the rerun removes
    Orbax's temporary directory if one was left, resumes from ckpt-5 and ends bit for bit where
    the uninterrupted run did."""
    from t5pre.models.checkpoints import all_checkpoint_steps

    ref_run, ref_weights, ref_history, _ = jax_reference
    run = tmp_path / "killed"
    killed = drive(run, jax_env(), "strategy.name=data_parallel", init_dir,
                   extra=("--die-after-save-starts-at", "10"), check=False)
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    assert all_checkpoint_steps(str(run)) == [5]
    left = sorted(os.listdir(run / "checkpoints"))
    print("left by the kill:", left)
    weights, history, out = drive(run, jax_env(), "strategy.name=data_parallel", init_dir)
    assert "resumed from" in out and "ckpt-5" in out
    if any("orbax-checkpoint-tmp" in n for n in left):
        assert "leftover(s) of interrupted saves" in out
    assert not any("orbax-checkpoint-tmp" in n or "_old-" in n
                   for n in os.listdir(run / "checkpoints"))
    for x, y in zip(ref_weights, weights):
        np.testing.assert_array_equal(x, y)
    assert {s: history[s] for s in range(6, 21)} == {s: ref_history[s] for s in range(6, 21)}


@pytest.mark.slow
def test_a_directory_keeps_its_arrays_format_and_moves_to_orbax_when_asked(init_dir, tmp_path):
    """An existing run in the arrays format resumes and goes on writing arrays under auto (the
    default); with training.checkpoint_format=orbax it resumes from the arrays checkpoint and
    writes Orbax from then on (rotation deletes the old format's checkpoints like any other).
    (Exactness of each resume is the round-trip and kill tests' business.)"""
    from t5pre.models.checkpoints import all_checkpoint_steps, checkpoint_format_of

    run = tmp_path / "old"
    common = ("strategy.name=data_parallel", init_dir, "training.keep_checkpoints=2")
    drive(run, jax_env(), *common, "training.steps=10", "training.checkpoint_format=arrays")
    assert (run / "checkpoints" / "ckpt-10" / "manifest.json").is_file()
    _, _, out = drive(run, jax_env(), *common, "training.steps=15")  # auto
    assert "resumed from" in out and "ckpt-10" in out
    fmt = {s: checkpoint_format_of(str(run / "checkpoints" / f"ckpt-{s}"))
           for s in all_checkpoint_steps(str(run))}
    assert fmt == {10: "arrays", 15: "arrays"}
    _, history, out = drive(run, jax_env(), *common, "training.checkpoint_format=orbax")
    assert "resumed from" in out and "ckpt-15" in out and sorted(history) == list(range(16, 21))
    fmt = {s: checkpoint_format_of(str(run / "checkpoints" / f"ckpt-{s}"))
           for s in all_checkpoint_steps(str(run))}
    assert fmt == {15: "arrays", 20: "orbax"}
    assert not (run / "checkpoints" / "ckpt-10").exists()  # rotated out


def test_checkpoint_format_choice(tmp_path):
    """training.checkpoint_format: auto is tf on TensorFlow; on JAX the format of the
    directory's newest checkpoint when it is a JAX one, else orbax; a format of the other
    backend is one ConfigError."""
    from t5pre.errors import ConfigError
    from t5pre.models.checkpoints import _write_state, choose_format

    empty = str(tmp_path / "new")
    assert choose_format(empty, "auto", "tensorflow") == "tf"
    assert choose_format(empty, "auto", "jax") == "orbax"
    assert choose_format(empty, "arrays", "jax") == "arrays"
    for requested, backend in (("orbax", "tensorflow"), ("arrays", "tensorflow"),
                               ("tf", "jax"), ("zarr", "jax")):
        with pytest.raises(ConfigError, match="training.checkpoint_format"):
            choose_format(empty, requested, backend)
    old = tmp_path / "old"
    (old / "checkpoints" / "ckpt-5").mkdir(parents=True)
    (old / "checkpoints" / "ckpt-5" / "manifest.json").write_text("{}")
    _write_state(str(old / "checkpoints"), str(old / "checkpoints" / "ckpt-5"),
                 [str(old / "checkpoints" / "ckpt-5")])
    assert choose_format(str(old), "auto", "jax") == "arrays"
    assert choose_format(str(old), "orbax", "jax") == "orbax"


def _tags(model_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = {}
    for split in ("train", "eval"):
        acc = EventAccumulator(os.path.join(model_dir, "logs", split))
        acc.Reload()
        tags[split] = sorted(acc.Tags()["tensors"])
    return tags


@pytest.mark.slow
def test_jax_loss_curve_and_model_dir_match_tensorflow(jax_reference, init_dir, tmp_path):
    """The same config and batches on TensorFlow (one device) and JAX (data_parallel over two
    devices): the same loss at every one of 20 steps within float tolerance, and the same
    model-directory layout and TensorBoard tags; the JAX directory loads on TensorFlow."""
    ref_run, jax_weights, jax_history, jax_out = jax_reference
    tf_run = tmp_path / "tf"
    tf_weights, tf_history, _ = drive(tf_run, tf_env(), "strategy.name=one_device", init_dir)
    assert sorted(tf_history) == sorted(jax_history) == list(range(1, 21))
    for s in tf_history:
        assert jax_history[s] == pytest.approx(tf_history[s], rel=1e-5), s  # measured <= 2e-7
    assert max_diff(tf_weights, jax_weights) < 1e-4  # measured 9e-6
    assert jax_history[20] < jax_history[1]

    def layout(run):
        files = set()
        for dirpath, _, names in os.walk(run):
            rel = os.path.relpath(dirpath, run)
            if rel.startswith("checkpoints") or rel.startswith(os.path.join("logs", "train")) \
                    or rel.startswith(os.path.join("logs", "eval")):
                continue
            files |= {os.path.normpath(os.path.join(rel, n)) for n in names}
        return files

    assert layout(ref_run) == layout(tf_run)
    assert _tags(ref_run) == _tags(tf_run)
    assert (ref_run / "checkpoints" / "checkpoint").is_file()
    assert (ref_run / "checkpoints" / "ckpt-20" / "manifest" / "metadata").is_file()  # Orbax

    # weights are portable by path: the JAX-trained directory restores on TensorFlow
    from t5pre.models.checkpoints import restore_model_weights
    from t5pre.training.testing import weights_of

    model = tiny_model()
    path = restore_model_weights(model, str(ref_run))
    assert path.endswith("ckpt-20")
    for x, y in zip(weights_of(model), jax_weights):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_cli_pretrain_and_finetune_on_jax_and_load_on_tensorflow(tmp_path):
    """`KERAS_BACKEND=jax t5pre pretrain` on the packaged default task (fsdp), `load_model` of the
    directory on TensorFlow, `t5pre finetune` on JAX from it; a TensorFlow strategy name on JAX
    is one clear error."""
    from t5pre.models.store import load_model

    run = tmp_path / "default"
    cmd = [sys.executable, "-m", "t5pre", "pretrain", "--model-dir", str(run), "--steps", "3",
           "--set", "training.batch_size=4", "--set", "training.log_every=1",
           "--set", "training.eval_every=0", "--set", "strategy.name=fsdp",
           "--set", "data.sequence_length={inputs: 32, targets: 8}",
           "--set", "model.overrides={d_model: 32, d_ff: 64, num_heads: 2, d_kv: 16, "
                    "num_encoder_layers: 1, num_decoder_layers: 1}"]
    result = subprocess.run(cmd, env=jax_env(), capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "step 3/3" in result.stdout and "JAX fsdp" in result.stdout
    assert (run / "spiece.model").is_file() and (run / "checkpoints" / "ckpt-3").is_dir()
    model, vocabulary, cfg = load_model(run)
    assert cfg.data.task == "default_span_corruption"
    assert model.config.vocab_size >= vocabulary.vocab_size

    # fine-tuning on JAX from the JAX-trained directory (Orbax checkpoint as init source),
    # with decoding evaluation and the best/ keeper
    tuned = tmp_path / "tuned"
    result = subprocess.run(
        [sys.executable, "-m", "t5pre", "finetune", "--config", "default_summarize",
         "--init-from", str(run), "--model-dir", str(tuned), "--steps", "2",
         "--set", "training.batch_size=4", "--set", "data.sequence_length.inputs=64",
         "--set", "data.sequence_length.targets=16", "--set", "training.eval_every=2",
         "--set", "training.eval_steps=1", "--set", "training.checkpoint_every=2",
         "--set", "training.log_every=1", "--set", "optimizer.warmup_steps=1",
         "--set", "finetune.eval_examples=4", "--set", "finetune.eval_batch_size=4"],
        env=jax_env(), capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "initialised weights from" in result.stdout and "ckpt-3" in result.stdout
    assert "rougeLsum" in result.stdout
    assert (tuned / "best" / "model.weights.h5").is_file()
    assert (tuned / "checkpoints" / "ckpt-2" / "manifest" / "metadata").is_file()

    bad = subprocess.run([sys.executable, "-m", "t5pre", "pretrain", "--model-dir",
                          str(tmp_path / "bad"), "--steps", "1", "--strategy", "mirrored"],
                         env=jax_env(), capture_output=True, text=True, timeout=200)
    assert bad.returncode == 2
    assert "strategy.name = 'mirrored' is a TensorFlow strategy" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_strategy_names_of_the_other_backend_are_refused():
    from t5pre.errors import ConfigError
    from t5pre.training.distribution_jax import check_strategy_name

    assert check_strategy_name("auto", "jax") == "data_parallel"
    assert check_strategy_name("fsdp", "jax") == "fsdp"
    for name in ("mirrored", "multi_worker", "tpu"):
        with pytest.raises(ConfigError, match="strategy.name"):
            check_strategy_name(name, "jax")
    for name in ("data_parallel", "fsdp"):
        with pytest.raises(ConfigError, match="strategy.name.*KERAS_BACKEND=jax"):
            check_strategy_name(name, "tensorflow")
    from t5pre.training.strategy import create_strategy

    with pytest.raises(ConfigError, match="JAX strategy"):
        create_strategy("fsdp")
