"""Every code block of README.md and docs/*.md is tested, so no snippet can rot.

Fenced blocks carry a language and optional markers in their info string (```` ```bash static ````;
GitHub highlights by the first word and ignores the rest):

- ``bash``: run, in page order, in one temporary directory per page (the page's *reader's
  directory*), with ``t5pre`` on ``PATH``. The directory starts with what the docs call your own
  files: ``corpus/*.txt`` (paragraphs separated by blank lines) and ``train.jsonl`` /
  ``val.jsonl`` (``{"document", "summary"}`` per line), made from Python docstrings.
- ``python``: run the same way, as a fresh ``python -c`` in that directory.
- ``static`` (bash or python): cannot run here (installs, GPUs, Slurm, several hosts, shared data,
  docker); checked as far as possible instead: ``bash -n``, and every ``t5pre`` command line in it
  parses with the real ``t5pre`` argument parser; every ``python benchmarks/x.py`` names a script
  that exists. Those checks run on *every* bash block, run or static.
- ``yaml``: parsed; a run config (top-level keys are config sections) is validated by the schema.
- ``text``: output samples and layouts; not run.

The static checks are fast; running the pages is ``@pytest.mark.slow`` (each page starts several
``t5pre`` processes with tiny settings). ``test_readme_tour_embedded`` runs the README's tour
again on the embedded corpus and the packaged task (the own-data flags taken out).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import textwrap

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGES = ["README.md"] + sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md"))
LANGUAGES = {"bash", "python", "yaml", "text"}
MARKERS = {"static"}
# The own-data flags of the tour and their values: taken out for the embedded-corpus run.
OWN_DATA_FLAGS = {"--files", "--format", "--text-field", "--train-files", "--validation-files",
                  "--input-field", "--target-field", "--prefix"}
COMMAND_TIMEOUT = 1800
TOUR = "A five-minute tour"  # the README section test_readme_tour_embedded runs


class Block:
    def __init__(self, page, line, language, markers, text, section=""):
        self.page, self.line, self.language, self.markers, self.text = (
            page, line, language, markers, text)
        self.section = section  # the heading the block stands under

    @property
    def runs(self) -> bool:
        return self.language in ("bash", "python") and "static" not in self.markers

    def __repr__(self):
        return f"{self.page}:{self.line}"


def read_blocks(page: str) -> list[Block]:
    blocks, current, section = [], None, ""
    for number, line in enumerate((REPO / page).read_text(encoding="utf-8").splitlines(), 1):
        if current is None:
            match = re.match(r"^```(.*)$", line)
            if match:
                words = match.group(1).split()
                current = Block(page, number, words[0] if words else "", set(words[1:]), [],
                                section)
            elif line.startswith("#"):
                section = line.lstrip("#").strip()
        elif line.startswith("```"):
            current.text = "\n".join(current.text) + "\n"
            blocks.append(current)
            current = None
        else:
            current.text.append(line)
    assert current is None, f"{page}:{current.line}: unclosed code block"
    return blocks


ALL_BLOCKS = [b for page in PAGES for b in read_blocks(page)]


def _ids(blocks):
    return [repr(b) for b in blocks]


# --------------------------------------------------------------------------------------------
# Static checks (fast)


def test_pages_exist_and_readme_is_short():
    expected = {"data-and-tasks.md", "pretraining.md", "jax-and-multi-host.md",
                "finetuning-and-evaluation.md", "export-and-serving.md", "troubleshooting.md",
                "benchmarks.md", "decisions.md", "reference.md", "architecture.md"}
    assert expected <= {pathlib.Path(p).name for p in PAGES}
    assert (REPO / "README.md").stat().st_size <= 10_500


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=_ids(ALL_BLOCKS))
def test_block_is_labelled(block):
    assert block.language in LANGUAGES, (
        f"{block!r}: a code block needs a language ({', '.join(sorted(LANGUAGES))})")
    assert block.markers <= MARKERS, f"{block!r}: unknown marker(s) {block.markers - MARKERS}"


def logical_lines(script: str) -> list[str]:
    """The script's command lines: continuations joined, quoted newlines kept inside one line,
    heredoc bodies and comments dropped."""
    lines = script.replace("\\\n", " ").split("\n")
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        i += 1
        while True:
            try:
                shlex.split(line, comments=True)
                break
            except ValueError:  # a quote spans lines
                if i >= len(lines):
                    raise
                line += "\n" + lines[i]
                i += 1
        heredoc = re.search(r"<<-?\s*'?\"?(\w+)'?\"?", line)
        if heredoc:
            while i < len(lines) and lines[i].strip() != heredoc.group(1):
                i += 1
            i += 1
        out.append(line)
    return out


def simple_commands(script: str) -> list[list[str]]:
    """Each simple command of the script as argv, redirections and env assignments removed."""
    commands = []
    for line in logical_lines(script):
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current, tokens = [], list(lexer)
        k = 0
        while k < len(tokens):
            token = tokens[k]
            if token in ("&&", "||", ";", "|", "&", "(", ")"):
                commands.append(current)
                current = []
            elif token in (">", ">>", "<", "<<", "<<-", "2>", ">&") or re.fullmatch(r"\d?>+", token):
                k += 1  # skip the redirection's target
            elif not current and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", token):
                pass  # VAR=value before a command
            else:
                current.append(token)
            k += 1
        commands.append(current)
    return [c for c in commands if c]


def t5pre_argv(command: list[str]):
    """The t5pre arguments of a command line (``t5pre ...``, ``.venv/bin/t5pre ...``,
    ``srun t5pre ...``), or None."""
    if command and command[0] in ("srun", "exec", "time", "nice"):
        command = command[1:]
    if command and os.path.basename(command[0]) == "t5pre":
        return command[1:]
    return None


class _ParserExit(Exception):
    pass


def parse_t5pre(argv: list[str]):
    from t5pre.cli import build_parser

    parser = build_parser()

    def fail(message):
        raise _ParserExit(message)

    def patch(p):
        p.error = fail
        p.exit = lambda status=0, message=None: fail(message or f"exit {status}")
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    patch(child)

    patch(parser)
    return parser.parse_args(argv)


BASH_BLOCKS = [b for b in ALL_BLOCKS if b.language == "bash"]


@pytest.mark.parametrize("block", BASH_BLOCKS, ids=_ids(BASH_BLOCKS))
def test_bash_block_syntax_and_commands(block):
    result = subprocess.run(["bash", "-n"], input=block.text, text=True, capture_output=True)
    assert result.returncode == 0, f"{block!r}: bash -n: {result.stderr}"
    commands = simple_commands(block.text)
    assert commands, f"{block!r}: no command found"
    for command in commands:
        argv = t5pre_argv(command)
        if argv is not None:
            try:
                parse_t5pre(argv)
            except _ParserExit as e:
                pytest.fail(f"{block!r}: t5pre {shlex.join(argv)}: {e}")
        scripts = [a for a in command if a.startswith("benchmarks/") and a.endswith(".py")]
        for script in scripts:
            assert (REPO / script).is_file(), f"{block!r}: {script} does not exist"


def test_command_line_checks_catch_a_bad_flag():
    """The checks above fail on a flag t5pre does not have, and see through wrappers."""
    commands = simple_commands("KERAS_BACKEND=jax srun t5pre pretrain --model-dir x \\\n"
                               "    --stepz 3 > log.txt && echo done  # comment\n")
    assert commands == [["srun", "t5pre", "pretrain", "--model-dir", "x", "--stepz", "3"],
                        ["echo", "done"]]
    with pytest.raises(_ParserExit, match="stepz"):
        parse_t5pre(t5pre_argv(commands[0]))
    assert parse_t5pre(["pretrain", "--model-dir", "x", "--steps", "3"]).steps == 3


PYTHON_BLOCKS = [b for b in ALL_BLOCKS if b.language == "python"]


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=_ids(PYTHON_BLOCKS))
def test_python_block_compiles(block):
    compile(block.text, repr(block), "exec")


YAML_BLOCKS = [b for b in ALL_BLOCKS if b.language == "yaml"]


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=_ids(YAML_BLOCKS))
def test_yaml_block_is_a_valid_config(block):
    from t5pre.training import config as schema

    data = yaml.safe_load(block.text)
    assert isinstance(data, dict), f"{block!r}: not a mapping"
    sections = {f.name for f in schema.RunConfig.__dataclass_fields__.values()}
    if set(data) <= sections:
        schema.from_dict(data, origin=repr(block))


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: pathlib.Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, flags=re.M)}


@pytest.mark.parametrize("page", PAGES)
def test_links_resolve(page):
    path = REPO / page
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        assert linked.exists(), f"{page}: link to missing {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked), f"{page}: no heading for #{anchor} in {file_part or page}"


def test_reference_is_generated_from_the_code():
    from t5pre.cli import reference

    committed = (REPO / "docs" / "reference.md").read_text(encoding="utf-8")
    assert committed == reference.render(), (
        "docs/reference.md is stale: run  python -m t5pre.cli.reference")


def test_reference_lists_every_flag_and_key():
    from t5pre.cli import build_parser, reference
    from t5pre.training import config as schema

    text = reference.render()
    for name in ("pretrain", "finetune", "evaluate", "predict", "export"):
        assert f"### t5pre {name}" in text
    for sub in reference._subparsers(build_parser()).choices["pretrain"]._actions:
        for option in sub.option_strings:
            if option not in ("-h", "--help"):
                assert f"`{option}" in text, option
    for field in schema.TrainingSection.__dataclass_fields__:
        assert f"`training.{field}`" in text
    # a field's doc, choices and range reach the page
    assert "GLOBAL batch (examples per step, all replicas)" in text
    assert "one of `float32`, `mixed_bfloat16`, `mixed_float16`" in text
    assert "| `strategy.port_base` | int | `8888` | >= 1, <= 65535 |" in text


# --------------------------------------------------------------------------------------------
# Running the pages (slow)


def _docstrings():
    """(first paragraph, rest) of standard-library docstrings: real English, always present."""
    import argparse as m1, collections as m2, json as m3, shutil as m4, string as m5
    import textwrap as m6, functools as m7, pathlib as m8, statistics as m9, fractions as m10

    seen = set()
    for module in (m1, m2, m3, m4, m5, m6, m7, m8, m9, m10):
        for _, obj in sorted(vars(module).items()):
            doc = inspect.getdoc(obj) if callable(obj) else None
            if not doc or doc in seen:
                continue
            seen.add(doc)
            parts = [p.strip() for p in doc.split("\n\n") if p.strip()]
            if len(parts) >= 2:
                yield parts[0], "\n\n".join(parts[1:])


def make_reader_files(directory: pathlib.Path) -> None:
    """What the docs call your own files (see the module docstring)."""
    pairs = list(_docstrings())
    assert len(pairs) >= 60, len(pairs)
    (directory / "corpus").mkdir()
    for k in range(2):
        chunk = pairs[k::2]
        text = "\n\n".join(textwrap.fill(" ".join((s + " " + d).split()), 70)
                           for s, d in chunk)
        (directory / "corpus" / f"part{k}.txt").write_text(text + "\n", encoding="utf-8")
    rows = [{"document": " ".join(d.split()), "summary": " ".join(s.split())} for s, d in pairs]
    n_val = max(8, len(rows) // 10)
    for name, part in (("train.jsonl", rows[n_val:]), ("val.jsonl", rows[:n_val])):
        with open(directory / name, "w", encoding="utf-8") as f:
            for row in part:
                f.write(json.dumps(row) + "\n")


def _env():
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.pop("T5PRE_DATA_DIR", None)
    return env


def run_block(block: Block, directory: pathlib.Path, text: str | None = None) -> None:
    text = block.text if text is None else text
    if block.language == "bash":
        argv = ["bash", "-euo", "pipefail", "-c", text]
    else:
        argv = [sys.executable, "-c", text]
    result = subprocess.run(argv, cwd=directory, env=_env(), text=True, capture_output=True,
                            timeout=COMMAND_TIMEOUT)
    assert result.returncode == 0, (
        f"{block!r} failed (exit {result.returncode}) in {directory}:\n{text}\n"
        f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-6000:]}")


RUN_PAGES = [p for p in PAGES if any(b.runs for b in read_blocks(p))]


@pytest.mark.slow
@pytest.mark.parametrize("page", RUN_PAGES)
def test_page_runs(page, tmp_path):
    """A reader who types every block of the page, in order, in one directory. For README.md
    this is the tour on the reader's own files: pretrain -> fine-tune -> evaluate -> export."""
    make_reader_files(tmp_path)
    for block in read_blocks(page):
        if block.runs:
            run_block(block, tmp_path)


