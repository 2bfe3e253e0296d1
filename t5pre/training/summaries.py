"""TensorBoard summaries and the console progress line (chief only).

Logs go to ``DIR/logs/train`` and ``DIR/logs/eval``; view them with
``tensorboard --logdir DIR/logs``. TF2 writes scalars as tensor summaries: read them back with
``EventAccumulator(path).Tags()["tensors"]`` and ``tf.make_ndarray``. Writers are flushed at
every log interval, so a kill loses at most the last interval.
"""

from __future__ import annotations

import os
import sys


from t5pre.lazy import tensorflow as _tf  # noqa: E402
from t5pre.progress import Eta, fmt_duration, fmt_rate  # noqa: F401 (Eta: the trainer's ETA)
from t5pre.models.layout import LOGS_DIR  # noqa: E402


LOGGED_STEPS_FILE = "logged_steps.json"  # the newest step written per split


def log_dir(model_dir: str) -> str:
    return os.path.join(model_dir, LOGS_DIR)


class Summaries:
    """Scalar and text summaries for the ``train`` and ``eval`` splits; no-op when disabled
    (non-chief workers)."""

    def __init__(self, model_dir: str, enabled: bool = True):
        self.enabled = enabled
        self._writers = {}
        self._dir = log_dir(model_dir)
        # A resumed run replays the steps between its checkpoint and the kill; they were
        # already logged (with the same values, resume is exact), so they are written once.
        self._logged = self._read_logged() if enabled else {}
        self._newest = dict(self._logged)
        self._saved = dict(self._logged)  # what logged_steps.json holds now

    def _logged_path(self) -> str:
        return os.path.join(self._dir, LOGGED_STEPS_FILE)

    def _read_logged(self) -> dict:
        import json

        try:
            with open(self._logged_path(), encoding="utf-8") as f:
                values = json.load(f)
            return {k: int(v) for k, v in values.items()}
        except (OSError, ValueError, AttributeError, TypeError):
            return {}

    def _already_logged(self, split: str, step: int) -> bool:
        if step <= self._logged.get(split, -1):
            return True
        self._newest[split] = max(step, self._newest.get(split, -1))
        return False

    def _writer(self, split: str):
        if not self.enabled:
            return None
        if split not in self._writers:
            self._writers[split] = _tf().summary.create_file_writer(os.path.join(self._dir, split))
        return self._writers[split]

    def scalars(self, split: str, step: int, values: dict) -> None:
        writer = self._writer(split)
        if writer is None or self._already_logged(split, step):
            return
        tf = _tf()
        with writer.as_default(step=step):
            for name, value in values.items():
                if value is None:
                    continue
                tf.summary.scalar(name, float(value))

    def text(self, split: str, step: int, name: str, text: str) -> None:
        writer = self._writer(split)
        if writer is None or step <= self._logged.get(split, -1):
            return
        tf = _tf()
        with writer.as_default(step=step):
            tf.summary.text(name, text)

    def hparams(self, config: dict, run_name: str = "") -> None:
        """The run config as an HParams summary (TensorBoard's HPARAMS tab compares runs):
        dotted keys, lists and dicts as strings, nulls left out."""
        writer = self._writer("train")
        if writer is None or 0 <= self._logged.get("train", -1):
            return
        from tensorboard.plugins.hparams import api as hp

        with writer.as_default():
            hp.hparams(flat_hparams(config), trial_id=run_name or None)

    def flush(self) -> None:
        for w in self._writers.values():
            w.flush()
        if self.enabled and self._newest != self._saved:
            from t5pre.files import atomic_write_json

            atomic_write_json(self._logged_path(), self._newest, indent=None)
            self._saved = dict(self._newest)

    def close(self) -> None:
        if self._writers:
            self.flush()
        for w in self._writers.values():
            w.close()
        self._writers = {}


def flat_hparams(config: dict, prefix: str = "") -> dict:
    """``{"training.batch_size": 128, ...}``: scalars kept, lists/dicts as strings, None dropped."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and not name.endswith("overrides"):
            flat.update(flat_hparams(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        elif value is not None:
            flat[name] = str(value)
    return flat


# One style for every command's progress lines (t5pre/progress.py); old names kept.
_fmt_duration, _fmt_rate = fmt_duration, fmt_rate


def progress_line(step: int, total: int, metrics: dict, eta_seconds: float) -> str:
    """``step 100/1000 | loss 5.123 | acc 0.123 | lr 1.0e-03 | 12.3k tok/s | ETA 3m12s``
    (``eta_seconds``: :class:`t5pre.progress.Eta`, measured on this process's steps)."""
    parts = [f"step {step}/{total}", f"loss {metrics.get('loss', float('nan')):.4f}",
             f"acc {metrics.get('accuracy', float('nan')):.3f}",
             f"lr {metrics.get('learning_rate', float('nan')):.2e}",
             f"{_fmt_rate(metrics.get('tokens_per_sec', 0.0))} tok/s"]
    if metrics.get("skipped_steps"):
        parts.append(f"skipped {int(metrics['skipped_steps'])}")
    parts.append(f"ETA {_fmt_duration(eta_seconds)}")
    return " | ".join(parts)


def console(msg: str) -> None:
    print(msg, file=sys.stdout, flush=True)
