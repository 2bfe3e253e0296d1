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
    # b"" is padding from padded_batch, not a gold answer (it would match an empty prediction).
    padded = {"answers": [b"tea", b"", b""]}
    assert postprocessors.qa_postprocessor(b"tea", padded, is_target=True) == ["tea"]


# ---------------------------------------------------------------------------------------------
# Registered tasks
# ---------------------------------------------------------------------------------------------

LENGTHS = {"inputs": 64, "targets": 16}


def _examples(task_name, split, sequence_length=LENGTHS, limit=None, **kwargs):
    from t5pre.data.registry import get_task

    dataset = get_task(task_name).get_dataset(
        sequence_length=sequence_length, split=split, shuffle=False, num_epochs=1, **kwargs
    )
    if limit:
        dataset = dataset.take(limit)
    return list(dataset.as_numpy_iterator())


def _text(value):
    return value.decode("utf-8")


def _check_features(examples, eos_id=1, lengths=LENGTHS):
    assert examples
    for example in examples:
        for key in ("inputs", "targets"):
            ids = example[key]
            assert ids.dtype.name == "int32" and ids.ndim == 1
            assert 2 <= len(ids) <= lengths[key]
            assert ids[-1] == eos_id and eos_id not in ids[:-1]


@pytest.fixture(autouse=True)
def _unregister_test_tasks():
    """Tasks a test registers under a ``test_`` name are removed again afterwards."""
    yield
    from t5pre.data.registry import TaskRegistry

    for name in list(TaskRegistry._registry):
        if name.startswith("test_user_"):
            TaskRegistry.remove(name)


@pytest.fixture
def data_dir(shared_data, monkeypatch):
    monkeypatch.setenv("T5PRE_DATA_DIR", str(shared_data))
    return shared_data


def test_catalogue_registers_the_downstream_tasks_without_data(monkeypatch):
    from t5pre.data.registry import TaskRegistry
    from t5pre.evaluation.metrics import rouge, squad

    monkeypatch.delenv("T5PRE_DATA_DIR", raising=False)
    names = TaskRegistry.names()
    for name in ("cnn_dailymail", "xsum", "xsum_files", "debian_descriptions", "default_summarize"):
        assert name in names and TaskRegistry.get(name).metric_fns == (rouge,)
    for name in ("squad_v1.1", "squad_v1.1_files", "default_qa"):
        assert name in names and TaskRegistry.get(name).metric_fns == (squad,)


def test_debian_descriptions_from_the_data_dir(data_dir):
    examples = _examples("debian_descriptions", "validation")
    assert len(examples) == 1921  # every row of validation.jsonl has a document and a summary
    _check_features(examples)
    first = json.loads((data_dir / "debian-descriptions" / "validation.jsonl").open().readline())
    assert _text(examples[0]["inputs_pretokenized"]) == "summarize: " + " ".join(first["document"].split())
    assert _text(examples[0]["targets_pretokenized"]) == first["summary"].strip()


def test_debian_descriptions_targets_round_trip_through_the_vocabulary(data_dir):
    from t5pre.data.registry import get_task

    vocabulary = get_task("debian_descriptions").output_features["targets"].vocabulary
    examples = _examples("debian_descriptions", "validation", {"inputs": 512, "targets": 64}, limit=20)
    for example in examples:
        assert vocabulary.decode(example["targets"].tolist()) == _text(example["targets_pretokenized"])


def test_xsum_files_sample_split(data_dir):
    examples = _examples("xsum_files", "sample", limit=5)
    _check_features(examples)
    first = json.loads((data_dir / "xsum" / "sample.jsonl").open().readline())
    assert _text(examples[0]["targets_pretokenized"]) == first["summary"].strip()
    assert _text(examples[0]["inputs_pretokenized"]).startswith("summarize: " + first["document"].split()[0])


def test_squad_files_from_the_data_dir(data_dir):
    examples = _examples("squad_v1.1_files", "validation")
    assert len(examples) == 850
    _check_features(examples)
    gold = list(read_squad_json(data_dir / "squad-v1.1" / "validation.json"))
    by_id = {g["id"]: g for g in gold}
    for example in examples:
        source = by_id[_text(example["id"])]
        inputs = _text(example["inputs_pretokenized"])
        assert inputs == f"question: {' '.join(source['question'].split())} context: {' '.join(source['context'].split())}"
        assert [_text(a) for a in example["answers"]] == [a.strip() for a in source["answers"]]
        assert _text(example["targets_pretokenized"]) == source["answers"][0].strip()


