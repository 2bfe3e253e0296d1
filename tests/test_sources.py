"""Data sources: reading, sharding, determinism, bad input; the embedded default corpus."""

import gzip
import json
import logging
from collections import Counter

import pytest

from t5pre.data import default_corpus
from t5pre.data.sources import (
    FunctionSource,
    JSONLSource,
    TextLineSource,
    TFDSSource,
    TFRecordSource,
    as_data_error,
    data_errors,
)
from t5pre.errors import DataError


def _texts(dataset, key="text"):
    return [ex[key].decode() if isinstance(ex[key], bytes) else ex[key] for ex in dataset.as_numpy_iterator()]


@pytest.fixture
def text_files(tmp_path):
    """Five files of 7 lines each (35 distinct lines), plus noise lines that must be skipped."""
    paths = []
    for f in range(5):
        lines = [f"file {f} line {i}" for i in range(7)]
        content = "\n".join(lines[:3]) + "\n\n   \n\t\n" + "\n".join(lines[3:]) + "\n"
        path = tmp_path / f"part-{f}.txt"
        path.write_text(content)
        paths.append(path)
    return tmp_path, paths


def test_text_lines_skip_blank_lines_and_fix_bytes(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"first\r\n\r\n  \nbad \xff\xfe bytes\n\nlast line")
    with gzip.open(tmp_path / "b.txt.gz", "wt") as f:
        f.write("zipped one\nzipped two\n")
    source = TextLineSource({"train": str(tmp_path / "*.txt*")})
    texts = _texts(source.get_dataset("train", shuffle=False))  # the two files interleaved
    assert texts == ["first", "zipped one", "bad \ufffd\ufffd bytes", "zipped two", "last line"]


def test_text_files_with_bad_bytes_warn_once_per_file_naming_the_first_line(tmp_path, caplog):
    """As JSON Lines files do: U+FFFD in the text, and one warning per file with file:line."""
    (tmp_path / "a.txt").write_bytes(b"fine\n\nbad \xff one\nworse \xfe\xfe two\n")
    (tmp_path / "b.txt").write_bytes(b"clean\nalso clean \xef\xbf\xbd (a real U+FFFD)\n")
    with gzip.open(tmp_path / "c.txt.gz", "wb") as f:
        f.write(b"zipped\n" * 3 + b"zipped \x80 bad\n")
    source = TextLineSource({"train": str(tmp_path / "*.txt*")})
    with caplog.at_level(logging.WARNING, logger="t5pre.data.sources"):
        for _ in range(2):  # a second pass over the files says nothing new
            texts = _texts(source.get_dataset("train", shuffle=False))
    assert "bad \ufffd one" in texts and "worse \ufffd\ufffd two" in texts
    assert "zipped \ufffd bad" in texts and "also clean \ufffd (a real U+FFFD)" in texts
    warnings = sorted(r.getMessage() for r in caplog.records if "not valid UTF-8" in r.getMessage())
    assert len(warnings) == 2, warnings  # b.txt holds valid UTF-8 only
    assert warnings[0].startswith(f"{tmp_path / 'a.txt'}:3: ")
    assert warnings[1].startswith(f"{tmp_path / 'c.txt.gz'}:4: ")
    assert "replaced by U+FFFD" in warnings[0]


def test_missing_patterns_name_split_and_pattern(tmp_path):
    source = TextLineSource({"train": [str(tmp_path / "*.txt")], "validation": str(tmp_path / "val-*.txt")})
    with pytest.raises(DataError, match=r"split 'validation': no file matches '.*val-\*\.txt'"):
        source.get_dataset("validation")
    with pytest.raises(DataError, match=r"no split 'test'"):
        source.get_dataset("test")


def test_empty_files_are_skipped_with_a_warning_and_an_empty_split_is_an_error(tmp_path, caplog):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "full.txt").write_text("only line\n")
    source = TextLineSource({"train": str(tmp_path / "*.txt"), "validation": str(tmp_path / "empty.txt")})
    with caplog.at_level(logging.WARNING, logger="t5pre.data.sources"):
        assert _texts(source.get_dataset("train")) == ["only line"]
    assert "empty.txt" in caplog.text
    with pytest.raises(DataError, match=r"split 'validation': every file is empty: .*empty\.txt"):
        source.get_dataset("validation")


def _all_lines(paths):
    lines = []
    for p in paths:
        lines += [line for line in p.read_text().splitlines() if line.strip()]
    return lines


@pytest.mark.parametrize("count", [2, 5, 8])  # file-level (2, 5) and example-level (8 > 5 files)
def test_shards_are_disjoint_and_cover_the_split(text_files, count):
    root, paths = text_files
    source = TextLineSource({"train": str(root / "*.txt")})
    shards = [_texts(source.get_dataset("train", shuffle=True, seed=7, shard_info=(i, count))) for i in range(count)]
    merged = Counter(line for shard in shards for line in shard)
    assert merged == Counter(_all_lines(paths))  # every line exactly once over all shards
    assert all(shards)


