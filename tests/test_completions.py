"""The committed completion scripts match what typer generates now."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_generator():
    spec = importlib.util.spec_from_file_location(
        "gen", REPO / "scripts/gen_completions.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_completion_scripts_are_up_to_date():
    for name, text in load_generator().scripts().items():
        committed = (REPO / "completions" / name).read_text()
        assert committed == text, (
            f"completions/{name} is stale: run scripts/gen_completions.py"
        )


def test_bash_completion_completes_commands(tmp_path):
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "_CLOUDPUT_COMPLETE": "complete_bash",
        "COMP_WORDS": "cloudput re",
        "COMP_CWORD": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "cloudput"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "resume" in done.stdout.split()
