"""Exec a program that the kernel kills when the benchmark that started it dies.

    python parent_death.py PARENT_PID PROGRAM [ARG ...]

Every server and client process of the benchmarks is started through this wrapper, so even a
SIGKILLed benchmark leaves nothing running (live's embedded Redis has the same guarantee
relative to live, see live/parent_death.py). PR_SET_PDEATHSIG survives execve, and the pid of
the exec'd program is the pid the benchmark got, so /proc accounting sees the real program.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: parent_death.py PARENT_PID PROGRAM [ARG ...]", file=sys.stderr)
        return 2
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            print(f"prctl failed: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
            return 1
    if os.getppid() != int(argv[0]):
        return 1  # the parent died before prctl took effect
    os.execvp(argv[1], argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
