"""Outputs and progress of the commands (issue 19, items 6-9).

* Every output path is checked before the work starts (`t5pre.files.check_output_path`):
  `export` (both formats), `evaluate --out/--predictions`, `data cache --out`, `vocab train
  --out`. A path that cannot be used as given (under a regular file, a directory where a file
  goes, an existing export) is one line and exit 2; a place that cannot be written (/proc, a
  read-only directory) one line and exit 3 (StorageError). The slow part never runs, nothing is
  created.
* Progress: the ETA (t5pre.progress.Eta) leaves the first step of a process out; `data cache`
  and `vocab train` print progress lines in training's style.
* `evaluate`'s score table keeps its columns apart for short metric names (QA's em / f1).
* Messages name what the user typed (`--steps`) and what happened (init model's vocabulary).
"""

import math
import os
import re
import sys

import pytest

from t5pre.cli import main
from t5pre.errors import ConfigError, StorageError
from t5pre.files import check_output_path

PROC = "/proc/t5pre-no-such-process/1"
needs_proc = pytest.mark.skipif(not (sys.platform.startswith("linux") and os.path.isdir("/proc")),
                                reason="needs Linux's /proc (a file system that refuses files)")


def run_cli(capsys, *argv):
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("t5pre: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def entries(directory) -> list:
    return sorted(os.listdir(directory))


# ----------------------------------------------------------------------- the one helper
def test_check_output_path_refuses_what_cannot_be_used(tmp_path):
    regular = tmp_path / "file.txt"
    regular.write_text("x")
    with pytest.raises(ConfigError, match=r"--out .*file.txt/sub/out.json: .*file.txt is a file, "
                                          "not a directory"):
        check_output_path(regular / "sub" / "out.json")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        check_output_path(regular, directory=True)
    with pytest.raises(ConfigError, match="is a directory; give a file name"):
        check_output_path(tmp_path)
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep").write_text("mine")
    with pytest.raises(ConfigError, match=r"already exists \(pass --overwrite"):
        check_output_path(full, directory=True, overwrite=False)
    with pytest.raises(ConfigError, match="empty path"):
        check_output_path("")
    # allowed: a new path several levels deep, an existing directory to write into or replace
    assert check_output_path(tmp_path / "a" / "b" / "c.json") == str(tmp_path / "a" / "b" / "c.json")
    check_output_path(full, directory=True)
    check_output_path(full, directory=True, overwrite=True)
    check_output_path(regular)  # an existing file is replaced
    # nothing was created: no parent directory, no probe file
    assert entries(tmp_path) == ["file.txt", "full"] and entries(full) == ["keep"]


@needs_proc
def test_check_output_path_names_a_place_that_cannot_be_written(tmp_path):
    with pytest.raises(StorageError, match=r"--out /proc/.*: cannot write in /proc \(") as info:
        check_output_path(PROC)
    assert info.value.exit_code == 3


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root writes into read-only directories")
def test_check_output_path_read_only_directory(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(StorageError, match="Permission denied"):
            check_output_path(locked / "new" / "out.json")
    finally:
        locked.chmod(0o700)


# ------------------------------------------------------------------- through the commands
@pytest.fixture
def no_work(monkeypatch):
    """The slow parts of the commands fail the test if they are reached."""
    def reached(*args, **kwargs):
        raise AssertionError("the work started before the output path was checked")

    for target in ("t5pre.models.store.load_for_inference", "t5pre.data.cache.build_cache",
                   "t5pre.data.vocabulary.train_vocabulary", "t5pre.models.hf_export.export_model_dir",
                   "t5pre.models.hf_convert.convert_hf"):
        monkeypatch.setattr(target, reached)


def _commands(model_dir, out):
    return {
        "export": ["export", "--model-dir", model_dir, "--out", out],
        "export_hf": ["export", "--format", "hf", "--model-dir", model_dir, "--out", out],
        "evaluate": ["evaluate", "--model-dir", model_dir, "--task", "default_summarize",
                     "--out", f"{out}.json"],
        "evaluate_predictions": ["evaluate", "--model-dir", model_dir, "--task",
                                 "default_summarize", "--predictions", f"{out}.jsonl"],
        "data_cache": ["data", "cache", "default_span_corruption", "--out", out],
        "vocab_train": ["vocab", "train", "--default-corpus", "--vocab-size", "400", "--out", out],
        "convert_hf": ["convert", "hf", model_dir, out],
    }


COMMANDS = list(_commands("M", "O"))


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_under_a_regular_file_is_one_line_and_exit_2(command, tmp_path, capsys, no_work):
    regular = tmp_path / "notes.txt"
    regular.write_text("mine")
    argv = _commands(tmp_path, regular / "out")[command]
    code, _, err = run_cli(capsys, *argv)
    line = one_error_line(err)
    assert code == 2, err
    assert f"{regular} is a file, not a directory" in line
    if command != "convert_hf":  # OUT_DIR is positional
        assert re.search(r"--(out|predictions) ", line), line  # names the flag
    assert regular.read_text() == "mine" and entries(tmp_path) == ["notes.txt"]


@needs_proc
@pytest.mark.parametrize("command", COMMANDS)
def test_an_unwritable_output_is_one_line_and_exit_3(command, tmp_path, capsys, no_work):
    argv = _commands(tmp_path, PROC)[command]
    code, _, err = run_cli(capsys, *argv)
    line = one_error_line(err)
    assert code == 3, err
    assert "cannot write in /proc" in line and "/proc/t5pre-no-such-process/1" in line
    assert entries(tmp_path) == []


def test_an_existing_export_is_refused_in_both_formats(tmp_path, capsys, no_work):
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for fmt in ("savedmodel", "hf"):
        code, _, err = run_cli(capsys, "export", "--format", fmt, "--model-dir", tmp_path,
                               "--out", out)
        assert code == 2 and "already exists" in one_error_line(err)
    assert entries(out) == ["keep.txt"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    from test_export import make_tiny_model

    from t5pre.data.vocabulary import default_vocabulary
    from t5pre.models.io import save_pretrained

    return save_pretrained(make_tiny_model(), default_vocabulary(),
                           tmp_path_factory.mktemp("outputs") / "model")


def test_evaluate_checks_its_default_output_before_decoding(pretrained, tmp_path, capsys,
                                                            monkeypatch):
    """Without --out the scores go to MODEL_DIR/eval/: known only once the model (and its task)
    is loaded, and still checked before the split is decoded."""
    import shutil

    from t5pre.evaluation.evaluate import TaskEvaluator

    model_dir = tmp_path / "model"
    shutil.copytree(pretrained, model_dir)
    (model_dir / "eval").write_text("a file where the eval directory goes")

    def decode(*args, **kwargs):
        raise AssertionError("decoded before the output was checked")

    monkeypatch.setattr(TaskEvaluator, "evaluate", decode)
    code, _, err = run_cli(capsys, "evaluate", "--model-dir", model_dir, "--task",
                           "default_summarize", "--max-examples", "2")
    line = one_error_line(err)
    assert code == 2 and f"{model_dir / 'eval'} is a file, not a directory" in line
    assert "--out" not in line  # the user gave no --out


# ------------------------------------------------------------------------------ the ETA
def test_eta_after_a_resume_leaves_the_first_step_out():
    """Resumed at step 150 of 200: the first step (tracing, compiling) takes 20 s, the next ones
    0.5 s. After 10 steps 40 remain: 20 s, not the 98 s the mean step time (20 + 9 * 0.5) / 10
    gave (the 3m03s-for-46s of the issue)."""
    from t5pre.progress import Eta, fmt_duration

    eta = Eta(clock=lambda: 0.0)
    assert math.isnan(eta.seconds_left(200))
    now = 20.0
    eta.mark(151, now)
    assert math.isnan(eta.seconds_left(200))  # one step: no rate yet
    assert fmt_duration(eta.seconds_left(200)) == "?"
    for step in range(152, 161):
        now += 0.5
        eta.mark(step, now)
    assert eta.seconds_left(200) == pytest.approx(20.0)
    assert fmt_duration(eta.seconds_left(200)) == "20s"
    # a slower stretch (a checkpoint, an evaluation) counts: it will recur in the time left
    eta.mark(170, now + 10 * 0.5 + 5.0)
    assert eta.seconds_left(200) == pytest.approx(30 * (9.5 + 5.0) / 19)
    eta.mark(200, now + 100)
    assert eta.seconds_left(200) == 0


def test_training_logs_the_eta_from_this_process(tmp_path, monkeypatch):
    """The trainer marks every step on a t5pre.progress.Eta and logs what it says."""
    from t5pre.progress import Eta
    from t5pre.training import summaries
    from t5pre.training.testing import SyntheticTask, tiny_config
    from t5pre.training.trainer import Trainer

    marks = []

    class Recorded(Eta):
        def mark(self, done, now=None):
            marks.append(done)
            super().mark(done, now)

        def seconds_left(self, total):
            return 3600.0 + 25 * 60

    monkeypatch.setattr(summaries, "Eta", Recorded)
    lines = []
    config = tiny_config("training.steps=4", "training.log_every=2",
                         "training.checkpoint_every=4", model_dir=str(tmp_path))
    Trainer(config, str(tmp_path), task=SyntheticTask(), log=lines.append).train()
    progress = [line for line in lines if line.startswith("step ")]
    assert [line.split(" | ")[0] for line in progress] == ["step 2/4", "step 4/4"], lines
    assert all(line.endswith("| ETA 1h25m") for line in progress), progress
    assert marks == [1, 2, 3, 4]


# ------------------------------------------------------------------------ progress lines
def test_cache_build_prints_progress_in_training_style(tmp_path, monkeypatch):
    from t5pre.data import build_progress
    from t5pre.data.cache import build_cache
    from t5pre.data.default_corpus import default_corpus_texts
    from t5pre.tasks import pretraining

    texts = [t.replace("\n", " ") for t in default_corpus_texts("validation")][:300]
    (tmp_path / "part.txt").write_text("\n".join(texts) + "\n")
    task = pretraining.register_text_pretraining_task(
        "test_outputs_cache_progress", {"train": str(tmp_path / "part.txt")})
    monkeypatch.setattr(build_progress, "EVERY", 0.0)  # a line at every block
    lines = []
    manifest = build_cache(task, str(tmp_path / "cache"), progress=lines.append)
    pattern = re.compile(r"^cache: ([\d,]+) documents \| ([\d,]+) tokens \| (?:[\d.]+[kM]?|\?) tok/s "
                         r"\| shards (\d+)/1 done \| \d+s elapsed$")
    counts = [pattern.match(line) for line in lines]
    assert lines and all(counts), lines
    documents = [int(m.group(1).replace(",", "")) for m in counts]
    assert documents == sorted(documents)
    entry = manifest["splits"]["train"]
    assert documents[-1] == entry["documents"] > 0
    assert int(counts[-1].group(2).replace(",", "")) == entry["tokens"]["targets"]
    assert counts[-1].group(3) == "1"
    # quiet without a progress function, and no counters left behind
    assert build_progress._counters is None


def test_cache_progress_counts_across_worker_processes(tmp_path, monkeypatch):
    """Spawned workers add to shared counters; the main process prints while it waits."""
    import t5pre
    from t5pre.data import build_progress
    from t5pre.data.cache import build_cache

    monkeypatch.setattr(build_progress, "EVERY", 0.0)
    lines = []
    manifest = build_cache(t5pre.get_task("default_span_corruption"), str(tmp_path / "cache"),
                           splits=["validation"], workers=2, progress=lines.append)
    total = manifest["splits"]["validation"]["documents"]
    seen = [int(re.match(r"cache: ([\d,]+) documents", line).group(1).replace(",", ""))
            for line in lines]
    assert seen and all(0 <= n <= total for n in seen) and seen == sorted(seen), lines
    assert all(re.search(r"shards [0-2]/2 done", line) for line in lines)


def test_vocab_reading_progress_and_eta_from_the_files_size():
    from t5pre.cli.vocab import _Counter

    now = [0.0]
    counter = _Counter(iter(["x" * 9 + "\n"] * 20), total_bytes=200, clock=lambda: now[0])
    texts = iter(counter)
    for _ in range(5):  # 50 of 200 characters in 5 s: 10 characters a second, 15 s to go
        next(texts)
        now[0] += 1.0
    line = counter.progress_line()
    assert line == ("vocab: read 5 documents | 50 characters | 10 chars/s | 25% of the files | "
                    "reading ETA 15s"), line
    list(texts)
    now[0] += 62.0
    assert counter.progress_line() == ("vocab: training SentencePiece on 20 documents "
                                       "(200 characters) | 1m02s elapsed")


def test_vocab_progress_of_jsonl_files_counts_whole_lines(tmp_path):
    """For .jsonl the texts are only a field of each line: the share of the files read comes
    from the lines read, JSON syntax and other fields included, so it reaches the files' size."""
    import json

    from t5pre.cli.vocab import _Counter, _texts_from_files, _total_bytes

    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": f"document number {i}"}) + "\n"
                            for i in range(40)) + "\n")
    read, now = [0], [0.0]
    counter = _Counter(_texts_from_files([str(path)], None, read), total_bytes=_total_bytes([str(path)]),
                       read=read, clock=lambda: now[0])
    texts = iter(counter)
    for _ in range(10):
        next(texts)
    now[0] = 2.0
    share = int(re.search(r"(\d+)% of the files", counter.progress_line()).group(1))
    assert share == int(100 * read[0] / path.stat().st_size) and 20 <= share <= 30
    list(texts)
    assert read[0] == path.stat().st_size == counter.total_bytes > counter.chars


def test_vocab_train_prints_progress_while_sentencepiece_trains(tmp_path, capsys, monkeypatch):
    from t5pre.cli import vocab

    monkeypatch.setattr(vocab, "PROGRESS_EVERY", 0.05)
    code, out, err = run_cli(capsys, "vocab", "train", "--default-corpus", "--vocab-size", "400",
                             "--extra-ids", "10", "--out", tmp_path / "spm")
    assert code == 0, err
    progress = [line for line in out.splitlines() if line.startswith("vocab: ")]
    assert progress, out
    assert all(re.match(r"vocab: (read [\d,]+ documents \| .* \| \d+(m\d\d)?s elapsed|training "
                        r"SentencePiece on [\d,]+ documents \(.* characters\) \| \d+(m\d\d)?s elapsed)$",
                        line) for line in progress), progress
    assert any(line.startswith("vocab: training SentencePiece") for line in progress), progress


# ---------------------------------------------------------------------- the score table
def test_score_table_keeps_short_metric_names_apart_from_the_header():
    from t5pre.evaluation.evaluate import format_scores

    table = format_scores({"em": 12.5, "f1": 20.25}, "f1").splitlines()
    assert table[0].split() == ["metric", "score"]
    # the header's "score" ends where the numbers end
    assert len(table[0]) == len(table[1]) == table[2].index("   <- main")
    assert table[1].split() == ["em", "12.500"]
    long = format_scores({"rougeLsum": 3.0, "rougeLsum_low": 2.0, "rougeLsum_high": 4.0})
    assert long.splitlines()[0].split() == ["metric", "score"]
    assert long.splitlines()[0].index("score") + 5 == long.splitlines()[1].index("   [")


# ------------------------------------------------------------------------------ messages
def test_a_bad_steps_value_names_the_steps_flag(tmp_path, capsys):
    for command in (["pretrain"], ["finetune", "--task", "default_summarize", "--init-from",
                                   "random"]):
        code, _, err = run_cli(capsys, *command, "--model-dir", tmp_path / "run", "--steps", "-5")
        line = one_error_line(err)
        assert code == 2 and line.startswith("t5pre: error: --steps -5: ") and "--set" not in line
        assert not (tmp_path / "run").exists()


def test_an_init_model_with_another_vocabulary_is_said_so():
    """Pretraining with model.init_from a model of another vocabulary: no word of fine-tuning."""
    import keras

    from t5pre.errors import CheckpointError
    from t5pre.models.config import T5Config
    from t5pre.models.store import copy_weights
    from t5pre.models.t5 import T5Model

    keras.utils.set_random_seed(0)
    shape = dict(d_model=16, num_heads=2, d_kv=8, d_ff=32, num_encoder_layers=1,
                 num_decoder_layers=1)
    init = T5Model(T5Config(**shape, vocab_size=128))
    with pytest.raises(CheckpointError) as info:
        copy_weights(init, T5Model(T5Config(**shape, vocab_size=256)), "runs/init")
    message = str(info.value)
    assert message.startswith("runs/init: the init model has another vocabulary (128 embedding "
                              "rows, the model being trained 256)")
    assert "fine-tun" not in message
    with pytest.raises(CheckpointError, match="does not fit the model being trained"):
        copy_weights(init, T5Model(T5Config(**{**shape, "d_ff": 48}, vocab_size=128)), "runs/init")
