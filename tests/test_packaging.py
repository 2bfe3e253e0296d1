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
