"""A file task with only some of its splits present says which ones to pass."""

import pytest

from t5pre.errors import DataError


def test_xsum_files_with_only_the_sample_names_the_split_to_pass(tmp_path, monkeypatch):
    import t5pre

    (tmp_path / "xsum").mkdir()
    (tmp_path / "xsum" / "sample.jsonl").write_text('{"document": "a b c", "summary": "a"}\n')
    monkeypatch.setenv("T5PRE_DATA_DIR", str(tmp_path))
    task = t5pre.get_task("xsum_files")
    with pytest.raises(DataError) as e:
        task.get_dataset({"inputs": 16, "targets": 8}, split="train")
    msg = str(e.value)
    assert "split 'train': missing data file" in msg
    assert "the splits present are sample: e.g. --set data.train_split=sample" in msg
    ds = task.get_dataset({"inputs": 16, "targets": 8}, split="sample", shuffle=False,
                          num_epochs=1)
    assert len(list(ds)) == 1