def test_order_is_deterministic_per_seed(text_files):
    root, _ = text_files
    source = TextLineSource({"train": str(root / "*.txt")})
    first = _texts(source.get_dataset("train", shuffle=True, seed=3))
    assert first == _texts(source.get_dataset("train", shuffle=True, seed=3))
    others = {tuple(_texts(source.get_dataset("train", shuffle=True, seed=s))) for s in range(4, 9)}
    assert len(others | {tuple(first)}) > 1  # the seed changes the file order
    unshuffled = _texts(source.get_dataset("train", shuffle=False))
    assert unshuffled[:5] == [f"file {f} line 0" for f in range(5)]  # interleaved, sorted files


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_jsonl_fields_nested_keys_lists_and_numbers(tmp_path):
    rows = [
        {"doc": {"title": "T1", "body": "text one"}, "refs": ["a", "b"], "n": 3},
        {"doc": {"title": "T2", "body": "text two"}, "refs": "single", "n": 4.5},
    ]
    _write_jsonl(tmp_path / "d.jsonl", rows)
    source = JSONLSource(
        {"train": str(tmp_path / "d.jsonl")},
        {"inputs": "doc.body", "title": ("doc", "title"), "targets": "refs", "n": "n"},
        list_fields=["targets"],
    )
    examples = list(source.get_dataset("train", shuffle=False).as_numpy_iterator())
    assert [e["inputs"] for e in examples] == [b"text one", b"text two"]
    assert [e["title"] for e in examples] == [b"T1", b"T2"]
    assert [e["targets"].tolist() for e in examples] == [[b"a", b"b"], [b"single"]]
    assert [e["n"] for e in examples] == [b"3", b"4.5"]


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"text": "ok", ', r"bad\.jsonl:3: malformed JSON"),
        ('{"other": "x"}', r"bad\.jsonl:3: missing key 'text' \(found: \['other'\]\)"),
        ('{"text": null}', r"bad\.jsonl:3: key 'text' is null, expected text"),
    ],
)
def test_jsonl_bad_lines_name_file_line_and_key(tmp_path, bad_line, message):
    _write_jsonl(tmp_path / "bad.jsonl", ['{"text": "one"}', "", bad_line, '{"text": "four"}'])
    dataset = JSONLSource({"train": str(tmp_path / "bad.jsonl")}).get_dataset("train", shuffle=False)
    with pytest.raises(DataError, match=message):
        with data_errors():
            list(dataset.as_numpy_iterator())


def test_jsonl_reads_many_files_in_parallel_and_shards(tmp_path):
    expected = []
    for f in range(6):
        rows = [{"text": f"f{f} r{i}", "id": i} for i in range(50)]
        expected += [r["text"] for r in rows]
        _write_jsonl(tmp_path / f"p{f}.jsonl", rows)
    source = JSONLSource({"train": str(tmp_path / "*.jsonl")}, ["text"])
    assert sorted(_texts(source.get_dataset("train", seed=1))) == sorted(expected)
    shards = [_texts(source.get_dataset("train", seed=1, shard_info=(i, 4))) for i in range(4)]
    assert Counter(t for s in shards for t in s) == Counter(expected)


def test_tfrecord_source_parses_examples(tmp_path):
    import tensorflow as tf

    for f in range(3):
        with tf.io.TFRecordWriter(str(tmp_path / f"r{f}.tfrecord")) as writer:
            for i in range(4):
                feature = {
                    "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"rec {f}.{i}".encode()])),
                    "ids": tf.train.Feature(int64_list=tf.train.Int64List(value=list(range(i)))),
                }
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    spec = {"text": tf.io.FixedLenFeature([], tf.string), "ids": tf.io.VarLenFeature(tf.int64)}
    source = TFRecordSource({"train": str(tmp_path / "*.tfrecord")}, spec)
    examples = list(source.get_dataset("train", shuffle=False).as_numpy_iterator())
    assert sorted(e["text"].decode() for e in examples) == sorted(f"rec {f}.{i}" for f in range(3) for i in range(4))
    assert {len(e["ids"]) for e in examples} == {0, 1, 2, 3}
    shards = [_texts(source.get_dataset("train", shard_info=(i, 2))) for i in range(2)]
    assert sorted(shards[0] + shards[1]) == sorted(e["text"].decode() for e in examples)
    assert not set(shards[0]) & set(shards[1])


