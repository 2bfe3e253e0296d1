"""`t5pre evaluate` and t5pre.evaluation.evaluate: files written, rows, scores recomputable from
the predictions file, errors."""

import json
import os

import pytest

from t5pre.cli import main as cli

TINY = {"d_model": 32, "num_heads": 2, "d_kv": 16, "d_ff": 64, "num_encoder_layers": 1,
        "num_decoder_layers": 1}


def _tiny_model(vocab_size):
    from t5pre.models import T5Config, T5Model

    values = {**T5Config.from_name("tiny").to_dict(), **TINY, "vocab_size": vocab_size}
    return T5Model(T5Config.from_dict(values))


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    """A save_pretrained dir: a random tiny T5 over the shipped default vocabulary."""
    import keras

    from t5pre.data.vocabulary import default_vocabulary
    from t5pre.models import save_pretrained

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("evaluate") / "model"
    save_pretrained(_tiny_model(4224), default_vocabulary(), path)
    return path


@pytest.fixture(scope="module")
def foreign_vocab_dir(tmp_path_factory, shared_data):
    """A save_pretrained dir whose vocabulary (seqio's 26-piece test model) is not the tasks'."""
    from t5pre.data.vocabulary import SentencePieceVocabulary
    from t5pre.models import save_pretrained

    vocab = SentencePieceVocabulary(str(shared_data / "spm" / "seqio_test_sentencepiece.model"))
    path = tmp_path_factory.mktemp("evaluate") / "foreign"
    save_pretrained(_tiny_model(128), vocab, path)
    return path


def _first_examples(task_name, n, lengths):
    import t5pre

    ds = t5pre.get_task(task_name).get_dataset(lengths, split="validation", shuffle=False,
                                               num_epochs=1).take(n)
    return list(ds.as_numpy_iterator())


