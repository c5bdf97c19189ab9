"""CPU accounting from /proc (Linux): whose CPU a run cost, harness and server apart.

The one reader of /proc's formats in the project's tooling: the harness uses it, and so do the
benchmarks in bench/ (memory, process states, the machine's busy time, socket queues).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PROC = Path("/proc")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads); 0 if it is gone."""
    try:
        fields = (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first); None if it is gone."""
    try:
        return (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _parent(pid: int) -> int | None:
    fields = _stat(pid)
    try:
        return int(fields[1]) if fields else None
    except (IndexError, ValueError):
        return None


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie counts as gone."""
    fields = _stat(pid)
    return fields is not None and fields[:1] != ["Z"]


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (VmRSS); raises OSError if it is gone."""
    for line in (_PROC / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"no VmRSS for pid {pid}")


def exe_name(pid: int) -> str:
    """The file name of a process's program ("" if unknown)."""
    try:
        return os.path.basename(os.readlink(_PROC / str(pid) / "exe"))
    except OSError:
        return ""


def cmdline(pid: int) -> list[str]:
    """A process's arguments ([] if it is gone)."""
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, from /proc/stat: busy share = d(busy) / d(total)."""
    values = [int(v) for v in (_PROC / "stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return float(total - idle), float(total)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or "unknown"."""
    with contextlib.suppress(OSError):
        for line in (_PROC / "cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def with_descendants(roots: Iterable[int]) -> set[int]:
    """The processes and every process below them (a server's workers and its Redis)."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            parent = _parent(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def _tcp_sockets(port: int, state: str, tables: Iterable[str] = ("tcp", "tcp6")) -> list[list[str]]:
    """The rows of /proc/net/tcp(6) for local ``port`` in ``state`` (hex: 0A LISTEN, 01
    ESTABLISHED); columns: sl, local HEX_IP:HEX_PORT, remote, state, tx_queue:rx_queue, ... inode."""
    rows = []
    for table in tables:
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[3] == state and int(cols[1].rsplit(":", 1)[1], 16) == port:
                rows.append(cols)
    return rows


def socket_queues(port: int) -> tuple[int, int]:
    """(established connections to ``port``, bytes waiting in their receive queues), IPv4."""
    rows = _tcp_sockets(port, "01", ("tcp",))
    return len(rows), sum(int(cols[4].split(":")[1], 16) for cols in rows)


def listening_pids(port: int) -> set[int]:
    """Processes with a TCP socket listening on ``port`` (those this user may inspect)."""
    inodes = {cols[9] for cols in _tcp_sockets(port, "0A")}
    pids: set[int] = set()
    if not inodes:
        return pids
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    pids.add(int(entry.name))
                    break
        except OSError:
            continue
    return pids


class CpuMeter:
    """CPU seconds a set of processes used between ``start()`` and ``stop()``, counting
    processes that appear in between (from zero) and not losing those that exit (their last
    reading stands)."""

    def __init__(self, roots: Iterable[int]) -> None:
        self.roots = list(roots)
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}

    def _read(self) -> dict[int, float]:
        return {pid: cpu_seconds(pid) for pid in with_descendants(self.roots)}

    def start(self) -> None:
        self._first = self._read()
        self._last = dict(self._first)

    def sample(self) -> None:
        for pid, cpu in self._read().items():
            if cpu:
                self._last[pid] = cpu

    def used(self) -> float:
        return round(sum(cpu - self._first.get(pid, 0.0) for pid, cpu in self._last.items()), 3)
