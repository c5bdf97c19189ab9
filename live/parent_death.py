"""Exec a command that the kernel terminates when its parent process dies.

    python -m live.parent_death PARENT_PID PROGRAM [ARG ...]

Linux keeps PR_SET_PDEATHSIG across execve, so the embedded Redis gets SIGTERM (and flushes its
AOF) even when the server that started it is SIGKILLed. Doing this in a tiny exec'd wrapper,
rather than in ``preexec_fn``, keeps it safe when the parent already runs threads.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m live.parent_death PARENT_PID PROGRAM [ARG ...]", file=sys.stderr)
        return 2
    parent = int(argv[0])
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            print(f"prctl failed: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
            return 1
    # The parent may have died before prctl took effect: then we were re-parented already.
    if os.getppid() != parent:
        return 1
    os.execv(argv[1], argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