def without_own_data_flags(script: str) -> str:
    """The script with the own-data flags (and their values) taken out of every t5pre line."""
    out = []
    for line in logical_lines(script):
        words = shlex.split(line, comments=True)
        if not words or t5pre_argv(words) is None:
            out.append(line)
            continue
        kept, skip = [], False
        for word in words:
            if skip:
                skip = False
            elif word in OWN_DATA_FLAGS:
                skip = True
            else:
                kept.append(word)
        out.append(shlex.join(kept))
    return "\n".join(out).rstrip("\n") + "\n"


def test_own_data_flags_are_taken_out():
    script = ("t5pre finetune --init-from runs/mine --model-dir runs/sum --train-files train.jsonl \\\n"
              "    --prefix 'summarize: ' --steps 200\n")
    assert without_own_data_flags(script) == (
        "t5pre finetune --init-from runs/mine --model-dir runs/sum --steps 200\n")


@pytest.mark.slow
def test_readme_tour_embedded(tmp_path):
    """The README's tour with no files of one's own: the embedded corpus for pretraining, the
    packaged default_summarize task for fine-tuning, evaluation and prediction. (Exporting and
    loading the export take the same path with or without own data: test_page_runs covers
    them.)"""
    tour = [b for b in read_blocks("README.md") if b.runs and b.section == TOUR]
    assert any("t5pre export" in b.text for b in tour)
    run = [b for b in tour if b.language == "bash" and "t5pre export" not in b.text]
    assert any("t5pre evaluate" in b.text for b in run)
    for block in run:
        run_block(block, tmp_path, without_own_data_flags(block.text))
    scores = json.loads((tmp_path / "results" / "sum.json").read_text())
    assert scores, scores


def test_readme_python_example_runs(tmp_path):
    """Issue 19, item 1: the README's Python API example ran into `module 't5pre' has no
    attribute 'evaluation'`. Not marked slow: it guards the first Python a newcomer copies."""
    blocks = [b for b in read_blocks("README.md") if b.language == "python" and b.runs
              and "TaskRegistry.add" in b.text]
    assert len(blocks) == 1
    make_reader_files(tmp_path)
    run_block(blocks[0], tmp_path)