def test_squad_files_shards_are_disjoint_and_cover(data_dir):
    ids = lambda shard: {_text(e["id"]) for e in _examples("squad_v1.1_files", "validation", shard_info=(shard, 2))}
    first, second = ids(0), ids(1)
    assert not first & second and len(first | second) == 850


def test_squad_task_postprocess_and_metric(data_dir):
    from t5pre.data.registry import get_task

    task = get_task("squad_v1.1_files")
    examples = _examples("squad_v1.1_files", "validation", limit=4)
    targets = [task.postprocess(e["targets_pretokenized"], example=e, is_target=True) for e in examples]
    assert all(isinstance(t, list) and len(t) >= 1 for t in targets)
    predictions = [task.postprocess(b" " + e["answers"][-1] + b" ") for e in examples]
    assert task.metric_fns[0](targets, predictions) == {"em": 100.0, "f1": 100.0}


def test_missing_data_dir_or_file_is_a_clear_error_at_read_time(tmp_path, monkeypatch):
    from t5pre.data.registry import get_task

    monkeypatch.delenv("T5PRE_DATA_DIR", raising=False)
    task = get_task("debian_descriptions")  # registration and lookup never touch the files
    with pytest.raises(DataError, match=r"task 'debian_descriptions' reads local files under \$T5PRE_DATA_DIR, which is not set"):
        task.get_dataset(LENGTHS, split="train")
    monkeypatch.setenv("T5PRE_DATA_DIR", str(tmp_path))
    expected = str(tmp_path / "squad-v1.1" / "validation.json")
    with pytest.raises(DataError) as error:
        get_task("squad_v1.1_files").get_dataset(LENGTHS, split="validation")
    assert expected in str(error.value) and "T5PRE_DATA_DIR" in str(error.value)
    monkeypatch.setenv("T5PRE_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"T5PRE_DATA_DIR=.*nowhere is not a directory"):
        get_task("xsum_files").get_dataset(LENGTHS, split="sample")


def test_register_jsonl_summarization_task(tmp_path):
    from t5pre.tasks.summarization import register_jsonl_summarization_task

    rows = [
        {"meta": {"body": "First   document\nwith two lines."}, "tldr": "First summary."},
        {"meta": {"body": "A document without summary."}, "tldr": "  "},
        {"meta": {"body": "Third document."}, "tldr": "Third summary."},
    ]
    (tmp_path / "part-0.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    task = register_jsonl_summarization_task(
        "test_user_summaries", {"train": str(tmp_path / "part-*.jsonl")},
        document_key="meta.body", summary_key="tldr", prefix="tl;dr: ", replace=True,
    )
    examples = list(task.get_dataset(LENGTHS, split="train", shuffle=False, num_epochs=1).as_numpy_iterator())
    assert [_text(e["inputs_pretokenized"]) for e in examples] == [
        "tl;dr: First document with two lines.", "tl;dr: Third document."]
    assert [_text(e["targets_pretokenized"]) for e in examples] == ["First summary.", "Third summary."]
    _check_features(examples)
    assert task.postprocess(b" One . Two ") == "One .\nTwo"


def test_register_squad_json_task(tmp_path):
    from t5pre.tasks.qa import register_squad_json_task

    _write_squad(tmp_path / "qa.json", [{"title": "T", "paragraphs": [{"context": "Bob  likes\ntea.", "qas": [
        {"id": "a", "question": "What does Bob like?", "answers": [{"text": "tea", "answer_start": 11},
                                                                   {"text": "tea.", "answer_start": 11}]}]}]}])
    task = register_squad_json_task("test_user_squad", {"validation": str(tmp_path / "qa.json")}, replace=True)
    (example,) = task.get_dataset(LENGTHS, split="validation", shuffle=False, num_epochs=1).as_numpy_iterator()
    assert _text(example["inputs_pretokenized"]) == "question: What does Bob like? context: Bob likes tea."
    assert _text(example["targets_pretokenized"]) == "tea"
    assert example["answers"].tolist() == [b"tea", b"tea."]
    with pytest.raises(DataError, match=r"no file matches .*other\.json"):
        register_squad_json_task("test_user_squad", {"train": str(tmp_path / "other.json")}, replace=True
                                 ).get_dataset(LENGTHS, split="train")


# ---------------------------------------------------------------------------------------------
# TFDS tasks, on TFDS's mock data (offline)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, split, prefix",
    [("cnn_dailymail", "validation", "summarize: "), ("xsum", "test", "summarize: "),
     ("squad_v1.1", "validation", "question: ")],
)
def test_tfds_tasks_on_mock_data(name, split, prefix):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=3):
        examples = _examples(name, split)
    assert len(examples) == 3
    _check_features(examples)
    for example in examples:
        assert _text(example["inputs_pretokenized"]).startswith(prefix)
        if name.startswith("squad"):
            assert " context: " in _text(example["inputs_pretokenized"])
            assert example["answers"].tolist()[0] == example["targets_pretokenized"]


