"""Own data without Python: `pretrain --files` (lines / paragraphs / file / jsonl), `finetune
--train-files` (JSON Lines fields, SQuAD JSON), what a run records so that resume and evaluate
need nothing repeated, and `--steps` on a resume stretching the decay."""

import gzip
import json
import re
import sys

import pytest

from t5pre.cli import main
from t5pre.errors import ConfigError, DataError
from t5pre.training import config as C

TINY = ("model.overrides={d_model: 32, d_ff: 64, num_heads: 2, d_kv: 16, "
        "num_encoder_layers: 1, num_decoder_layers: 1}")
PRETRAIN = ["--set", "training.batch_size=4", "--set", "training.log_every=1",
            "--set", "training.eval_every=0", "--set", "training.checkpoint_every=100",
            "--set", "data.sequence_length={inputs: 32, targets: 8}", "--set", TINY,
            "--set", "optimizer.name=adamw", "--set", "optimizer.learning_rate=1e-2",
            "--set", "optimizer.warmup_steps=1", "--set", "optimizer.final_learning_rate=1e-6"]
FINETUNE = ["--steps", "2", "--set", "training.batch_size=4",
            "--set", "data.sequence_length={inputs: 32, targets: 8}",
            "--set", "training.eval_every=2", "--set", "training.eval_steps=1",
            "--set", "training.checkpoint_every=2", "--set", "training.log_every=2",
            "--set", "optimizer.warmup_steps=1", "--set", "finetune.eval_examples=4",
            "--set", "finetune.eval_batch_size=4"]

BOOK = ("THE TITLE\n\n"
        "It is a truth universally acknowledged, that a single man\n"
        "  in possession of a good fortune, must be in want of a wife.\n"
        "\n   \n\n"
        "However little known the feelings or views of such a man\r\n"
        "may be on his first entering a neighbourhood.\n")


def run_cli(capsys, *argv):
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def documents(source, split="train"):
    return sorted(x["text"].decode() for x in
                  source.get_dataset(split, shuffle=False).as_numpy_iterator())


# ------------------------------------------------------------------------------ the sources
def test_text_formats_cut_the_documents_a_reader_expects(tmp_path):
    from t5pre.data.sources import TextLineSource

    (tmp_path / "book.txt").write_text(BOOK)
    with gzip.open(tmp_path / "note.txt.gz", "wt") as f:
        f.write("one line\n\nanother\n")
    pattern = {"train": str(tmp_path / "*.txt*")}
    para1 = ("It is a truth universally acknowledged, that a single man in possession of a "
             "good fortune, must be in want of a wife.")
    para2 = "However little known the feelings or views of such a man may be on his first " \
            "entering a neighbourhood."
    assert documents(TextLineSource(pattern, documents="paragraphs")) == sorted(
        ["THE TITLE", para1, para2, "one line", "another"])
    whole = documents(TextLineSource(pattern, documents="file"))
    assert whole == sorted([BOOK.replace("\r", "").strip(), "one line\n\nanother"])
    lines = documents(TextLineSource(pattern))  # the default: one document per line
    assert len(lines) == 7 and "THE TITLE" in lines and "another" in lines
    with pytest.raises(DataError, match="documents must be one of"):
        TextLineSource(pattern, documents="pages")


