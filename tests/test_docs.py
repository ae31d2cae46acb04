"""The docs cannot rot: docs/cli.md matches the app, every command has --help, and
every example in docs/examples.md runs against moto's S3 server with the output shown.

The examples run in order in one temporary directory with one journal, as a user
would type them. `$ cloudput ...` lines run in this process (fast); other lines run
in bash. Output is compared as a set of lines after replacing what varies between
runs (ids, times, durations, rates, ports, the directory, the bucket); a line
`$ echo $?` shows the previous command's exit code, which is otherwise 0.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest
import typer

from cloudput.cli.app import app
from tests.helpers import run_cli

REPO = Path(__file__).resolve().parents[1]
EXAMPLES_DOC = REPO / "docs" / "examples.md"
CLI_DOC = REPO / "docs" / "cli.md"
#: The directory and bucket the examples in docs/examples.md were captured in.
DOC_DIR = "/tmp/cloudput-examples"
DOC_BUCKET = "my-bucket"
CONSOLE_BLOCK = re.compile(r"```console\n(.*?)```", re.DOTALL)
UPLOAD_ID = re.compile(r"\b[0-9a-f]{12}\b")
#: What differs from run to run, replaced before comparing (order matters).
VARYING = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"), "<TIME>"),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<PORT>"),
    (re.compile(r"in \d+(\.\d+)?s, [\d.]+ [KMGT]?i?B/s"), "in <SECONDS>, <RATE>"),
    (re.compile(r"[+-]\d+s from the server"), "<SKEW> from the server"),
    (re.compile(r"\b\d+\.\d+\.\d+ \("), "<VERSION> ("),
    (UPLOAD_ID, "<ID>"),
]
#: Lines a run may print or not depending on its speed.
TIMING_LINES = ("cloudput: progress ",)


# -- the CLI reference ------------------------------------------------------------


def load_generator() -> ModuleType:
    path = REPO / "scripts" / "gen_cli_reference.py"
    spec = importlib.util.spec_from_file_location("gen_cli_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_up_to_date():
    expected = load_generator().render()
    assert CLI_DOC.read_text() == expected, (
        "docs/cli.md is out of date: run .venv/bin/python scripts/gen_cli_reference.py"
    )


def command_names() -> list[str]:
    return list(typer.main.get_command(app).commands)


def test_cli_reference_names_every_command():
    text = CLI_DOC.read_text()
    for name in command_names():
        assert f"## cloudput {name}\n" in text


@pytest.mark.parametrize("name", ["", *command_names()])
def test_every_command_has_help_that_exits_0(name):
    args = [name, "--help"] if name else ["--help"]
    result = run_cli(args)
    assert result.code == 0, result.stderr
    assert "Usage" in result.stdout


# -- the examples -----------------------------------------------------------------


@dataclass
class Step:
    """One `$ command` of an example block and the lines printed after it."""

    command: str
    expected: list[str] = field(default_factory=list)


def example_steps(text: str) -> list[list[Step]]:
    """The console blocks of a document, each a list of steps."""
    blocks = []
    for body in CONSOLE_BLOCK.findall(text):
        steps: list[Step] = []
        pending = ""
        for line in body.splitlines():
            if pending:
                pending += "\n" + line
            elif line.startswith("$ "):
                pending = line[2:]
            else:
                steps[-1].expected.append(line)
                continue
            if pending.endswith("\\"):
                continue
            steps.append(Step(pending))
            pending = ""
        blocks.append(steps)
    return blocks


def norm_line(line: str) -> str:
    """One line with what varies replaced and runs of spaces collapsed."""
    for pattern, placeholder in VARYING:
        line = pattern.sub(placeholder, line)
    return " ".join(line.split())


def normalised(lines: list[str]) -> list[str]:
    """The lines that must match, normalised and sorted (order varies with threads)."""
    kept = [
        line for line in lines if line.strip() and not line.startswith(TIMING_LINES)
    ]
    return sorted(norm_line(line) for line in kept)


def bind_ids(expected: list[str], actual: list[str], ids: dict[str, str]) -> None:
    """Learn which real id stands for each id the doc shows, from lines that match."""
    by_form: dict[str, list[str]] = {}
    for line in actual:
        by_form.setdefault(norm_line(line), []).append(line)
    for line in expected:
        candidates = by_form.get(norm_line(line))
        if not candidates:
            continue
        real = candidates.pop(0)
        pairs = zip(UPLOAD_ID.findall(line), UPLOAD_ID.findall(real), strict=True)
        for doc_id, real_id in pairs:
            ids.setdefault(doc_id, real_id)


class Session:
    """Runs the steps of docs/examples.md in one directory against one bucket."""

    def __init__(self, cwd: Path, bucket: str) -> None:
        self.cwd = cwd
        self.bucket = bucket
        self.ids: dict[str, str] = {}
        self.last_code = 0

    def localise(self, command: str) -> str:
        command = command.replace(DOC_DIR, str(self.cwd))
        command = command.replace(DOC_BUCKET, self.bucket)
        return UPLOAD_ID.sub(lambda m: self.ids.get(m.group(0), m.group(0)), command)

    def run(self, command: str) -> tuple[int, list[str]]:
        """Run one step; return its exit code and its output in the doc's terms."""
        command = self.localise(command)
        if command == "echo $?":
            return 0, [str(self.last_code)]
        if command.startswith("cloudput "):
            result = run_cli(shlex.split(command)[1:])
            code, text = result.code, result.stdout + result.stderr
        else:
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=self.cwd,
                capture_output=True,
                text=True,
                timeout=60,
            )
            code, text = done.returncode, done.stdout + done.stderr
        text = text.replace(str(self.cwd), DOC_DIR).replace(self.bucket, DOC_BUCKET)
        self.last_code = code
        return code, text.splitlines()


