"""Exec a command that the kernel terminates when its parent process dies.

    python -m live.parent_death [--signal=NAME] PARENT_PID PROGRAM [ARG ...]

Linux keeps PR_SET_PDEATHSIG across execve, so the embedded Redis gets SIGTERM (and flushes its
AOF) even when the server that started it is SIGKILLed. Doing this in a tiny exec'd wrapper,
rather than in ``preexec_fn``, keeps it safe when the parent already runs threads. The pid of
the exec'd program is the pid the parent got, so /proc accounting sees the real program.
``--signal=KILL`` (any signal name) sends that instead of SIGTERM: the benchmarks use it for
their load generators, which have nothing to flush. PROGRAM is looked up on PATH.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    death = signal.SIGTERM
    if argv and argv[0].startswith("--signal="):
        name, argv = argv[0].removeprefix("--signal=").upper(), argv[1:]
        try:
            death = signal.Signals[name if name.startswith("SIG") else "SIG" + name]
        except KeyError:
            print(f"unknown signal: {name}", file=sys.stderr)
            return 2
    if len(argv) < 2:
        print(
            "usage: python -m live.parent_death [--signal=NAME] PARENT_PID PROGRAM [ARG ...]", file=sys.stderr
        )
        return 2
    parent = int(argv[0])
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, death, 0, 0, 0) != 0:
            print(f"prctl failed: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
            return 1
    # The parent may have died before prctl took effect: then we were re-parented already.
    if os.getppid() != parent:
        return 1
    os.execvp(argv[1], argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
