"""Keras' own `compile()` / `fit()` / `evaluate()` on T5Model, on TensorFlow and on JAX: the loss
is t5pre's token-mean cross-entropy + z-loss, and a tiny model learns the synthetic task."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SEQUENCE_LENGTH = {"inputs": 16, "targets": 8}

FIT_SCRIPT = textwrap.dedent("""
    import json, sys
    import keras, numpy as np
    from t5pre.models.config import T5Config
    from t5pre.models.losses import seq2seq_loss
    from t5pre.models.t5 import T5Model
    from t5pre.training.keras_fit import keras_dataset
    from t5pre.training.testing import TINY_MODEL, SyntheticTask

    keras.utils.set_random_seed(0)
    model = T5Model(T5Config(**TINY_MODEL))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), z_loss=1e-4,
                  **({"jit_compile": False} if keras.backend.backend() == "tensorflow" else {}))
    data = keras_dataset(SyntheticTask(), SEQUENCE_LENGTH, batch_size=16, seed=1)
    history = model.fit(data, steps_per_epoch=25, epochs=3, verbose=0)
    x, y, w = next(iter(data.take(1)))
    x = {k: np.asarray(v) for k, v in x.items()}
    expected, _ = seq2seq_loss(np.asarray(y), np.asarray(model(x)), np.asarray(w), z_loss=1e-4)
    evaluated = model.evaluate(x, np.asarray(y), sample_weight=np.asarray(w), batch_size=16,
                               verbose=0)
    print(json.dumps({"backend": keras.backend.backend(), "loss": history.history["loss"],
                      "expected": float(expected), "evaluated": float(evaluated)}))
""").replace("SEQUENCE_LENGTH", repr(SEQUENCE_LENGTH))


def run_fit(backend, repo_root):
    import json

    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu",
           "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(repo_root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", FIT_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_fit_learns_and_evaluate_reports_the_t5pre_loss(backend, repo_root):
    if backend == "jax":
        pytest.importorskip("jax")
    result = run_fit(backend, repo_root)
    assert result["backend"] == backend
    first, last = result["loss"][0], result["loss"][-1]
    assert last < 0.8 * first, result["loss"]  # it learns (epoch means, 25 steps each)
    # evaluate() = seq2seq_loss(targets, logits, weights, z_loss) of the same batch
    assert result["evaluated"] == pytest.approx(result["expected"], rel=1e-4)


def test_keras_dataset_gives_features_targets_and_weights():
    from t5pre.training.keras_fit import keras_dataset
    from t5pre.training.testing import SyntheticTask

    x, y, w = next(iter(keras_dataset(SyntheticTask(), SEQUENCE_LENGTH, batch_size=4)))
    assert set(x) == {"encoder_token_ids", "encoder_padding_mask", "decoder_token_ids",
                      "decoder_padding_mask"}
    assert y.shape == w.shape == (4, SEQUENCE_LENGTH["targets"])
    y, w = np.asarray(y), np.asarray(w)
    np.testing.assert_array_equal(w, (y != 0).astype("float32"))  # weights 0 exactly on padding
    # teacher forcing: the decoder reads the targets shifted right by one (0 = start)
    np.testing.assert_array_equal(np.asarray(x["decoder_token_ids"])[:, 1:] * w[:, 1:],
                                  y[:, :-1] * w[:, 1:])

    packed, _, _ = next(iter(keras_dataset(SyntheticTask(), SEQUENCE_LENGTH, batch_size=2,
                                           pack=True)))
    assert "encoder_segment_ids" in packed and "decoder_positions" in packed


def test_a_given_loss_replaces_the_built_in_one():
    import keras

    from t5pre.models.config import T5Config
    from t5pre.models.t5 import T5Model
    from t5pre.training.testing import TINY_MODEL

    model = T5Model(T5Config(**TINY_MODEL))
    model.compile(optimizer="adam", loss=lambda y, logits: keras.ops.zeros(()) + 42.0,
                  jit_compile=False)
    x = {"encoder_token_ids": np.ones((2, 5), "int32"), "decoder_token_ids": np.ones((2, 3), "int32")}
    assert model.evaluate(x, np.ones((2, 3), "int32"), verbose=0) == pytest.approx(42.0)
