"""`T5Config.remat`: blocks recomputed in the backward pass give the same loss and gradients, on
TensorFlow and on JAX (where the gradient's jaxpr really holds a checkpoint)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from t5pre.errors import ConfigError
from t5pre.models.config import T5Config

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, keras
    from tests.test_model import features, micro_model
    from t5pre.models.losses import seq2seq_loss

    def loss_and_grads(remat):
        m = micro_model(remat=remat)
        f = features(batch=2, inputs=7, targets=5, seed=1)
        f["decoder_target_ids"] = np.roll(f["decoder_token_ids"], -1, axis=1)
        f["decoder_loss_weights"] = np.ones((2, 5), "float32")
        if keras.backend.backend() == "jax":
            import jax
            tv = [v.value for v in m.trainable_variables]
            ntv = [v.value for v in m.non_trainable_variables]
            def fn(tv):
                logits, _ = m.stateless_call(tv, ntv, f, training=True)
                return seq2seq_loss(f["decoder_target_ids"], logits, f["decoder_loss_weights"])[0]
            jaxpr = str(jax.make_jaxpr(jax.grad(fn))(tv))
            loss, grads = jax.jit(jax.value_and_grad(fn))(tv)
            return float(loss), [np.asarray(g) for g in grads], ("remat" in jaxpr or "checkpoint" in jaxpr)
        import tensorflow as tf
        with tf.GradientTape() as tape:
            loss = seq2seq_loss(f["decoder_target_ids"], m(f, training=True),
                                f["decoder_loss_weights"])[0]
        grads = tape.gradient(loss, m.trainable_variables)
        return float(loss), [tf.convert_to_tensor(g).numpy() for g in grads], None

    l0, g0, c0 = loss_and_grads(False)
    l1, g1, c1 = loss_and_grads(True)
    print(json.dumps({"loss": [l0, l1], "checkpoint": [c0, c1],
                      "grad_diff": max(float(np.abs(a - b).max()) for a, b in zip(g0, g1)),
                      "grad_max": max(float(np.abs(a).max()) for a in g0)}))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_remat_gives_the_same_loss_and_gradients(backend, repo_root):
    if backend == "jax":
        pytest.importorskip("jax")
    import json

    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(repo_root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                            text=True, timeout=300, cwd=str(repo_root))
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["loss"][0] == pytest.approx(out["loss"][1], abs=1e-6)
    assert out["grad_max"] > 0 and out["grad_diff"] < 1e-6
    if backend == "jax":
        assert out["checkpoint"] == [False, True]


def test_remat_config_is_checked():
    assert T5Config(remat=True).remat
    with pytest.raises(ConfigError, match="remat"):
        T5Config(remat="yes")
    with pytest.raises(ConfigError, match="dropout"):
        T5Config(remat=True, dropout_rate=0.1)
