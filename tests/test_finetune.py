"""`t5pre finetune` and t5pre.finetune: end to end on real data from a pretraining dir
made here (checkpoints, decoded metrics in TensorBoard, best/), resume, init sources, errors."""

import glob
import json
import os

import numpy as np
import pytest

from t5pre.cli import main as cli
from t5pre.errors import CheckpointError, ConfigError

TINY = {"d_model": 32, "num_heads": 2, "d_kv": 16, "d_ff": 64, "num_encoder_layers": 1,
        "num_decoder_layers": 1}


@pytest.fixture(scope="module")
def pretrain_dir(tmp_path_factory):
    """A tiny pretraining model dir (default span corruption, shipped vocabulary) with
    checkpoints at steps 2 and 3."""
    from t5pre.training.config import load_config
    from t5pre.training.trainer import Trainer

    run = {"model": {"name": "tiny", "overrides": dict(TINY)},
           "data": {"task": "default_span_corruption",
                    "sequence_length": {"inputs": 32, "targets": 8}, "eval_split": None},
           "training": {"batch_size": 4, "steps": 3, "log_every": 3, "eval_every": 0,
                        "checkpoint_every": 2, "text_samples": 0},
           "optimizer": {"name": "adamw", "learning_rate": 1e-2, "warmup_steps": 1},
           "strategy": {"name": "one_device"}}
    path = tmp_path_factory.mktemp("finetune") / "pre"
    Trainer(load_config(None, defaults=run), str(path), log=lambda m: None).train()
    return path


