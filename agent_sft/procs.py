"""Ending a process at once: its exit functions run and its output is flushed, the interpreter's teardown
is skipped (threads blocked on the network are not waited for; an engine's modules are not torn down one
by one, which frees nothing the OS does not)."""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    """End the process with `code` now, after its exit functions (a Ray started here is shut down) and a
    flush of stdout and stderr."""
    # `atexit` has no public way to run its functions early; where this private one is gone they are skipped
    run = getattr(atexit, "_run_exitfuncs", None)
    if callable(run):
        try:
            run()
        except Exception:  # noqa: BLE001 - atexit reports a failing function itself; the exit goes on
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed or broken stream has nothing left to say
            pass
    os._exit(code)
