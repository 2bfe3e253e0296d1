"""CLI: ``t5pre vocab train/info/encode`` and ``t5pre tasks list/show``."""

import json

import pytest

from t5pre.cli import main
from t5pre.data import preprocessors as prep
from t5pre.data.registry import Feature, MixtureRegistry, TaskRegistry
from t5pre.data.sources import JSONLSource
from t5pre.data.vocabulary import SentencePieceVocabulary


@pytest.fixture(scope="module")
def austen_file(shared_data, tmp_path_factory):
    """First 3000 non-blank lines of a real novel, as a text file."""
    path = sorted((shared_data / "pretrain" / "jane_austen").glob("*.txt"))[0]
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()][:3000]
    out = tmp_path_factory.mktemp("austen") / "austen.txt"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def test_vocab_train_from_files_counts_extra_ids_in_vocab_size(austen_file, tmp_path, capsys):
    prefix = tmp_path / "out" / "spm"
    rc = main(["vocab", "train", "--files", str(austen_file), "--vocab-size", "700", "--extra-ids", "10", "--out", str(prefix)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "vocab_size 700 = 690 pieces + 10 extra ids (<extra_id_0> = 699)" in out
    vocab = SentencePieceVocabulary(str(prefix) + ".model", extra_ids=10)
    assert vocab.vocab_size == 700 and vocab.id_to_piece(699) == "<extra_id_0>"

    assert main(["vocab", "encode", str(prefix) + ".model", "--extra-ids", "10", "Emma <extra_id_2>"]) == 0
    out = capsys.readouterr().out
    assert "697" in out.splitlines()[0] and "decode: Emma <extra_id_2>" in out


def test_vocab_train_from_a_registered_task(vocab_26, tmp_path, capsys):
    rows = [{"body": f"Line {i} of a tiny corpus about the {w} in the garden."} for i, w in enumerate(["cat", "dog", "sheep"] * 60)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    TaskRegistry.add(
        "cli_vocab_task",
        JSONLSource({"train": str(data)}, ["body"]),
        [prep.rekey({"targets": "body"}), prep.tokenize],
        {"targets": Feature(vocab_26)},
        replace=True,
    )
    try:
        rc = main(["vocab", "train", "--task", "cli_vocab_task", "--vocab-size", "300", "--extra-ids", "5", "--out", str(tmp_path / "v")])
        assert rc == 0
        assert "180 documents" in capsys.readouterr().out
        assert SentencePieceVocabulary(str(tmp_path / "v.model"), extra_ids=5).vocab_size == 300
    finally:
        TaskRegistry.remove("cli_vocab_task")


def test_vocab_errors_are_one_line(tmp_path, capsys):
    rc = main(["vocab", "train", "--files", str(tmp_path / "none*.txt"), "--vocab-size", "500", "--out", str(tmp_path / "v")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("t5pre: error: --files: no file matches") and "Traceback" not in err
    rc = main(["vocab", "train", "--files", "x", "--vocab-size", "100", "--extra-ids", "100", "--out", str(tmp_path / "v")])
    assert rc == 2 and "must exceed --extra-ids" in capsys.readouterr().err
    assert main(["vocab", "info", str(tmp_path / "missing.model")]) == 2
    assert "missing.model: SentencePiece model file not found" in capsys.readouterr().err


@pytest.fixture(scope="module")
def vocab_26(shared_data):
    return SentencePieceVocabulary(str(shared_data / "spm" / "seqio_test_sentencepiece.model"), extra_ids=10)


@pytest.fixture
def shown_task(vocab_26, tmp_path):
    """A task whose last step replaces the 2nd and 3rd input tokens by sentinels 0 and 1."""
    import tensorflow as tf

    data = tmp_path / "show.jsonl"
    data.write_text("".join(json.dumps({"text": f"this is test {i} at the wheel", "label": "what"}) + "\n" for i in range(4)))

    def add_sentinels(dataset, ctx):
        s0, s1 = vocab_26.sentinel(0), vocab_26.sentinel(1)

        def fn(ex):
            ids = ex["inputs"]
            ex = dict(ex)
            ex["inputs"] = tf.concat([ids[:1], [s0, s1], ids[3:]], axis=0)
            return ex

        return dataset.map(fn)

    TaskRegistry.add(
        "cli_show_task",
        JSONLSource({"train": str(data), "validation": str(data)}, ["text", "label"]),
        [prep.rekey({"inputs": "text", "targets": "label"}), prep.tokenize, add_sentinels, prep.append_eos_after_trim],
        {"inputs": Feature(vocab_26), "targets": Feature(vocab_26)},
        description="test task for the CLI",
        replace=True,
    )
    MixtureRegistry.add("cli_show_mixture", [("cli_show_task", 2.0)], replace=True)
    yield "cli_show_task"
    TaskRegistry.remove("cli_show_task")
    MixtureRegistry.remove("cli_show_mixture")


def test_tasks_list_shows_source_splits_features_and_mixtures(shown_task, capsys):
    assert main(["tasks", "list", "-v"]) == 0
    out = capsys.readouterr().out
    block = out[out.index("  cli_show_task\n") :]
    assert "source:   JSONLSource(train=" in block and "splits:   train, validation" in block
    assert "features: inputs (vocab 36) targets (vocab 36)" in block and "about:    test task for the CLI" in block
    assert "steps:    rekey(" in block and "add_sentinels -> append_eos_after_trim" in block
    assert "cli_show_mixture: cli_show_task 1.000" in out


def test_tasks_show_decodes_examples_with_sentinels_visible(shown_task, capsys):
    rc = main(["tasks", "show", shown_task, "-n", "2", "--inputs-length", "12", "--targets-length", "5", "--no-shuffle", "--ids"])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.count("--- example") == 2
    assert "inputs (12 tokens / 12, 2 sentinels, ends with EOS):" in out
    assert "<extra_id_0> <extra_id_1>" in out  # sentinels decode as seqio's "▁<extra_id_i>"
    assert "targets (" in out and "inputs_pretokenized (" in out and "this is test 0 at the wheel" in out
    # the mixture shows the same way
    assert main(["tasks", "show", "cli_show_mixture", "-n", "1", "--inputs-length", "12"]) == 0
    assert "--- example 1" in capsys.readouterr().out


def test_tasks_show_unknown_name_and_bad_data(shown_task, tmp_path, vocab_26, capsys):
    assert main(["tasks", "show", "cli_show_tsk"]) == 2
    assert "unknown task or mixture 'cli_show_tsk'; did you mean cli_show_task" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "x"}\n{"text": "no label"}\n')
    TaskRegistry.add(
        "cli_bad_task",
        JSONLSource({"train": str(bad)}, ["text", "label"]),
        [prep.rekey({"inputs": "text", "targets": "label"}), prep.tokenize],
        {"inputs": Feature(vocab_26), "targets": Feature(vocab_26)},
        replace=True,
    )
    try:
        assert main(["tasks", "show", "cli_bad_task", "-n", "5", "--no-shuffle"]) == 2
        err = capsys.readouterr().err
        assert err.strip() == f"t5pre: error: {bad}:2: missing key 'label' (found: ['text'])"
    finally:
        TaskRegistry.remove("cli_bad_task")