def _eval_scalars(model_dir):
    """{tag: {step: value}} of the eval TensorBoard logs."""
    import tensorflow as tf

    out = {}
    for path in glob.glob(os.path.join(model_dir, "logs", "eval", "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.HasField("tensor") and value.metadata.plugin_data.plugin_name == "scalars":
                    out.setdefault(value.tag, {})[event.step] = float(
                        tf.make_ndarray(value.tensor))
    return out


def _finetune_args(pre, out, steps):
    return ["finetune", "--config", "debian_descriptions", "--init-from", str(pre),
            "--model-dir", str(out), "--steps", str(steps),
            "--set", "training.batch_size=4", "--set", "data.sequence_length.inputs=64",
            "--set", "data.sequence_length.targets=16", "--set", "training.eval_every=2",
            "--set", "training.eval_steps=1", "--set", "training.checkpoint_every=2",
            "--set", "training.log_every=2", "--set", "optimizer.warmup_steps=1",
            "--set", "finetune.eval_examples=4", "--set", "finetune.eval_batch_size=4"]


@pytest.mark.slow
def test_finetune_end_to_end_on_real_data(pretrain_dir, shared_data, tmp_path, monkeypatch,
                                          capsys):
    from t5pre.models import load_pretrained

    monkeypatch.setenv("T5PRE_DATA_DIR", str(shared_data))
    out = tmp_path / "ft"
    assert cli(_finetune_args(pretrain_dir, out, 4)) == 0
    printed = capsys.readouterr().out
    assert f"initialised weights from {pretrain_dir}" in printed and "ckpt-3" in printed

    # Checkpoints and the model-dir files of the Trainer; dropout 0.1 by default.
    assert (out / "checkpoints" / "ckpt-4.index").exists()
    assert json.loads((out / "model_config.json").read_text())["dropout_rate"] == 0.1
    assert json.loads((out / "model_config.json").read_text())["d_model"] == 32
    import yaml
    run_config = yaml.safe_load((out / "config.yaml").read_text())
    assert run_config["data"]["task"] == "debian_descriptions"
    assert run_config["model"]["init_from"] == str(pretrain_dir)

    # Decoded metrics in TensorBoard at every evaluation, beside the token loss.
    scalars = _eval_scalars(out)
    assert set(scalars["rougeLsum"]) == {2, 4} and set(scalars["loss"]) == {2, 4}
    assert "rouge1" in scalars and "rouge2" in scalars

    # best/ holds the best evaluation by ROUGE-Lsum, loadable as a pretrained dir.
    best = json.loads((out / "best" / "best.json").read_text())
    assert best["metric"] == "rougeLsum" and best["task"] == "debian_descriptions"
    top = max(scalars["rougeLsum"].values())
    assert best["score"] == pytest.approx(top)
    assert best["step"] == min(s for s, v in scalars["rougeLsum"].items() if v == top)
    model, vocab = load_pretrained(out / "best")
    assert model.config.d_model == 32 and vocab.vocab_size == 4100
    assert not glob.glob(str(out / ".best-*"))

    # Re-running with more steps resumes (no re-initialisation) and keeps best/ consistent.
    assert cli(_finetune_args(pretrain_dir, out, 6)) == 0
    printed = capsys.readouterr().out
    assert "resumed from" in printed and "initialised weights" not in printed
    assert (out / "checkpoints" / "ckpt-6.index").exists()
    scalars = _eval_scalars(out)
    assert set(scalars["rougeLsum"]) == {2, 4, 6}
    best = json.loads((out / "best" / "best.json").read_text())
    assert best["score"] == pytest.approx(max(scalars["rougeLsum"].values()))

    # `t5pre evaluate` on best/ picks task and lengths from it.
    assert cli(["evaluate", "--model-dir", str(out / "best"), "--max-examples", "3",
                "--out", str(tmp_path / "e.json")]) == 0
    summary = json.loads((tmp_path / "e.json").read_text())
    assert summary["task"] == "debian_descriptions" and summary["num_examples"] == 3
    assert summary["sequence_length"] == {"inputs": 64, "targets": 16}
    # predict and export default to the same fine-tuned lengths (best/ has no run config).
    from t5pre.evaluation.predict import Predictor

    settings = Predictor.from_model_dir(out / "best").settings
    assert (settings.max_input_length, settings.max_decode_length) == (64, 16)
    # the run records the --module values that registered its task (none here)
    assert json.loads((out / "finetune.json").read_text())["modules"] == []


def test_init_from_a_chosen_checkpoint_copies_its_weights(pretrain_dir):
    import dataclasses

    from t5pre.models import T5Model
    from t5pre.models.store import read_init, resolve_init
    from t5pre.models.store import load_model

    init = resolve_init(f"{pretrain_dir}@ckpt-2")
    assert (init.kind, init.checkpoint, init.path) == ("training", 2, str(pretrain_dir))
    loaded = read_init(init)
    model = T5Model(dataclasses.replace(loaded.config, dropout_rate=0.1))
    assert loaded.load_into(model).endswith("ckpt-2")
    want2, _, _ = load_model(pretrain_dir, 2)
    want3, _, _ = load_model(pretrain_dir, 3)
    got = {w.path: np.asarray(w.numpy()) for w in model.weights}
    assert all(np.array_equal(got[w.path], w.numpy()) for w in want2.weights)
    assert not all(np.array_equal(got[w.path], w.numpy()) for w in want3.weights)
    with pytest.raises(CheckpointError, match="available steps: 2, 3"):
        read_init(resolve_init(f"{pretrain_dir}@ckpt-9"))


def test_init_sources_are_recognised(pretrain_dir, tmp_path):
    from t5pre.models import save_pretrained
    from t5pre.models.store import read_init, resolve_init
    from t5pre.models.store import load_model

    model, vocab, _ = load_model(pretrain_dir)
    save_pretrained(model, vocab, tmp_path / "saved")
    init = resolve_init(str(tmp_path / "saved"))
    assert init.kind == "pretrained"
    assert read_init(init).vocabulary == vocab
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    (hf / "model.safetensors").write_bytes(b"")
    assert resolve_init(str(hf)).kind == "hf"
    with pytest.raises(ConfigError, match="applies only to a training model directory"):
        resolve_init(f"{tmp_path / 'saved'}@ckpt-3")
    with pytest.raises(CheckpointError, match="not a model directory"):
        resolve_init(str(tmp_path))


def test_best_keeper_keeps_the_best_and_recovers(pretrain_dir, tmp_path):
    from t5pre.training.actions import BestCheckpoint as BestKeeper, read_best_info
    from t5pre.models.store import load_model

    model, vocab, _ = load_model(pretrain_dir)
    keeper = BestKeeper(str(tmp_path), None, info={"task": "t"})
    assert keeper.update(2, {"rouge1": 10.0, "rougeLsum": 5.0}, model, vocab)
    assert not keeper.update(4, {"rouge1": 20.0, "rougeLsum": 4.0}, model, vocab)
    assert keeper.update(6, {"rouge1": 1.0, "rougeLsum": 6.0}, model, vocab)
    info = read_best_info(tmp_path / "best")
    assert (info["step"], info["metric"], info["score"], info["task"]) == (6, "rougeLsum", 6.0, "t")
    # A crash between the two renames leaves only .best-old-*: the next start puts it back
    # and a restarted run does not overwrite a better best with a worse one.
    os.rename(tmp_path / "best", tmp_path / ".best-old-123")
    again = BestKeeper(str(tmp_path), None)
    assert (tmp_path / "best" / "model.weights.h5").exists()
    assert again.best_score == 6.0 and not again.update(8, {"rougeLsum": 5.5}, model, vocab)


def test_unknown_task_is_a_clear_error(pretrain_dir, tmp_path, capsys):
    rc = cli(["finetune", "--init-from", str(pretrain_dir), "--task", "debian_descripions",
              "--model-dir", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown task 'debian_descripions'" in err and "debian_descriptions" in err


def test_init_dir_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    run = tmp_path / "pre"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("model: {name: tiny}\n")
    rc = cli(["finetune", "--init-from", str(run), "--model-dir", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "no checkpoint" in err and str(run) in err


def test_vocabulary_mismatch_is_a_clear_error(shared_data, tmp_path, capsys):
    from t5pre.data.vocabulary import SentencePieceVocabulary
    from t5pre.models import T5Config, T5Model, save_pretrained

    vocab = SentencePieceVocabulary(str(shared_data / "spm" / "seqio_test_sentencepiece.model"))
    values = {**T5Config.from_name("tiny").to_dict(), **TINY, "vocab_size": 128}
    save_pretrained(T5Model(T5Config.from_dict(values)), vocab, tmp_path / "foreign")
    rc = cli(["finetune", "--init-from", str(tmp_path / "foreign"), "--task",
              "default_summarize", "--model-dir", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "does not match task 'default_summarize'" in err
    assert "126 ids" in err and "4100 ids" in err and "Traceback" not in err


def test_config_errors_name_file_and_line(pretrain_dir, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  task: default_summarize\nfinetune:\n  eval_exmples: 3\n")
    rc = cli(["finetune", "--config", str(bad), "--init-from", str(pretrain_dir),
              "--model-dir", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and f"{bad}:4" in err and "did you mean 'eval_examples'" in err
    rc = cli(["finetune", "--init-from", str(pretrain_dir), "--model-dir", str(tmp_path / "x"),
              "--set", "model.overrides.d_model=64"])
    err = capsys.readouterr().err
    assert rc == 2 and "--set model.overrides.d_model=64" in err and "dropout_rate" in err
    rc = cli(["finetune", "--config", "nonesuch", "--init-from", str(pretrain_dir),
              "--model-dir", str(tmp_path / "x")])
    assert rc == 2 and "default_summarize" in capsys.readouterr().err


def test_packaged_configs_load():
    from t5pre.cli.finetune import config_path
    from t5pre.training.config import load_finetune_config

    tasks = {}
    for name in ("default_summarize", "debian_descriptions", "squad", "cnn_dailymail"):
        cfg = load_finetune_config(config_path(name))
        tasks[name] = (cfg.data.task, cfg.model.overrides["dropout_rate"], cfg.finetune.metric)
    assert tasks["squad"] == ("squad_v1.1_files", 0.1, "f1")
    assert tasks["default_summarize"][0] == "default_summarize"
    cfg = load_finetune_config(config_path("cnn_dailymail"))
    assert (cfg.data.sequence_length.inputs, cfg.data.sequence_length.targets) == (512, 512)


def test_one_way_to_name_an_init_checkpoint(pretrain_dir, tmp_path, capsys):
    """DIR@ckpt-N names an init checkpoint; the old flag and config key say so and stop."""
    rc = cli(["finetune", "--init-from", str(pretrain_dir), "--init-checkpoint", "2",
              "--model-dir", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and f"--init-from {pretrain_dir}@ckpt-2" in err and "Traceback" not in err
    old = tmp_path / "old.yaml"
    old.write_text("data:\n  task: default_summarize\nfinetune:\n  init_checkpoint: 2\n")
    rc = cli(["finetune", "--config", str(old), "--init-from", str(pretrain_dir),
              "--model-dir", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and f"{old}:4" in err and "DIR@ckpt-N" in err
    assert not (tmp_path / "x").exists()
