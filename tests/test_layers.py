"""The layer contract: data -> models -> training -> evaluation / export -> finetune -> cli, and
the task catalogue beside data (`[tool.importlinter]` in pyproject.toml, checked by import-linter,
which reads every import statement, those inside functions included)."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_imports_follow_the_layers():
    pytest.importorskip("importlinter", reason="import-linter is in the `test` extra")
    # lint-imports reads pyproject.toml of the working directory and finds `tasks` there
    proc = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                           "lint_imports_command()", "--no-cache"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout and " kept" in proc.stdout


def test_looking_up_a_task_imports_nothing_above_data():
    """The registry imports the catalogue by name when a task is looked up (invisible to a
    static check): that must not pull in the model, training or evaluation layers."""
    code = ("import sys, t5pre\n"
            "t5pre.get_task('default_span_corruption'); t5pre.get_task('squad_v1.1_files')\n"
            "above = sorted(m for m in sys.modules if m.split('.')[:2] in ("
            "['t5pre', 'models'], ['t5pre', 'training'], ['t5pre', 'evaluation'], "
            "['t5pre', 'export'], ['t5pre', 'cli'], ['t5pre', 'finetune']))\n"
            "print(above)\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
