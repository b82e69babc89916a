"""Helpers for the process-tree tests: a process's descendants, read from /proc
(via psutil) before it is killed, and waiting until every one of them is gone."""

from __future__ import annotations

import queue
import subprocess
import threading
import time

import psutil


def descendants(pid: int) -> list[psutil.Process]:
    """Every live process below ``pid`` (children, grandchildren, ...)."""
    return list(psutil.Process(pid).children(recursive=True))


def gone(p: psutil.Process) -> bool:
    """True once the process has exited (a zombie waiting for a reaper counts: it holds nothing).
    psutil remembers the start time, so a reused pid is not mistaken for the process."""
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def survivors(procs: list[psutil.Process]) -> list[str]:
    """``pid cmdline`` of each process in ``procs`` that is still running."""
    out = []
    for p in procs:
        if not gone(p):
            try:
                out.append(f"{p.pid} {' '.join(p.cmdline())}")
            except psutil.Error:
                out.append(str(p.pid))
    return out


def wait_all_gone(procs: list[psutil.Process], timeout: float) -> list[str]:
    """Poll until every process in ``procs`` has exited or ``timeout`` (s) passed; the survivors."""
    deadline = time.monotonic() + timeout
    while (left := survivors(procs)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def listening_ports(procs: list[psutil.Process]) -> set[int]:
    """TCP ports on which any of ``procs`` listens."""
    ports: set[int] = set()
    for p in procs:
        try:
            conns = p.net_connections(kind="tcp")
        except psutil.Error:
            continue
        ports |= {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN and c.laddr}
    return ports


class Output:
    """Collects a child's stdout lines in a thread, so a test can wait for a line with a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stdout = proc.stdout
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for raw in self._stdout:
            self._queue.put(raw.decode(errors="replace"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float) -> str | None:
        """The first line containing ``text`` within ``timeout`` s; None if the output ended or time ran out."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                return None
            if line is None:
                return None
            self.lines.append(line)
            if text in line:
                return line
        return None

    def rest(self, timeout: float = 5.0) -> str:
        """All output (after the process ended, everything it wrote)."""
        self._thread.join(timeout)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return "".join(self.lines)

    def close(self) -> str:
        """:meth:`rest`, then close the pipe (call after the process ended)."""
        text = self.rest()
        self._stdout.close()
        return text
