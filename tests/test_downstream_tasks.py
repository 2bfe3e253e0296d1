"""Downstream tasks (summarization, QA): readers, postprocessors, and the registered tasks."""

import json

import pytest

from t5pre.data.qa_sources import read_squad_json
from t5pre.errors import DataError
from t5pre.evaluation import postprocessors

# ---------------------------------------------------------------------------------------------
# SQuAD JSON reader
# ---------------------------------------------------------------------------------------------


def _write_squad(path, data):
    path.write_text(json.dumps({"version": "1.1", "data": data}), encoding="utf-8")
    return path


def test_read_squad_json_yields_every_question_with_all_answers(tmp_path):
    path = _write_squad(
        tmp_path / "tiny.json",
        [
            {
                "title": "Cats",
                "paragraphs": [
                    {
                        "context": "Cats sleep for sixteen hours a day.",
                        "qas": [
                            {"id": "q1", "question": "How long do cats sleep?",
                             "answers": [{"text": "sixteen hours", "answer_start": 15},
                                         {"text": "sixteen hours a day", "answer_start": 15}]},
                            {"id": "q2", "question": "Who sleeps?",
                             "answers": [{"text": "Cats", "answer_start": 0}]},
                        ],
                    }
                ],
            }
        ],
    )
    examples = list(read_squad_json(path))
    assert [e["id"] for e in examples] == ["q1", "q2"]
    assert examples[0]["answers"] == ["sixteen hours", "sixteen hours a day"]
    assert examples[0]["title"] == "Cats" and examples[1]["context"].startswith("Cats sleep")


def test_read_squad_json_errors_name_file_and_field(tmp_path):
    with pytest.raises(DataError, match=r"SQuAD file not found: .*missing\.json"):
        list(read_squad_json(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.json: not valid JSON \(line 1"):
        list(read_squad_json(bad))
    no_context = _write_squad(tmp_path / "nc.json", [{"title": "T", "paragraphs": [{"qas": []}]}])
    with pytest.raises(DataError, match=r"nc\.json: data\[0\]\.paragraphs\[0\] has no 'context' field"):
        list(read_squad_json(no_context))
    no_answers = _write_squad(
        tmp_path / "na.json",
        [{"title": "T", "paragraphs": [{"context": "c", "qas": [{"id": "x", "question": "q?", "answers": []}]}]}],
    )
    with pytest.raises(DataError, match=r"na\.json: data\[0\]\.paragraphs\[0\]\.qas\[0\] \(id 'x'\) has no answers"):
        list(read_squad_json(no_answers))
    assert list(read_squad_json(no_answers, require_answers=False))[0]["answers"] == []


def test_read_squad_json_on_the_real_dev_set(shared_data):
    examples = list(read_squad_json(shared_data / "squad-v1.1" / "validation.json"))
    assert len(examples) == 850
    for example in examples:
        assert example["answers"] and all(answer in example["context"] for answer in example["answers"])


# ---------------------------------------------------------------------------------------------
# Postprocessors
# ---------------------------------------------------------------------------------------------


def test_summarization_postprocessor_splits_sentences_and_squeezes_spaces():
    text = b"  The cat sat . It  purred .\n\n Then slept  "
    assert postprocessors.summarization_postprocessor(text) == "The cat sat .\nIt purred .\nThen slept"


def test_qa_postprocessor_targets_are_all_answers():
    example = {"answers": [b"Denver Broncos", b"the Broncos "]}
    assert postprocessors.qa_postprocessor(" Denver Broncos ", example) == "Denver Broncos"
    assert postprocessors.qa_postprocessor(b"Denver Broncos", example, is_target=True) == [
        "Denver Broncos", "the Broncos"]
    assert postprocessors.qa_postprocessor("x", {}, is_target=True) == ["x"]
