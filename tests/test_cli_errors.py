"""Bad input through the real CLI (`t5pre.cli.main`): every case must exit with code 2 and one
line `t5pre: error: ...` naming the file / line / field / task at fault, never a traceback.

The cases fail before any training step (config, task and data checks, model directories,
checkpoints, conversion, export targets), so the whole file runs in seconds after the TensorFlow
import.
"""

import json
import logging
import os
import struct

import numpy as np
import pytest

from t5pre.cli import main

SPAN = ["--inputs-length", "32", "--targets-length", "8"]


def run_cli(capsys, *argv):
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, *expected):
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("t5pre: error: ")]
    assert len(lines) == 1, err
    for part in expected:
        assert part in lines[0], (part, lines[0])
    return lines[0]


# ---------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("case", ["unknown_key", "bad_type", "not_key_value"])
def test_bad_set_flags_name_the_flag(case, tmp_path, capsys):
    flag, expected = {
        "unknown_key": ("training.batch_sise=4", ["--set training.batch_sise=4", "unknown key",
                                                  "did you mean 'batch_size'"]),
        "bad_type": ("training.batch_size=abc", ["--set training.batch_size=abc",
                                                 "training.batch_size must be an integer", "'abc'"]),
        "not_key_value": ("training.batch_size", ["training.batch_size", "KEY=VALUE"]),
    }[case]
    code, _, err = run_cli(capsys, "pretrain", "--model-dir", tmp_path / "run", "--set", flag)
    assert_one_line_error(code, err, *expected)
    assert not (tmp_path / "run").exists()  # refused before anything is written


