"""seq2seq_loss: token cross-entropy over non-padding targets, z-loss and accuracy."""

import numpy as np
import pytest

from t5pre.models.losses import seq2seq_loss


def _reference(targets, logits, weights, z_loss):
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(-1)) + logits.max(-1)
    picked = np.take_along_axis(logits, targets[..., None], -1)[..., 0]
    n = weights.sum()
    ce = ((log_z - picked) * weights).sum() / n
    z = z_loss * (log_z**2 * weights).sum() / n
    acc = ((logits.argmax(-1) == targets) * weights).sum() / n
    return ce, z, acc, n


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 11, (3, 5)).astype("int32")
    logits = (rng.normal(size=(3, 5, 11)) * 3).astype("float32")
    weights = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], "float32")
    return targets, logits, weights


@pytest.mark.parametrize("z_loss", [0.0, 1e-4, 0.3])
def test_matches_numpy_reference(batch, z_loss):
    targets, logits, weights = batch
    loss, metrics = seq2seq_loss(targets, logits, weights, z_loss=z_loss)
    ce, z, acc, n = _reference(targets, logits, weights, z_loss)
    np.testing.assert_allclose(float(metrics["cross_entropy"]), ce, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["z_loss"]), z, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(float(loss), ce + z, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["loss"]), ce + z, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["accuracy"]), acc, rtol=1e-6)
    assert float(metrics["num_tokens"]) == n == 9


def test_padding_positions_do_not_count(batch):
    targets, logits, weights = batch
    loss, _ = seq2seq_loss(targets, logits, weights, z_loss=1e-2)
    changed_logits = logits.copy()
    changed_logits[weights == 0] = np.random.default_rng(1).normal(size=(6, 11)) * 50
    changed_targets = targets.copy()
    changed_targets[weights == 0] = 3
    loss2, _ = seq2seq_loss(changed_targets, changed_logits, weights, z_loss=1e-2)
    np.testing.assert_allclose(float(loss), float(loss2), rtol=1e-6)
    # ...while changing a real position does change it.
    changed_logits[0, 0] += 5 * np.eye(11)[targets[0, 0] - 1]
    loss3, _ = seq2seq_loss(targets, changed_logits, weights, z_loss=1e-2)
    assert abs(float(loss3) - float(loss)) > 1e-3


def test_accuracy_of_perfect_logits(batch):
    targets, _, weights = batch
    logits = np.eye(11, dtype="float32")[targets] * 10
    _, metrics = seq2seq_loss(targets, logits, weights)
    assert float(metrics["accuracy"]) == pytest.approx(1.0)
    assert float(metrics["cross_entropy"]) < 1e-3


def test_all_padding_batch_is_zero_not_nan(batch):
    targets, logits, weights = batch
    loss, metrics = seq2seq_loss(targets, logits, np.zeros_like(weights), z_loss=1e-4)
    assert float(loss) == 0.0 and float(metrics["num_tokens"]) == 0.0


def test_low_precision_logits_give_float32_loss(batch):
    import keras

    targets, logits, weights = batch
    loss, _ = seq2seq_loss(targets, keras.ops.cast(logits, "bfloat16"), weights)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    ce, _, _, _ = _reference(targets, logits, weights, 0.0)
    np.testing.assert_allclose(float(loss), ce, rtol=2e-2)
