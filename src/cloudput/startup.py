"""Start-up work done without the cyclic garbage collector passing over it again and again.

Loading typer, rich and botocore and building a client allocate a few hundred thousand
objects that live as long as the process. The collector scans them on every older-
generation pass: about 60 ms of CPU per run on a 1-byte or a 256 MiB upload
(docs/performance.md, "Start-up"). While they load, the collector is held off; then
``gc.freeze`` moves them to the permanent generation, which no pass scans.

Only the console entry point turns this on (``activate``): a program or a test that
imports cloudput keeps its collector as it is.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_active = False


def activate() -> None:
    """Hold the collector during loading from now on (the ``cloudput`` command only)."""
    global _active
    _active = True


@contextmanager
def loading() -> Iterator[None]:
    """Hold the collector off while long-lived objects are made, then freeze them.

    Does nothing unless ``activate`` was called, or when the collector is already off.
    Garbage made meanwhile is frozen too and never freed: keep the block to one-time
    work (imports, clients), not to anything repeated per file or part.
    """
    if not _active or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()