def test_function_source_shards_examples_and_checks_its_result():
    import tensorflow as tf

    def numbers(split, shuffle, seed):
        return tf.data.Dataset.range(10).map(lambda i: {"text": tf.strings.as_string(i)})

    source = FunctionSource(numbers, splits=["train"])
    shards = [_texts(source.get_dataset("train", shard_info=(i, 3))) for i in range(3)]
    assert sorted(sum(shards, []), key=int) == [str(i) for i in range(10)]
    assert shards[0] == ["0", "3", "6", "9"]
    bad = FunctionSource(lambda split, shuffle, seed: [1, 2], splits=["train"], name="bad_fn")
    with pytest.raises(DataError, match=r"FunctionSource\(bad_fn\): returned list"):
        bad.get_dataset("train")
    with pytest.raises(DataError, match="shard_info"):
        source.get_dataset("train", shard_info=(3, 3))


def test_tfds_source_with_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    source = TFDSSource("imdb_reviews", splits={"train": "train", "validation": "test"}, data_dir=str(tmp_path))
    with tfds.testing.mock_data(num_examples=12):
        full = list(source.get_dataset("validation", shuffle=False).as_numpy_iterator())
        assert len(full) == 12 and isinstance(full[0]["text"], bytes) and "label" in full[0]
        # sharding goes through tfds.even_splits (the mock ignores the slicing itself)
        assert len(list(source.get_dataset("train", shard_info=(1, 3)).take(2))) == 2
    with pytest.raises(DataError, match=r"TFDS dataset 'imdb_reviews' split 'test' is not available"):
        source.get_dataset("validation")  # not prepared in data_dir, and nothing downloads


def test_tfds_source_without_tensorflow_datasets(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(DataError, match="tensorflow_datasets is not installed"):
        TFDSSource("c4/en").get_dataset("train")


def test_as_data_error_leaves_other_errors_alone():
    import tensorflow as tf

    assert as_data_error(ValueError("x")) is None
    err = tf.errors.InvalidArgumentError(None, None, "boom\nDataError: f.jsonl:2: missing key 'a'\nTraceback")
    assert str(as_data_error(err)) == "f.jsonl:2: missing key 'a'"
    with pytest.raises(KeyError):
        with data_errors():
            raise KeyError("unrelated")


# ------------------------------------------------------------------------------ default corpus
@pytest.fixture(scope="module")
def corpus_cache(tmp_path_factory):
    import os

    directory = tmp_path_factory.mktemp("t5pre_cache")
    old = os.environ.get("T5PRE_CACHE_DIR")
    os.environ["T5PRE_CACHE_DIR"] = str(directory)
    default_corpus._records_memo.clear()
    yield directory
    default_corpus._records_memo.clear()
    if old is None:
        os.environ.pop("T5PRE_CACHE_DIR")
    else:
        os.environ["T5PRE_CACHE_DIR"] = old


def test_default_corpus_records_split_and_cache(corpus_cache, monkeypatch):
    records = default_corpus.default_corpus_records(packages=("stdlib",))
    assert len(records) > 3000
    names = [r["name"] for r in records]
    assert len(set(names)) > 0.95 * len(names)
    assert "json.dumps" in names and "json" in names
    by_name = {r["name"]: r for r in records}
    dumps = by_name["json.dumps"]
    assert dumps["kind"] == "function" and dumps["signature"].startswith("dumps(obj")
    assert dumps["summary"].startswith("Serialize ``obj`` to a JSON formatted ``str``")
    assert dumps["text"].startswith(dumps["summary"].split()[0]) and dumps["body"] in dumps["text"]
    assert all("\n" not in r["summary"] and len(r["text"].split()) >= 5 for r in records)
    validation = [r for r in records if r["split"] == "validation"]
    assert 0.01 < len(validation) / len(records) < 0.04
    assert all(default_corpus.split_of(r["name"]) == r["split"] for r in records)
    cached = list(corpus_cache.glob("default_corpus-*stdlib*.jsonl"))
    assert len(cached) == 1
    # a second process would read the cache: prove it by making extraction impossible
    default_corpus._records_memo.clear()
    monkeypatch.setattr(default_corpus, "extract_records", lambda packages: pytest.fail("cache not used"))
    assert default_corpus.default_corpus_records("validation", packages=("stdlib",)) == validation
    assert default_corpus.records("validation", packages=("stdlib",))[0].name == validation[0]["name"]


def test_default_corpus_source_is_deterministic_and_shardable(corpus_cache):
    source = default_corpus.default_corpus_source(packages=("stdlib",))
    assert source.splits == ("train", "validation")
    names = _texts(source.get_dataset("validation", shuffle=True, seed=5), key="name")
    assert names == _texts(source.get_dataset("validation", shuffle=True, seed=5), key="name")
    assert names != _texts(source.get_dataset("validation", shuffle=True, seed=6), key="name")
    shards = [_texts(source.get_dataset("validation", seed=5, shard_info=(i, 2)), key="name") for i in range(2)]
    assert Counter(shards[0] + shards[1]) == Counter(names)
    with pytest.raises(DataError, match="no split 'test'"):
        source.get_dataset("test")
