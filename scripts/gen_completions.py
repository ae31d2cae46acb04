"""Write the shell completion scripts in completions/ (bash, zsh, fish).

The scripts call back into cloudput to complete, so they change only when typer changes
its completion protocol; tests/test_completions.py fails when they are out of date.
Run: .venv/bin/python scripts/gen_completions.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from typer._completion_shared import get_completion_script

REPO = Path(__file__).resolve().parents[1]
FILES = {"bash": "cloudput.bash", "zsh": "_cloudput", "fish": "cloudput.fish"}


def scripts() -> dict[str, str]:
    """The completion script for each shell, keyed by file name."""
    return {
        name: get_completion_script(
            prog_name="cloudput", complete_var="_CLOUDPUT_COMPLETE", shell=shell
        ).strip()
        + "\n"
        for shell, name in FILES.items()
    }


def main() -> int:
    out = REPO / "completions"
    out.mkdir(exist_ok=True)
    for name, text in scripts().items():
        (out / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