def test_files_task_formats_and_errors(tmp_path):
    from t5pre.data.sources import data_errors
    from t5pre.tasks.files import files_task

    (tmp_path / "book.txt").write_text(BOOK)
    (tmp_path / "a.jsonl").write_text('{"meta": {"body": "first text"}}\n'
                                      '{"meta": {"body": "second text"}}\n')
    cfg = C.load_config(None, [f"data.files={tmp_path / 'book.txt'}", "data.format=paragraphs"])
    assert cfg.data.task == "files_span_corruption" and cfg.data.format == "paragraphs"
    task = files_task(cfg.data)
    assert documents(task.source) == ["However little known the feelings or views of such a "
                                      "man may be on his first entering a neighbourhood.",
                                      "It is a truth universally acknowledged, that a single "
                                      "man in possession of a good fortune, must be in want "
                                      "of a wife.", "THE TITLE"]
    examples = list(task.get_dataset({"inputs": 32, "targets": 8}, shuffle=False,
                                     num_epochs=1).as_numpy_iterator())
    assert examples and len(examples[0]["inputs"]) == 32  # span corruption over the paragraphs

    # JSON Lines: format from the extension, the text field nested as a.b
    cfg = C.load_config(None, [f"data.files={tmp_path / '*.jsonl'}", "data.text_field=meta.body"])
    assert cfg.data.format == "jsonl"
    assert documents(files_task(cfg.data).source) == ["first text", "second text"]
    (tmp_path / "b.jsonl").write_text('{"meta": {"body": "ok"}}\n{"other": 1}\n')
    with pytest.raises(DataError, match=r"b\.jsonl:2: missing key 'meta'"), data_errors():
        documents(files_task(cfg.data).source)

    # a glob matching nothing names the glob; a catalogue name is not replaced
    cfg = C.load_config(None, [f"data.files={tmp_path / 'none' / '*.txt'}"])
    with pytest.raises(DataError, match=r"no file matches '.*none/\*\.txt'"):
        files_task(cfg.data)
    cfg = C.load_config(None, [f"data.files={tmp_path / 'book.txt'}",
                               "data.task=default_span_corruption"])
    with pytest.raises(ConfigError, match="is a registered task"):
        files_task(cfg.data)


def test_files_task_vocabulary(shared_data, tmp_path):
    from t5pre.tasks.files import files_task

    (tmp_path / "a.txt").write_text("some text\n")
    model = shared_data / "spm" / "seqio_test_sentencepiece.model"
    cfg = C.load_config(None, [f"data.files={tmp_path / 'a.txt'}", f"data.vocabulary={model}"])
    assert files_task(cfg.data).vocabulary.vocab_size == 126
    assert files_task(cfg.data.files_spec()).vocabulary.vocab_size == 126  # the recorded form


def test_a_files_task_goes_through_the_token_cache(tmp_path):
    from t5pre.data.cache import build_cache, in_memory_store, open_cache
    from t5pre.tasks.files import files_task

    (tmp_path / "book.txt").write_text((BOOK + "\n") * 5)
    cfg = C.load_config(None, [f"data.files={tmp_path / 'book.txt'}", "data.format=paragraphs"])
    build_cache(files_task(cfg.data), str(tmp_path / "cache"))
    # a later process rebuilds the same task from the recorded keys and opens the cache
    cached = open_cache(str(tmp_path / "cache"), task=files_task(cfg.data)).split("train")
    memory = in_memory_store(files_task(cfg.data), "train")
    assert cached.num_documents == memory.num_documents == 15  # 3 paragraphs x 5
    assert cached.document(1).tolist() == memory.document(1).tolist()


