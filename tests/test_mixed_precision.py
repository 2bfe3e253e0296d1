"""Training under mixed precision: bfloat16 / float16 compute, float32 variables and logits, a
falling loss, no NaN (float16 through Keras' LossScaleOptimizer)."""

import math

import pytest

from t5pre.training.testing import SyntheticTask, tiny_config

pytestmark = pytest.mark.slow  # CLI subprocesses / training runs: see pyproject's markers


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_training_is_stable(tmp_path, precision):
    import keras

    from t5pre.training.trainer import Trainer

    cfg = tiny_config(f"training.precision={precision}", "training.steps=30",
                      "training.log_every=1", "training.checkpoint_every=30",
                      "optimizer.name=adamw", "optimizer.learning_rate=0.003",
                      "optimizer.warmup_steps=3", model_dir=str(tmp_path / "run"))
    try:
        trainer = Trainer(cfg, str(tmp_path / "run"), task=SyntheticTask())
        result = trainer.train()
        assert keras.mixed_precision.global_policy().compute_dtype == precision.split("_")[1]
    finally:
        keras.mixed_precision.set_global_policy("float32")
    losses = [loss for _, loss in sorted(result.history)]
    assert result.step == 30 and result.skipped_steps == 0
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.2, losses
    assert all(v.dtype == "float32" for v in trainer.model.trainable_variables)
