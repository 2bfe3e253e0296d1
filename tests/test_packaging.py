"""The installed package layout: every sub-package is installed, the catalogue and configs live
inside t5pre, and nothing called `tasks` or `configs` lands at the top of site-packages."""

import importlib
import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "t5pre").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert on_disk <= listed, f"sub-packages missing from pyproject.toml: {sorted(on_disk - listed)}"


def test_catalogue_and_configs_are_installed_inside_t5pre():
    tasks = importlib.import_module("t5pre.tasks")
    configs = importlib.import_module("t5pre.configs")
    assert pathlib.Path(tasks.__file__).parent.name == "tasks"
    assert pathlib.Path(configs.__file__).parent.name == "configs"
    try:
        importlib.import_module("tasks")
    except ModuleNotFoundError:
        pass
    else:  # only acceptable when the repository root itself is on sys.path
        import sys
        assert str(ROOT) in sys.path or "" in sys.path


def test_cli_help_runs():
    from t5pre.cli import build_parser

    text = build_parser().format_help()
    assert "t5pre" in text


FACES = ["t5pre", "t5pre.data", "t5pre.models", "t5pre.training", "t5pre.evaluation",
         "t5pre.export", "t5pre.cli"]


def _check_each_face(body: str) -> None:
    """Runs ``body`` (indented code using ``name`` and ``face``) for every face, in a fresh
    interpreter, so that what a face imports is seen from a clean ``sys.modules``."""
    import os
    import subprocess
    import sys

    code = ("import importlib, sys\n"
            f"for name in {FACES!r}:\n"
            "    face = importlib.import_module(name)\n"
            + body + "print('ok')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_importing_a_package_face_does_not_import_tensorflow():
    """Each face declares `__all__` over the shared lazy idiom (t5pre.lazy.lazy_exports), and
    importing it (and listing it) imports neither TensorFlow nor Keras."""
    _check_each_face(
        "    assert face.__all__, name\n"
        "    missing = [n for n in face.__all__ if n not in dir(face)]\n"
        "    assert not missing, (name, missing)\n"
        "    heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "    assert not heavy, (name, heavy)\n")


def test_every_name_a_face_declares_resolves():
    """No stale entry: every name in every face's `__all__` imports (TensorFlow included), and
    an unknown name is an AttributeError naming the face."""
    _check_each_face(
        "    for attr in face.__all__:\n"
        "        getattr(face, attr)\n"
        "    try:\n"
        "        getattr(face, 'no_such_name')\n"
        "    except AttributeError as e:\n"
        "        assert repr(name) in str(e), e\n"
        "    else:\n"
        "        raise AssertionError(name)\n")


def test_ci_runs_the_readme_test_command():
    """CI (`.ci/run`) runs exactly the test command the README gives a fresh machine."""
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^python3 -m venv .venv && .*-m pytest tests.*$", readme, flags=re.M)
    assert match, "README: no test command found"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").replace("\\\n", "")
    ci_line = next(line for line in ci.splitlines() if "-m pytest" in line)
    assert match.group(0).strip() in " ".join(ci_line.split()), (match.group(0), ci_line)