def expected_code(steps: list[Step], index: int) -> int:
    """0, unless the next step is `echo $?` showing another code."""
    following = steps[index + 1] if index + 1 < len(steps) else None
    if following is not None and following.command == "echo $?":
        return int(following.expected[0])
    return 0


def test_examples_doc_has_an_example_per_command():
    commands = {
        shlex.split(step.command)[1]
        for steps in example_steps(EXAMPLES_DOC.read_text())
        for step in steps
        if step.command.startswith("cloudput ")
    }
    plumbing = {"part-url", "complete"}  # shown run in docs/plumbing.md
    assert set(command_names()) - plumbing <= commands


def test_examples_run_as_shown(s3, tmp_path, monkeypatch):
    workdir = tmp_path / "examples"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    s3.apply_env(monkeypatch)
    session = Session(workdir, s3.bucket)
    for steps in example_steps(EXAMPLES_DOC.read_text()):
        for index, step in enumerate(steps):
            code, actual = session.run(step.command)
            if step.command == "echo $?":
                continue
            shown = "\n".join(actual)
            assert code == expected_code(steps, index), f"$ {step.command}\n{shown}"
            assert normalised(actual) == normalised(step.expected), (
                f"$ {step.command}\n{shown}"
            )
            bind_ids(step.expected, actual, session.ids)


# -- links ------------------------------------------------------------------------

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
#: Docs that are not for users (deleted before landing).
UNLINKED = {"HELPERS-BRIEF.md"}


def test_readme_links_every_doc():
    linked = set(LINK.findall((REPO / "README.md").read_text()))
    for doc in sorted((REPO / "docs").rglob("*.md")):
        if doc.name not in UNLINKED:
            assert doc.relative_to(REPO).as_posix() in linked, f"README: link {doc}"


def test_relative_links_in_the_docs_resolve():
    for doc in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        for target in LINK.findall(doc.read_text()):
            if not target.startswith(("http://", "https://", "mailto:")):
                assert (doc.parent / target).exists(), f"{doc}: broken link {target}"
