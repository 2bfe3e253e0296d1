"""The same model code on the Keras JAX backend (how t5pre runs on a GPU machine without
TensorFlow): weights saved under TensorFlow load under JAX and give the same logits, the same
greedy and beam tokens, and the same loss."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.test_model import features, micro_model, tiny_vocabulary

pytestmark = pytest.mark.slow  # CLI subprocesses / training runs: see pyproject's markers

JAX_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np, keras
    assert keras.backend.backend() == "jax", keras.backend.backend()
    from t5pre.models.io import load_pretrained
    from t5pre.models.decoding import decode
    from t5pre.models.losses import seq2seq_loss
    model, _ = load_pretrained(sys.argv[1])
    f = dict(np.load(sys.argv[2]))
    logits = np.asarray(model(f))
    loss, _ = seq2seq_loss(f["decoder_target_ids"], logits, f["decoder_loss_weights"], z_loss=1e-4)
    greedy, _ = decode(model, f["encoder_token_ids"], f["encoder_padding_mask"], max_length=6)
    beam, _ = decode(model, f["encoder_token_ids"], f["encoder_padding_mask"], max_length=6,
                     method="beam", beam_size=3)
    np.savez(sys.argv[3], logits=logits, loss=np.asarray(loss), greedy=np.asarray(greedy),
             beam=np.asarray(beam))
    """
)


def test_tensorflow_weights_give_the_same_outputs_on_jax(tmp_path, repo_root):
    try:
        import jax  # noqa: F401
    except ImportError:
        pytest.skip("jax is not installed (it is in the test extra)")
    from t5pre.models.decoding import decode
    from t5pre.models.io import save_pretrained
    from t5pre.models.losses import seq2seq_loss

    model = micro_model()
    save_pretrained(model, tiny_vocabulary(), tmp_path / "model")
    f = features(batch=3, inputs=9, targets=6, seed=3)
    f["encoder_padding_mask"][1, 6:] = 0  # a padded row
    f["decoder_target_ids"] = np.roll(f["decoder_token_ids"], -1, axis=1)
    f["decoder_loss_weights"] = f["decoder_padding_mask"].astype("float32")
    np.savez(tmp_path / "features.npz", **f)

    logits = np.asarray(model(f))
    loss, _ = seq2seq_loss(f["decoder_target_ids"], logits, f["decoder_loss_weights"], z_loss=1e-4)
    greedy, _ = decode(model, f["encoder_token_ids"], f["encoder_padding_mask"], max_length=6)
    beam, _ = decode(model, f["encoder_token_ids"], f["encoder_padding_mask"], max_length=6,
                     method="beam", beam_size=3)

    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(repo_root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, str(tmp_path / "model"), str(tmp_path / "features.npz"),
         str(tmp_path / "jax.npz")], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = np.load(tmp_path / "jax.npz")
    assert np.abs(out["logits"] - logits).max() < 1e-4
    assert abs(float(out["loss"]) - float(loss)) < 1e-5
    np.testing.assert_array_equal(out["greedy"], np.asarray(greedy))
    np.testing.assert_array_equal(out["beam"], np.asarray(beam))


def test_jax_mfu_benchmark_trains_on_cpu(repo_root):
    """benchmarks/train_step_jax.py (the H100 MFU benchmark) runs end to end on CPU JAX: the jitted
    stateless step compiles, the loss falls on the repeated batch, and the summary line prints."""
    try:
        import jax  # noqa: F401
    except ImportError:
        pytest.skip("jax is not installed (it is in the test extra)")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, str(repo_root / "benchmarks" / "train_step_jax.py"), "--size", "tiny",
         "--vocab-size", "512", "--batch", "4", "--inputs-length", "32", "--targets-length", "8",
         "--optimizer", "adamw", "--steps", "3", "--windows", "2", "--warmup", "0",
         "--peak-tflops", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for what in ("[trainer]", "[bare]"):  # the Trainer's JaxBackend step and the bare jitted one
        mine = [l[len(what):].strip() for l in lines if l.startswith(what)]
        first = float(next(l for l in mine if l.startswith("compile")).rsplit("loss ", 1)[1])
        last = float([l for l in mine if l.startswith("window")][-1].rsplit("loss ", 1)[1])
        assert last < first, result.stdout
        assert "MFU" in mine[-1] and "TFLOP/s" in mine[-1], result.stdout
    assert "trainer step / bare step" in lines[-1], result.stdout
