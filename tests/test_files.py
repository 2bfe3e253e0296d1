"""t5pre.files: the one way files and directories are written (temp name + fsync + rename)."""

import os

import pytest

from t5pre.files import (atomic_directory, atomic_file, atomic_write_bytes, atomic_write_json,
                         atomic_write_text, check_target)


class Crash(Exception):
    pass


def test_atomic_file_keeps_the_old_content_when_the_write_raises_midway(tmp_path):
    path = tmp_path / "state.txt"
    atomic_write_text(path, "old\n")
    with pytest.raises(Crash):
        with atomic_file(path, "w") as f:
            f.write("new, half")
            f.flush()
            assert os.path.exists(f.name) and f.name != str(path)  # a temp file beside it
            raise Crash()
    assert path.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["state.txt"]  # no temp file remains
    with pytest.raises(Crash):  # the same for bytes written to a new file
        with atomic_file(tmp_path / "new.bin", "wb") as f:
            f.write(b"\0" * 100)
            raise Crash()
    assert sorted(os.listdir(tmp_path)) == ["state.txt"]


def test_atomic_writes_replace_the_whole_file_with_the_usual_mode(tmp_path):
    path = tmp_path / "sub" / "x.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"b": [1, 2]}, indent=None)
    assert path.read_text() == '{"b": [1, 2]}\n'
    atomic_write_bytes(tmp_path / "y", b"\x00\x01")
    assert (tmp_path / "y").read_bytes() == b"\x00\x01"
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    assert sorted(os.listdir(tmp_path)) == ["sub", "y"]
    with pytest.raises(ValueError):
        with atomic_file(path, "a"):
            pass


def test_atomic_directory_leaves_the_old_directory_when_the_build_raises(tmp_path):
    target = tmp_path / "export"
    with atomic_directory(target) as staging:
        assert staging.parent == tmp_path and staging.name.startswith("export_temp-")
        (staging / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"

    with pytest.raises(Crash):
        with atomic_directory(target, replace=True) as staging:
            (staging / "a.txt").write_text("second, half")
            raise Crash()
    assert sorted(os.listdir(target)) == ["a.txt"] and (target / "a.txt").read_text() == "first"
    assert sorted(os.listdir(tmp_path)) == ["export"]  # no staging directory remains

    with pytest.raises(FileExistsError):  # an existing directory is replaced only when asked
        with atomic_directory(target) as staging:
            (staging / "b.txt").write_text("b")
    assert sorted(os.listdir(target)) == ["a.txt"]
    assert sorted(os.listdir(tmp_path)) == ["export"]

    with atomic_directory(target, replace=True) as staging:
        (staging / "b.txt").write_text("b")
    assert sorted(os.listdir(target)) == ["b.txt"]  # the old directory is gone entirely
    assert sorted(os.listdir(tmp_path)) == ["export"]


def test_a_failing_check_before_the_rename_keeps_the_old_directory(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old").write_text("old")

    def refuse():
        check_target(target, overwrite=False)

    with pytest.raises(Exception, match="already exists"):
        with atomic_directory(target, replace=True, before_rename=refuse) as staging:
            (staging / "new").write_text("new")
    assert sorted(os.listdir(target)) == ["old"]
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_merge_moves_the_files_in_and_keeps_the_others(tmp_path, monkeypatch):
    target = tmp_path / "run"
    (target / "checkpoints").mkdir(parents=True)
    (target / "model_config.json").write_text("old config")
    order = []
    real_replace = os.replace

    def recording_replace(src, dst):
        order.append(os.path.basename(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    with atomic_directory(target, merge=True, last=("model_config.json",)) as staging:
        for name in ("model_config.json", "a.bin", "z.bin"):
            (staging / name).write_text(name)
    monkeypatch.undo()
    assert order == ["a.bin", "z.bin", "model_config.json"]  # the marker of completeness last
    assert sorted(os.listdir(target)) == ["a.bin", "checkpoints", "model_config.json", "z.bin"]
    assert (target / "model_config.json").read_text() == "model_config.json"
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_check_target(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(Exception, match="not a directory"):
        check_target(tmp_path / "file", overwrite=True)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(Exception, match="--overwrite"):
        check_target(tmp_path / "full", overwrite=False)
    assert check_target(tmp_path / "full", overwrite=True) == tmp_path / "full"
    (tmp_path / "empty").mkdir()
    check_target(tmp_path / "empty", overwrite=False)
