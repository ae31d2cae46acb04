"""The ``cloudput`` command line; ``main`` is its console entry point."""

from __future__ import annotations

import sys


def main() -> None:
    """Console entry point: load the app with the collector held (``cloudput.startup``)."""
    from cloudput import startup

    startup.activate()
    with startup.loading():
        from cloudput.cli.app import run
    sys.exit(run())