# ---------------------------------------------------------------------------------------------
# Embedded demo tasks
# ---------------------------------------------------------------------------------------------


def test_default_summarize_examples_are_docstring_bodies_and_first_lines():
    from t5pre.data.default_corpus import default_corpus_records
    from t5pre.tasks.summarization import docstring_summary_examples

    examples = _examples("default_summarize", "validation", {"inputs": 128, "targets": 32})
    assert len(examples) >= 20
    _check_features(examples, lengths={"inputs": 128, "targets": 32})
    summaries = {r["summary"] for r in default_corpus_records("validation")}
    train_names = {e["name"] for e in docstring_summary_examples("train")}
    for example in examples:
        assert _text(example["inputs_pretokenized"]).startswith("summarize: ")
        assert len(_text(example["inputs_pretokenized"]).split()) >= 1 + 12
        assert _text(example["targets_pretokenized"]) in summaries
    assert not train_names & {e["name"] for e in docstring_summary_examples("validation")}


@pytest.mark.parametrize(
    "summary, body, expected",
    [
        ("Return the sum of two numbers.", "The numbers may be ints or floats; the result has the wider of their types.", True),
        ("Return the sum of two numbers.", "Both ints.", False),  # body too short
        ("Sum.", "The numbers may be ints or floats; the result has the wider of their types.", False),
        ("add(a, b) -> number", "The numbers may be ints or floats; the result has the wider of their types.", False),
    ],
)
def test_is_summarizable(summary, body, expected):
    from t5pre.tasks.summarization import is_summarizable

    assert is_summarizable(summary, body) is expected


def test_docstring_qa_builds_extractive_questions():
    from t5pre.tasks.qa import docstring_qa

    record = {
        "name": "pkg.mod.Reader.read", "kind": "function", "summary": "Read some bytes.",
        "text": "Read some bytes.\n\nLong story.\n\nArgs:\n    size: The number of bytes to read\n"
                "        at most. Negative means all.\n    timeout (float): Seconds.\n\n"
                "Returns:\n    The bytes read. Empty at EOF.\n",
    }
    context, qas = docstring_qa(record)
    assert context == ("Read some bytes. Args: size: The number of bytes to read at most. Negative means all. "
                       "timeout (float): Seconds. Returns: The bytes read. Empty at EOF.")
    # "Seconds." is a one-word answer: skipped.
    assert qas == [("What is the size argument of Reader.read?", "The number of bytes to read at most"),
                   ("What does Reader.read return?", "The bytes read")]


def test_default_qa_answers_are_spans_of_their_context():
    from t5pre.tasks.qa import docstring_qa_examples

    examples = _examples("default_qa", "validation", {"inputs": 512, "targets": 64})
    assert len(examples) >= 20
    _check_features(examples, lengths={"inputs": 512, "targets": 64})
    for example in examples:
        inputs = _text(example["inputs_pretokenized"])
        question, context = inputs[len("question: "):].split(" context: ", 1)
        assert inputs.startswith("question: ") and question.endswith("?")
        assert _text(example["targets_pretokenized"]) in context
    train = docstring_qa_examples("train")
    assert len(train) > 1000 and all(e["answers"][0] in e["context"] for e in train)
    assert not {e["title"] for e in train} & {e["title"] for e in docstring_qa_examples("validation")}
