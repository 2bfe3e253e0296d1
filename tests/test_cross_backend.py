"""The same weights on every backend: a model directory trained on TensorFlow or on JAX (Orbax,
the default, or the arrays format) gives identical tensors when TensorFlow or JAX reads it (CLI
round trip through `t5pre export --format hf`, `finetune --init-from`'s reader), a checkpoint
that lacks a weight is an error naming it, resuming a run on the other backend is refused in one
line that names the way forward, and an Orbax directory read without orbax-checkpoint is one
line saying what to install.

Before this, `KERAS_BACKEND=jax` restored a TensorFlow checkpoint through `tf.train.Checkpoint`,
which matched none of Keras' JAX variables and silently kept random weights.
"""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("jax")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

pytestmark = pytest.mark.slow

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

TINY = ["--set", "training.batch_size=4", "--set", "training.log_every=1",
        "--set", "training.eval_every=0",
        "--set", "data.sequence_length={inputs: 32, targets: 8}",
        "--set", "model.overrides={d_model: 32, d_ff: 64, num_heads: 2, d_kv: 16, "
                 "num_encoder_layers: 1, num_decoder_layers: 2}"]


def env(backend):
    e = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
         "KERAS_BACKEND": backend,
         "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if backend == "jax":
        e.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    return e


def t5pre(backend, *args, ok=True):
    result = subprocess.run([sys.executable, "-m", "t5pre", *args], env=env(backend),
                            capture_output=True, text=True, timeout=400)
    if ok:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny pretraining run per backend and format (3 steps of the packaged default task):
    TensorFlow, JAX (Orbax, the default), JAX in the arrays format."""
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for name, backend, extra in (("tensorflow", "tensorflow", ()), ("jax", "jax", ()),
                                 ("jax-arrays", "jax",
                                  ("--set", "training.checkpoint_format=arrays"))):
        run = root / name
        t5pre(backend, "pretrain", "--model-dir", str(run), "--steps", "3", *TINY, *extra)
        runs[name] = run
    assert (runs["tensorflow"] / "checkpoints" / "ckpt-3.index").is_file()
    assert (runs["jax"] / "checkpoints" / "ckpt-3" / "manifest" / "metadata").is_file()
    assert (runs["jax-arrays"] / "checkpoints" / "ckpt-3" / "manifest.json").is_file()
    return runs


def exported_tensors(backend, run, out):
    t5pre(backend, "export", "--format", "hf", "--model-dir", str(run), "--out", str(out))
    return safetensors_numpy.load_file(str(out / "model.safetensors"))


@pytest.mark.parametrize("trained_on", ["tensorflow", "jax", "jax-arrays"])
def test_a_directory_gives_identical_tensors_on_both_backends(trained, trained_on, tmp_path):
    """`t5pre export --format hf` of the same directory on TensorFlow and on JAX: every tensor
    equal bit for bit, and the trained layer norms are not their initial ones."""
    run = trained[trained_on]
    on_tf = exported_tensors("tensorflow", run, tmp_path / "tf")
    on_jax = exported_tensors("jax", run, tmp_path / "jax")
    assert sorted(on_tf) == sorted(on_jax) and len(on_tf) > 10
    for name in on_tf:
        np.testing.assert_array_equal(on_tf[name], on_jax[name], err_msg=name)
    norms = [name for name in on_tf if "layer_norm" in name]
    assert norms and any(not np.all(on_tf[n] == 1.0) for n in norms)


def test_init_reader_gives_the_trained_weights_on_jax(trained, tmp_path):
    """`finetune --init-from` / `model.init_from` read a TensorFlow-trained directory on JAX into
    exactly the weights TensorFlow reads (the resolve_init / read_init path)."""
    script = (
        "import sys, numpy as np\n"
        "from t5pre.models.store import resolve_init, read_init\n"
        "from t5pre.models import T5Model\n"
        "init = read_init(resolve_init(sys.argv[1]))\n"
        "model = T5Model(init.config)\n"
        "import numpy as np\n"
        "ones = np.ones((1, 4), 'int32')\n"
        "model({'encoder_token_ids': ones, 'encoder_padding_mask': ones,\n"
        "       'decoder_token_ids': ones, 'decoder_padding_mask': ones})\n"
        "print('loaded', init.load_into(model))\n"
        "np.savez(sys.argv[2], **{w.path: np.asarray(w.value) for w in model.weights})\n")
    arrays = {}
    for backend in ("tensorflow", "jax"):
        out = tmp_path / f"{backend}.npz"
        result = subprocess.run([sys.executable, "-c", script, str(trained["tensorflow"]),
                                 str(out)], env=env(backend), capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "ckpt-3" in result.stdout
        arrays[backend] = dict(np.load(out))
    assert sorted(arrays["tensorflow"]) == sorted(arrays["jax"])
    for name, value in arrays["tensorflow"].items():
        np.testing.assert_array_equal(value, arrays["jax"][name], err_msg=name)


@pytest.mark.parametrize("trained_on,resume_on,says", [
    ("tensorflow", "jax", "a TensorFlow checkpoint; this run (JAX backend) resumes only"),
    ("jax", "tensorflow", "a JAX-backend (orbax) checkpoint; resume it with KERAS_BACKEND=jax"),
    ("jax-arrays", "tensorflow",
     "a JAX-backend (arrays) checkpoint; resume it with KERAS_BACKEND=jax"),
])
def test_resuming_on_the_other_backend_is_refused_in_one_line(trained, tmp_path, trained_on,
                                                              resume_on, says):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained[trained_on], run)
    before = sorted(os.listdir(run / "checkpoints"))
    result = t5pre(resume_on, "pretrain", "--model-dir", str(run), "--steps", "5", *TINY,
                   ok=False)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("t5pre: error:")]
    assert len(lines) == 1 and says in lines[0] and "model.init_from" in lines[0]
    assert "Traceback" not in result.stderr
    assert sorted(os.listdir(run / "checkpoints")) == before  # nothing written


def test_a_weight_the_checkpoint_lacks_is_an_error_naming_it(trained):
    """A model with one more decoder block than the checkpoint holds: the restore names the
    missing weight instead of keeping its initial value (both formats)."""
    from t5pre.errors import CheckpointError
    from t5pre.models import T5Model
    from t5pre.models.checkpoints import restore_model_weights
    from t5pre.models.io import read_model_config

    for name, run in trained.items():
        config = read_model_config(str(run))
        bigger = T5Model(dataclasses.replace(config, num_decoder_layers=3))
        ones = np.ones((1, 4), "int32")
        bigger({"encoder_token_ids": ones, "encoder_padding_mask": ones,
                "decoder_token_ids": ones, "decoder_padding_mask": ones})
        with pytest.raises(CheckpointError, match=r"no value for decoder_block_2/"):
            restore_model_weights(bigger, str(run))


def test_an_orbax_directory_without_orbax_installed_is_one_line(trained, tmp_path):
    """Where orbax-checkpoint cannot be imported (here: hidden), reading a JAX-trained Orbax
    directory on TensorFlow is one error line naming the checkpoint and the extra to install."""
    code = ("import sys\nsys.modules['orbax'] = None\nsys.modules['orbax.checkpoint'] = None\n"
            "from t5pre.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    result = subprocess.run(
        [sys.executable, "-c", code, "export", "--format", "hf", "--model-dir",
         str(trained["jax"]), "--out", str(tmp_path / "hf")],
        env=env("tensorflow"), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("t5pre: error:")]
    assert len(lines) == 1 and "ckpt-3" in lines[0], result.stderr[-3000:]
    assert "orbax-checkpoint" in lines[0] and "pip install 't5pre[jax]'" in lines[0]
    assert "Traceback" not in result.stderr
