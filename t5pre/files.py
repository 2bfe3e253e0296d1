"""Writing small files so that a crash or a kill never leaves a half-written one.

Every metadata file t5pre writes (run configs, model configs, manifests, score files, logged
steps) goes through here: the text is written to ``PATH.tmp-PID`` beside the target and renamed
over it (``os.replace`` is atomic on POSIX), so a reader sees the old file or the new one."""

from __future__ import annotations

import json
import os


def atomic_write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def atomic_write_json(path: str, value, *, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(value, indent=indent) + "\n")
