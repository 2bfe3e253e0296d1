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


@pytest.mark.slow
def test_run_config_as_hparams_and_a_profiler_trace_of_the_chosen_steps(tmp_path):
    import glob

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from t5pre.training.testing import SyntheticTask, tiny_config
    from t5pre.training.trainer import Trainer

    run = tmp_path / "run"
    cfg = tiny_config("training.steps=4", "training.log_every=2", "training.eval_every=0",
                      "training.profile_steps='2:3'", model_dir=str(run))
    messages = []
    Trainer(cfg, str(run), task=SyntheticTask(), log=messages.append).train()
    assert glob.glob(str(run / "logs" / "train" / "plugins" / "profile" / "*" / "*.xplane.pb"))
    assert any("profiler trace of steps 2-3" in m for m in messages)
    acc = EventAccumulator(str(run / "logs" / "train"))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    values = data.session_start_info.hparams
    assert values["training.batch_size"].number_value == cfg.training.batch_size
    assert values["data.task"].string_value == "synthetic"
    assert values["optimizer.name"].string_value == cfg.optimizer.name


def test_profile_steps_must_be_a_range():
    from t5pre.errors import ConfigError
    from t5pre.training.config import profile_range

    assert profile_range("10:15") == (10, 15) and profile_range(None) is None
    for bad in ("15:10", "0:3", "3", "a:b"):
        with pytest.raises(ConfigError, match="training.profile_steps"):
            profile_range(bad)
