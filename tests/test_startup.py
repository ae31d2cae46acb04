"""The console entry point loads with the garbage collector held, then freezes what it
loaded (cloudput.startup); a program that imports cloudput keeps its collector as is."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from cloudput import startup


@pytest.fixture
def active(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(startup, "_active", True)
    yield
    gc.unfreeze()  # give the test process its objects back
    gc.enable()


def test_loading_holds_the_collector_then_freezes_what_was_made(active) -> None:
    before = gc.get_freeze_count()
    with startup.loading():
        assert not gc.isenabled()
        made = [[index] for index in range(1000)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= before + len(made)


def test_loading_gives_the_collector_back_when_the_block_raises(active) -> None:
    with pytest.raises(RuntimeError), startup.loading():
        raise RuntimeError("import failed")
    assert gc.isenabled()


def test_loading_leaves_a_switched_off_collector_off(active) -> None:
    gc.disable()
    before = gc.get_freeze_count()
    with startup.loading():
        pass
    assert not gc.isenabled()
    assert gc.get_freeze_count() == before


def test_loading_does_nothing_for_a_program_that_imports_cloudput() -> None:
    before = gc.get_freeze_count()
    with startup.loading():
        assert gc.isenabled()
        [[index] for index in range(1000)]
    assert gc.get_freeze_count() == before


def test_the_console_entry_point_runs_with_its_start_up_frozen() -> None:
    probe = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('enabled', gc.isenabled(),"
        " 'frozen', gc.get_freeze_count()))\n"
        "sys.argv = ['cloudput', '--version']\n"
        "from cloudput.cli import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("cloudput ")
    words = lines[1].split()
    assert words[:2] == ["enabled", "True"]
    assert int(words[3]) > 10_000  # typer, rich and cloudput's own modules