def test_evaluate_writes_scores_and_predictions_that_recompute(pretrained_dir, tmp_path, capsys):
    from t5pre.evaluation.metrics import rouge
    from t5pre.evaluation.postprocessors import summarization_postprocessor

    out = tmp_path / "res" / "scores.json"
    rc = cli(["evaluate", "--model-dir", str(pretrained_dir), "--task", "default_summarize",
              "--max-examples", "6", "--batch-size", "4", "--inputs-length", "64",
              "--targets-length", "8", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "rougeLsum" in printed and "<- main" in printed
    assert "6/6" in printed  # the decoding progress bar (Keras Progbar, closing line off a tty)
    summary = json.loads(out.read_text())
    assert summary["task"] == "default_summarize" and summary["num_examples"] == 6
    assert summary["main_metric"] == "rougeLsum"
    assert summary["sequence_length"] == {"inputs": 64, "targets": 8}
    rows = [json.loads(line) for line in open(summary["predictions_file"])]
    assert summary["predictions_file"].endswith("scores.predictions.jsonl")

    # The rows are the split's first examples, in order, with their raw texts.
    examples = _first_examples("default_summarize", 6, {"inputs": 64, "targets": 8})
    assert [r["input"] for r in rows] == [e["inputs_pretokenized"].decode() for e in examples]
    assert [r["target"] for r in rows] == [e["targets_pretokenized"].decode() for e in examples]
    assert all(isinstance(r["prediction"], str) for r in rows)

    # The scores are the task's metric over the postprocessed texts of the file.
    targets = [summarization_postprocessor(r["target"], is_target=True) for r in rows]
    predictions = [summarization_postprocessor(r["prediction"]) for r in rows]
    assert [r["scored_target"] for r in rows] == targets
    assert summary["scores"] == pytest.approx(rouge(targets, predictions))


def test_scores_follow_the_predictions(tmp_path):
    """Half the predictions copy their reference: the scores land strictly between 0 and 100
    and are what the file recomputes to."""
    import t5pre
    from t5pre.evaluation.evaluate import (EvalResult, make_rows, read_predictions, score_rows,
                                           write_results)

    task = t5pre.get_task("default_summarize")
    examples = _first_examples("default_summarize", 8, {"inputs": 32, "targets": 16})
    predictions = [e["targets_pretokenized"].decode() if i % 2 == 0 else "zzz"
                   for i, e in enumerate(examples)]
    rows = make_rows(task, examples, predictions)
    scores = score_rows(task, rows)
    assert 40 < scores["rouge1"] < 60 and 40 < scores["rougeLsum"] < 60
    result = EvalResult(task.name, "validation", scores, rows, "rougeLsum", 0.0)
    out, pred_path = write_results(result, str(tmp_path / "r.json"))
    again = score_rows(task, read_predictions(pred_path))
    assert again == pytest.approx(json.loads(open(out).read())["scores"])
    assert again == pytest.approx(scores)


def test_qa_rows_keep_all_answers_for_scoring():
    import t5pre
    from t5pre.evaluation.evaluate import make_rows, score_rows

    task = t5pre.get_task("default_qa")
    examples = _first_examples("default_qa", 4, {"inputs": 128, "targets": 16})
    answers = [[a.decode() for a in e["answers"]] for e in examples]
    rows = make_rows(task, examples, [a[-1] for a in answers])
    assert [r["scored_target"] for r in rows] == answers
    assert score_rows(task, rows) == {"em": 100.0, "f1": 100.0}


def test_unknown_task_is_a_clear_error(pretrained_dir, capsys):
    rc = cli(["evaluate", "--model-dir", str(pretrained_dir), "--task", "default_sumarize"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown task 'default_sumarize'" in err and "default_summarize" in err


def test_model_dir_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "run"
    (empty / "checkpoints").mkdir(parents=True)
    (empty / "config.yaml").write_text("data: {task: default_summarize}\n")
    rc = cli(["evaluate", "--model-dir", str(empty), "--task", "default_summarize"])
    err = capsys.readouterr().err
    assert rc == 2 and str(empty) in err and "checkpoint" in err
    assert "Traceback" not in err
    rc = cli(["evaluate", "--model-dir", str(tmp_path / "missing"), "--task", "default_summarize"])
    assert rc == 2 and "not found" in capsys.readouterr().err


def test_vocabulary_mismatch_is_a_clear_error(foreign_vocab_dir, capsys):
    rc = cli(["evaluate", "--model-dir", str(foreign_vocab_dir), "--task", "default_summarize",
              "--max-examples", "2"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "vocabulary" in err and "does not match task 'default_summarize'" in err
    assert str(foreign_vocab_dir) in err and "--use-model-vocabulary" in err


def test_use_model_vocabulary_retokenizes_the_task(foreign_vocab_dir):
    import t5pre
    from t5pre.data.task_vocabulary import check_vocabulary
    from t5pre.models.io import load_vocabulary_from

    vocab = load_vocabulary_from(foreign_vocab_dir)
    task = check_vocabulary(vocab, t5pre.get_task("default_summarize"), "x",
                            use_model_vocabulary=True)
    assert task.vocabulary is vocab
    ex = next(task.get_dataset({"inputs": 32, "targets": 8}, split="validation", shuffle=False,
                               num_epochs=1).as_numpy_iterator())
    assert ex["inputs"].max() < vocab.vocab_size and ex["inputs"][-1] == 1


def test_unknown_task_suggests_module(pretrained_dir, capsys):
    rc = cli(["evaluate", "--model-dir", str(pretrained_dir), "--task", "my_own_task_xyz"])
    err = capsys.readouterr().err
    assert rc == 2 and "--module PYTHON_MODULE" in err


def test_modules_recorded_by_fine_tuning_are_imported_again(tmp_path, monkeypatch):
    """best.json / finetune.json `modules` (the --module values of `t5pre finetune`) are
    imported before the task is looked up; one that cannot be imported names the directory."""
    import sys

    from t5pre.cli.evaluate import import_recorded_modules
    from t5pre.errors import ConfigError

    (tmp_path / "t5pre_test_recorded_module.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model_dir = tmp_path / "best"
    model_dir.mkdir()
    (model_dir / "best.json").write_text(json.dumps({"modules": ["t5pre_test_recorded_module"]}))
    import_recorded_modules(str(model_dir), [])
    assert sys.modules["t5pre_test_recorded_module"].LOADED
    (model_dir / "best.json").write_text(json.dumps({"modules": ["t5pre_no_such_module_xyz"]}))
    with pytest.raises(ConfigError, match=f"{model_dir}: fine-tuning recorded --module "
                                          "t5pre_no_such_module_xyz"):
        import_recorded_modules(str(model_dir), [])
    sys.modules.pop("t5pre_test_recorded_module", None)