@pytest.mark.parametrize("overrides, message", [
    (["data.task=x", "data.format=paragraphs"], "data.format applies to data.files"),
    (["data.files=[a.txt, b.jsonl]"], "mix JSON Lines"),
    (["data.files=a.jsonl", "data.input_field=doc"], "data.target_field is not set"),
    (["data.files=a.txt", "data.format=lines", "data.input_field=d", "data.target_field=s"],
     "read JSON Lines"),
    (["data.files={train: []}"], "data.files.train must be a glob"),
    (["data.files=a.txt", "data.format=pdf"], "is not one of"),
    (["data.task=x", "data.modules=[1]"], "data.modules must be a list of names"),
])
def test_files_keys_are_checked(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        C.load_config(None, overrides)


def test_files_are_recorded_absolute_and_named_by_kind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = C.load_config(None, ["data.files={train: 'c/*.txt', validation: v.txt}"])
    assert cfg.data.files == {"train": [str(tmp_path / "c" / "*.txt")],
                              "validation": [str(tmp_path / "v.txt")]}
    assert C.load_config(None, ["data.files=t.jsonl", "data.input_field=d",
                                "data.target_field=s"]).data.task == "files_summarization"
    squad = C.load_config(None, ["data.files=t.json", "data.format=squad"])
    assert squad.data.task == "files_squad"
    path = tmp_path / "config.yaml"
    C.save_config(squad, str(path))
    assert C.load_config(str(path)) == squad


# ------------------------------------------------------------------------- the command line
@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A pretraining run on a paragraphs corpus given by --files: 3 steps, then resumed with
    --steps 6 and no --files (the schedule stretches)."""
    root = tmp_path_factory.mktemp("own_data")
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"book{i}.txt").write_text(BOOK * 8)
    return root


def test_pretrain_on_files_resumes_and_extends_the_schedule(pretrained, capsys, monkeypatch):
    from t5pre.data.registry import TaskRegistry
    from t5pre.training.schedules import make_schedule

    # --module is recorded too: this one registers a task (a fresh process would lack it)
    (pretrained / "own_data_tasks_mod.py").write_text(
        "from t5pre.tasks.pretraining import register_text_pretraining_task\n"
        "register_text_pretraining_task('own_data_mod_task', "
        f"{str(pretrained / 'corpus' / '*.txt')!r})\n")
    monkeypatch.syspath_prepend(str(pretrained))
    run = pretrained / "run"
    code, out, err = run_cli(capsys, "pretrain", "--model-dir", run, "--files",
                             pretrained / "corpus" / "*.txt", "--format", "paragraphs",
                             "--module", "own_data_tasks_mod", "--steps", "3", *PRETRAIN)
    assert code == 0, err
    saved = C.load_config(str(run / "config.yaml"))
    assert saved.data.files == {"train": [str(pretrained / "corpus" / "*.txt")]}
    assert saved.data.format == "paragraphs" and saved.data.task == "files_span_corruption"
    assert saved.data.modules == ["own_data_tasks_mod"]
    # the decay ends at step 3: the rate of a 4th update would be the floor
    assert float(make_schedule(saved.optimizer)(3)) == pytest.approx(1e-6, rel=1e-3)

    # the same directory, --steps 6, nothing else: files, format, module, settings are kept
    TaskRegistry.remove("own_data_mod_task")
    monkeypatch.delitem(sys.modules, "own_data_tasks_mod")
    code, out, err = run_cli(capsys, "pretrain", "--model-dir", run, "--steps", "6")
    assert code == 0, err
    assert "own_data_mod_task" in TaskRegistry.names()  # the recorded module was imported
    assert "resumed from" in out and "step 6/6" in out
    assert "decay now ends at step 6" in out and "optimizer.decay_steps=3" in out
    lr_at = dict(re.findall(r"step (\d+)/\d+ .*?\| lr ([0-9.e+-]+)", out))
    assert float(lr_at["4"]) > 1e-3  # not at the floor for the new steps


def test_an_unknown_task_hints_at_module(tmp_path, capsys):
    code, _, err = run_cli(capsys, "pretrain", "--model-dir", tmp_path / "run", "--steps", "1",
                           "--set", "data.task=own_data_nosuch_task", *PRETRAIN)
    assert code == 2 and "unknown task" in err and "--module PYTHON_MODULE" in err
    assert "--files GLOB" in err and "Traceback" not in err


def test_finetune_from_jsonl_then_evaluate_and_predict_with_nothing_repeated(
        pretrained, tmp_path, capsys):
    from t5pre.evaluation.predict import Predictor

    for name, n in (("train", 12), ("val", 4)):
        with open(tmp_path / f"{name}.jsonl", "w") as f:
            for i in range(n):
                f.write(json.dumps({"doc": {"body": f"document number {i} says a few words"},
                                    "summary": f"number {i}"}) + "\n")
    ft = tmp_path / "ft"
    code, out, err = run_cli(capsys, "finetune", "--init-from", pretrained / "run",
                             "--model-dir", ft, "--train-files", tmp_path / "train.jsonl",
                             "--validation-files", tmp_path / "val.jsonl",
                             "--input-field", "doc.body", "--target-field", "summary",
                             "--prefix", "summarize: ", *FINETUNE)
    assert code == 0, err
    best = json.loads((ft / "best" / "best.json").read_text())
    assert best["task"] == "files_summarization" and best["metric"] == "rougeLsum"
    assert best["data"]["files"]["validation"] == [str(tmp_path / "val.jsonl")]
    assert best["data"]["prefix"] == "summarize: " and best["data"]["input_field"] == "doc.body"
    assert json.loads((ft / "finetune.json").read_text())["data"] == best["data"]

    code, out, err = run_cli(capsys, "evaluate", "--model-dir", ft / "best",
                             "--out", tmp_path / "e.json")
    assert code == 0, err
    summary = json.loads((tmp_path / "e.json").read_text())
    assert summary["task"] == "files_summarization" and summary["num_examples"] == 4
    assert summary["sequence_length"] == {"inputs": 32, "targets": 8}
    assert "rougeLsum" in summary["scores"]
    rows = [json.loads(line) for line in open(tmp_path / "e.predictions.jsonl")]
    assert rows[0]["input"].startswith("summarize: document number")
    settings = Predictor.from_model_dir(ft / "best").settings
    assert (settings.max_input_length, settings.max_decode_length) == (32, 8)


def test_finetune_from_squad_json_then_evaluate(pretrained, tmp_path, capsys):
    def squad(n, first):
        paragraphs = [{"context": f"The colour of box {i} is shade{i} today.",
                       "qas": [{"id": f"q{first + i}", "question": f"What colour is box {i}?",
                                "answers": [{"text": f"shade{i}", "answer_start": 20}]}]}
                      for i in range(n)]
        return {"version": "1.1", "data": [{"title": "boxes", "paragraphs": paragraphs}]}

    (tmp_path / "train.json").write_text(json.dumps(squad(8, 0)))
    (tmp_path / "dev.json").write_text(json.dumps(squad(3, 100)))
    ft = tmp_path / "qa"
    code, out, err = run_cli(capsys, "finetune", "--init-from", pretrained / "run",
                             "--model-dir", ft, "--format", "squad",
                             "--train-files", tmp_path / "train.json",
                             "--validation-files", tmp_path / "dev.json", *FINETUNE)
    assert code == 0, err
    assert json.loads((ft / "best" / "best.json").read_text())["metric"] == "f1"
    code, out, err = run_cli(capsys, "evaluate", "--model-dir", ft / "best",
                             "--out", tmp_path / "qa.json")
    assert code == 0, err
    summary = json.loads((tmp_path / "qa.json").read_text())
    assert summary["task"] == "files_squad" and summary["num_examples"] == 3
    assert set(summary["scores"]) >= {"em", "f1"}

    # a re-run needs nothing repeated: `finetune --model-dir DIR --steps 4` continues this run
    code, out, err = run_cli(capsys, "finetune", "--model-dir", ft, "--steps", "4")
    assert code == 0, err
    assert "continuing the fine-tuning run recorded in" in out and "files_squad" in out
    assert (ft / "checkpoints" / "ckpt-4.index").is_file()
    assert json.loads((ft / "finetune.json").read_text())["data"]["format"] == "squad"
    code, _, err = run_cli(capsys, "finetune", "--model-dir", tmp_path / "new")
    assert code == 2 and "--init-from is required" in err and "Traceback" not in err


def test_finetune_needs_fields_for_jsonl(pretrained, tmp_path, capsys):
    (tmp_path / "t.jsonl").write_text('{"text": "a"}\n')
    code, _, err = run_cli(capsys, "finetune", "--init-from", pretrained / "run",
                           "--model-dir", tmp_path / "x", "--train-files", tmp_path / "t.jsonl")
    assert code == 2 and "--input-field and --target-field" in err and "Traceback" not in err


def test_evaluate_remembers_use_model_vocabulary(shared_data, tmp_path, capsys):
    from t5pre.data.vocabulary import SentencePieceVocabulary
    from t5pre.models import T5Config, T5Model, save_pretrained

    vocab = SentencePieceVocabulary(str(shared_data / "spm" / "seqio_test_sentencepiece.model"))
    values = {**T5Config.from_name("tiny").to_dict(), "d_model": 32, "d_ff": 64, "num_heads": 2,
              "d_kv": 16, "num_encoder_layers": 1, "num_decoder_layers": 1, "vocab_size": 128}
    save_pretrained(T5Model(T5Config.from_dict(values)), vocab, tmp_path / "foreign")
    ft = tmp_path / "ft"
    code, _, err = run_cli(capsys, "finetune", "--init-from", tmp_path / "foreign",
                           "--task", "default_summarize", "--use-model-vocabulary",
                           "--model-dir", ft, *FINETUNE)
    assert code == 0, err
    assert json.loads((ft / "best" / "best.json").read_text())["use_model_vocabulary"] is True
    code, _, err = run_cli(capsys, "evaluate", "--model-dir", ft / "best", "--max-examples", "2",
                           "--out", tmp_path / "e.json")
    assert code == 0, err
    assert json.loads((tmp_path / "e.json").read_text())["num_examples"] == 2