@pytest.mark.parametrize("case", ["yaml_syntax", "unknown_key_in_file", "missing_file"])
def test_bad_config_files_name_file_and_line(case, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    if case == "yaml_syntax":
        config.write_text("model:\n  name: tiny\ndata:\n  task: [unclosed\n")
        expected = [f"{config}:", "invalid YAML"]
    elif case == "unknown_key_in_file":
        config.write_text("model:\n  name: tiny\ntraining:\n  batch_sise: 4\n")
        expected = [f"{config}:4:", "unknown key 'training.batch_sise'"]
    else:
        expected = ["config file not found", str(config)]
    code, _, err = run_cli(capsys, "pretrain", "--config", config, "--model-dir", tmp_path / "run")
    assert_one_line_error(code, err, *expected)


# -------------------------------------------------------------------------- tasks and data
@pytest.fixture
def user_tasks(tmp_path):
    """Registers summarization and pretraining tasks over bad files; removes them afterwards."""
    from t5pre.data.registry import TaskRegistry
    from t5pre.tasks.pretraining import register_text_pretraining_task
    from t5pre.tasks.summarization import register_jsonl_summarization_task

    good = '{"document": "one two three four five six", "summary": "one two"}\n'
    files = {
        "malformed": good + '{"document": "cut off\n',
        "missing_key": good + '{"document": "a document without its summary"}\n',
        "empty": "",
        "blank": "\n   \n\t\n",
    }
    names = []
    for kind, text in files.items():
        path = tmp_path / f"{kind}.jsonl"
        path.write_text(text)
        name = f"test_cli_errors_sum_{kind}"
        register_jsonl_summarization_task(name, {"train": str(path)}, replace=True)
        names.append(name)
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    register_text_pretraining_task("test_cli_errors_pt_blank", {"train": str(tmp_path / "blank.txt")})
    names.append("test_cli_errors_pt_blank")
    (tmp_path / "latin1.jsonl").write_bytes(
        b'{"document": "caf\xe9 au lait and more words here", "summary": "caf\xe9 cr\xe8me"}\n')
    register_jsonl_summarization_task("test_cli_errors_sum_latin1", {"train": str(tmp_path / "latin1.jsonl")},
                                      replace=True)
    names.append("test_cli_errors_sum_latin1")
    yield tmp_path
    for name in names:
        TaskRegistry.remove(name)


@pytest.mark.parametrize("case", ["malformed", "missing_key", "empty", "blank"])
def test_bad_jsonl_files_name_file_and_line(case, user_tasks, capsys):
    path = user_tasks / f"{case}.jsonl"
    expected = {
        "malformed": [f"{path}:2:", "malformed JSON"],
        "missing_key": [f"{path}:2:", "missing key 'summary'"],
        "empty": ["split 'train'", "every file is empty", str(path)],
        "blank": ["split 'train'", "every line is blank", str(path)],
    }[case]
    code, _, err = run_cli(capsys, "tasks", "show", f"test_cli_errors_sum_{case}", "-n", "2")
    assert_one_line_error(code, err, *expected)


def test_text_file_of_blank_lines_is_an_error_for_pretraining(user_tasks, capsys):
    code, _, err = run_cli(capsys, "tasks", "show", "test_cli_errors_pt_blank", "-n", "1", *SPAN)
    assert_one_line_error(code, err, "every line is blank", str(user_tasks / "blank.txt"))


def test_bytes_that_are_not_utf8_are_replaced_with_a_warning_naming_the_line(user_tasks, capsys, caplog):
    with caplog.at_level(logging.WARNING, logger="t5pre.data.sources"):
        code, out, err = run_cli(capsys, "tasks", "show", "test_cli_errors_sum_latin1", "-n", "1")
    assert code == 0, err
    assert "caf\ufffd au lait" in out  # the raw text shows the replacement character
    warnings = [r.getMessage() for r in caplog.records if "not valid UTF-8" in r.getMessage()]
    assert len(warnings) == 1 and f"{user_tasks / 'latin1.jsonl'}:1:" in warnings[0], warnings


def test_unknown_task_lists_the_known_ones(capsys):
    code, _, err = run_cli(capsys, "tasks", "show", "no_such_task")
    assert_one_line_error(code, err, "unknown task or mixture 'no_such_task'", "default_span_corruption")


def test_sequence_too_short_for_one_sentinel(capsys):
    code, _, err = run_cli(capsys, "tasks", "show", "default_span_corruption",
                           "--inputs-length", "2", "--targets-length", "2")
    assert_one_line_error(code, err, "inputs length 2 is too short for span corruption")


def test_unknown_module_is_named(capsys):
    code, _, err = run_cli(capsys, "tasks", "list", "--module", "no_such_module_xyz")
    assert_one_line_error(code, err, "--module no_such_module_xyz")


def test_module_in_the_working_directory_is_found(tmp_path, capsys, monkeypatch):
    """`--module mytasks` finds ./mytasks.py although the console script's path is its bin/."""
    from t5pre.data.registry import TaskRegistry

    (tmp_path / "t5pre_cli_errors_user_module.py").write_text(
        "from t5pre.tasks.pretraining import register_text_pretraining_task\n"
        f"register_text_pretraining_task('test_cli_errors_from_module', {str(tmp_path / 'x.txt')!r})\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))])
    try:
        code, out, err = run_cli(capsys, "tasks", "list", "--module", "t5pre_cli_errors_user_module")
        assert code == 0, err
        assert "test_cli_errors_from_module" in out
    finally:
        TaskRegistry.remove("test_cli_errors_from_module")


# ------------------------------------------------------------------------------ vocabularies
def test_vocab_train_names_the_bad_line_not_a_sentencepiece_trace(tmp_path, capsys):
    bad = tmp_path / "corpus.jsonl"
    bad.write_text('{"text": "a fine first line"}\n{"text": broken}\n')
    code, _, err = run_cli(capsys, "vocab", "train", "--files", bad, "--vocab-size", "400",
                           "--out", tmp_path / "v")
    line = assert_one_line_error(code, err, f"{bad}:2:", "malformed JSON")
    assert "SentencePiece" not in line and "At:" not in err
    assert not (tmp_path / "v.model").exists()


def test_vocab_train_too_large_for_the_text_speaks_in_total_ids(tmp_path, capsys):
    text = tmp_path / "small.txt"
    text.write_text("the cat sat on the mat\n" * 50)
    code, _, err = run_cli(capsys, "vocab", "train", "--files", text, "--vocab-size", "600",
                           "--out", tmp_path / "v")
    line = assert_one_line_error(code, err, "vocab_size 600 is too large for this text")
    # the suggested bound counts the 100 extra ids, like --vocab-size does
    most = int(line.split("vocab_size <= ")[1].split()[0])
    assert 100 < most < 600


# --------------------------------------------------------------------- model directories
@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    from test_export import make_tiny_model

    from t5pre.data.vocabulary import default_vocabulary
    from t5pre.models.io import save_pretrained

    return save_pretrained(make_tiny_model(), default_vocabulary(),
                           tmp_path_factory.mktemp("cli_errors") / "model")


@pytest.mark.parametrize("command", ["evaluate", "predict", "export", "finetune"])
def test_directory_without_a_model(command, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = {
        "evaluate": ["evaluate", "--model-dir", empty],
        "predict": ["predict", "--model-dir", empty, "hello"],
        "export": ["export", "--model-dir", empty, "--out", tmp_path / "export"],
        "finetune": ["finetune", "--model-dir", tmp_path / "ft", "--init-from", empty],
    }[command]
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, str(empty), "not a")
    assert not (tmp_path / "export").exists()


def test_missing_init_from(tmp_path, capsys):
    code, _, err = run_cli(capsys, "finetune", "--model-dir", tmp_path / "ft",
                           "--init-from", tmp_path / "nowhere")
    assert_one_line_error(code, err, "--init-from", str(tmp_path / "nowhere"), "not found")


def _copy_model_dir(source, target):
    import shutil

    shutil.copytree(source, target)
    return target


def test_vocabulary_that_does_not_match_the_model_dir(pretrained, shared_data, tmp_path, capsys):
    model_dir = _copy_model_dir(pretrained, tmp_path / "model")
    (model_dir / "spiece.model").write_bytes(
        (shared_data / "spm" / "seqio_test_sentencepiece.model").read_bytes())
    for argv in (["predict", "--model-dir", model_dir, "hello"], ["vocab", "info", model_dir]):
        code, _, err = run_cli(capsys, *argv)
        assert_one_line_error(code, err, "vocab.json", "vocab_size=4100", "spiece.model")


def test_truncated_weights_file(pretrained, tmp_path, capsys):
    model_dir = _copy_model_dir(pretrained, tmp_path / "model")
    weights = model_dir / "model.weights.h5"
    os.truncate(weights, weights.stat().st_size // 2)
    code, _, err = run_cli(capsys, "predict", "--model-dir", model_dir, "hello")
    assert_one_line_error(code, err, str(weights), "cannot load the weights")


def test_truncated_checkpoint_is_named_not_traced(tmp_path, capsys, monkeypatch):
    """TensorFlow's reader raises a bare IndexError for a cut .data file; the CLI names the
    checkpoint (seen through a command whose restore hits such a file)."""
    import tensorflow as tf

    prefix = tf.train.Checkpoint(v=tf.Variable(tf.ones([4096]))).write(str(tmp_path / "ckpt-3"))
    data = f"{prefix}.data-00000-of-00001"
    os.truncate(data, os.path.getsize(data) // 2)

    def restore(args):
        tf.train.Checkpoint(v=tf.Variable(tf.zeros([4096]))).restore(prefix)

    monkeypatch.setattr("t5pre.cli.predict.run", restore)
    code, _, err = run_cli(capsys, "predict", "--model-dir", tmp_path, "x")
    assert_one_line_error(code, err, f"{prefix}:", "truncated or corrupt")


def test_export_refuses_an_existing_directory(pretrained, tmp_path, capsys):
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_cli(capsys, "export", "--model-dir", pretrained, "--out", out)
    assert_one_line_error(code, err, str(out), "already exists", "--overwrite")
    assert (out / "keep.txt").read_text() == "mine"


# ------------------------------------------------------------------------ convert hf
def _write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, array in tensors.items():
        blob = np.ascontiguousarray(array, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))


@pytest.mark.parametrize("case", ["no_config", "truncated_weights", "missing_dir"])
def test_convert_hf_bad_directories(case, tmp_path, capsys):
    hf = tmp_path / "hf"
    if case != "missing_dir":
        hf.mkdir()
    if case == "truncated_weights":
        (hf / "config.json").write_text(json.dumps({
            "model_type": "t5", "vocab_size": 256, "d_model": 16, "d_kv": 4, "d_ff": 32,
            "num_layers": 1, "num_heads": 4, "feed_forward_proj": "gated-gelu",
            "tie_word_embeddings": False}))
        weights = hf / "model.safetensors"
        _write_safetensors(weights, {"shared.weight": np.ones([256, 16])})
        os.truncate(weights, weights.stat().st_size - 1000)
        expected = [str(weights), "truncated", "shared.weight"]
    elif case == "no_config":
        (hf / "README.md").write_text("not a checkpoint")
        expected = [str(hf), "config.json is missing"]
    else:
        expected = ["not found", str(hf)]
    code, _, err = run_cli(capsys, "convert", "hf", hf, tmp_path / "out")
    assert_one_line_error(code, err, *expected)
    assert not (tmp_path / "out").exists()
