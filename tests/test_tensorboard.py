"""TensorBoard logs read back with tensorboard's EventAccumulator: train/eval scalars at the
logged steps with the values the trainer reported, text summaries (config, decoded samples)."""

import numpy as np
import pytest

from t5pre.training.testing import SyntheticTask, tiny_config


def _read(path):
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"tensors": 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["tensors"]:
        out[tag] = {e.step: tf.make_ndarray(e.tensor_proto) for e in acc.Tensors(tag)}
    return out


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    from t5pre.training.trainer import Trainer

    model_dir = tmp_path_factory.mktemp("tb") / "run"
    cfg = tiny_config("training.steps=6", "training.log_every=3", "training.eval_every=3",
                      "training.eval_steps=2", "training.text_samples=2",
                      "training.peak_flops=1e12")
    trainer = Trainer(cfg, str(model_dir), task=SyntheticTask())
    return model_dir, trainer.train()


def test_train_scalars(logged_run):
    model_dir, result = logged_run
    train = _read(model_dir / "logs" / "train")
    for tag in ("loss", "z_loss", "accuracy", "learning_rate", "grad_norm", "tokens_per_sec",
                "target_tokens_per_sec", "examples_per_sec", "step_time", "data_wait_fraction"):
        assert sorted(train[tag]) == [3, 6], tag
    for step, loss in result.history:
        assert float(train["loss"][step]) == pytest.approx(loss, rel=1e-6)
    assert 0 < float(train["learning_rate"][6]) < 3e-3
    assert float(train["tokens_per_sec"][6]) > 0
    try:
        from t5pre.models import training_flops_per_token  # noqa: F401
    except (ImportError, AttributeError):
        pytest.skip("the model layer has no FLOPs-per-token function yet: no MFU scalar")
    assert 0 < float(train["mfu"][6]) < 1


def test_config_text_and_eval_summaries(logged_run):
    model_dir, result = logged_run
    train = _read(model_dir / "logs" / "train")
    config_text = train["config"][0].item().decode()
    assert "batch_size: 8" in config_text and "task: synthetic" in config_text
    ev = _read(model_dir / "logs" / "eval")
    assert sorted(ev["loss"]) == [3, 6] and sorted(ev["accuracy"]) == [3, 6]
    assert float(ev["loss"][6]) == pytest.approx(result.last_metrics["eval_loss"], rel=1e-6)
    assert np.isfinite(float(ev["loss"][3])) and 0 <= float(ev["accuracy"][6]) <= 1
    table = ev["samples"][6].item().decode()
    assert table.startswith("| input | target | prediction")
    assert len(table.splitlines()) == 2 + 2  # header, rule, two examples
