"""Child processes that never outlive a test.

Every process starts in its own session (so its whole process group can be signalled), has its
stdout and stderr drained by threads into memory and into log files, and is killed at teardown:
SIGTERM to the group, then SIGKILL after a grace period. Waiting for output always has a timeout.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path


_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: SIGKILL me if the test runner dies (no orphans even on a hard crash)."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_LIVE: set["Proc"] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        proc.kill(grace=1.0)


class ProcessError(AssertionError):
    """A process died or did not print what we waited for; the message carries its output."""


class Proc:
    def __init__(
        self,
        name: str,
        cmd: Sequence[str | os.PathLike[str]],
        log_dir: Path,
        env: dict[str, str | None] | None = None,
        cwd: Path | str | None = None,
    ):
        self.name = name
        self.cmd = [str(c) for c in cmd]
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._cond = threading.Condition()
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_paths = {s: log_dir / f"{name}.{s}.log" for s in ("stdout", "stderr")}
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env = {k: v for k, v in full_env.items() if v is not None}  # None: not inherited
        self.popen = subprocess.Popen(
            self.cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        _LIVE.add(self)
        self.pid = self.popen.pid
        self._threads = [
            threading.Thread(target=self._drain, args=(stream, self.popen.stdout if stream == "stdout" else self.popen.stderr), daemon=True)
            for stream in ("stdout", "stderr")
        ]
        for t in self._threads:
            t.start()

    def _drain(self, stream: str, pipe) -> None:  # type: ignore[no-untyped-def]
        with open(self.log_paths[stream], "w", encoding="utf-8", errors="replace") as log:
            for raw in iter(pipe.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                log.write(line + "\n")
                log.flush()
                with self._cond:
                    self.lines[stream].append(line)
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_for(self, pattern: str, timeout: float = 20.0, stream: str = "any") -> re.Match[str]:
        """The first line (of `stream`: stdout, stderr or any) matching `pattern`, or ProcessError."""
        rx = re.compile(pattern)
        streams = ("stdout", "stderr") if stream == "any" else (stream,)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for s in streams:
                    for line in self.lines[s]:
                        m = rx.search(line)
                        if m:
                            return m
                if not self.alive and all(not t.is_alive() for t in self._threads):
                    raise ProcessError(
                        f"{self.name} exited with {self.popen.returncode} before printing /{pattern}/\n{self.tail()}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ProcessError(f"{self.name} did not print /{pattern}/ within {timeout}s\n{self.tail()}")
                self._cond.wait(min(left, 0.2))

    def output(self, stream: str = "any") -> str:
        with self._cond:
            if stream == "any":
                return "\n".join(self.lines["stdout"] + self.lines["stderr"])
            return "\n".join(self.lines[stream])

    def tail(self, n: int = 40) -> str:
        with self._cond:
            parts = []
            for s in ("stdout", "stderr"):
                lines = self.lines[s]
                if len(lines) > n:
                    # The first lines often say why a process died; the last say what it did last.
                    head, rest = lines[: n // 4], lines[-(n - n // 4) :]
                    shown = [*head, f"... ({len(lines) - len(head) - len(rest)} lines omitted) ...", *rest]
                else:
                    shown = lines
                parts.append(f"--- {self.name} {s} ({len(lines)} lines) ---\n" + "\n".join(shown))
            return "\n".join(parts)

    def kill(self, grace: float = 3.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after `grace` seconds; returns the exit code."""
        if self.alive:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left in the group (grandchildren, or a leader that ignored SIGTERM).
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for t in self._threads:
            t.join(timeout=2)
        _LIVE.discard(self)
        return self.popen.returncode

    def hard_kill(self) -> None:
        """SIGKILL the whole group at once (a crash, for failure-isolation tests)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=5)


class ProcessManager:
    """Starts processes for one scope (test, module) and kills all of them at its end."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: list[Proc] = []
        self._names: dict[str, int] = {}

    def start(
        self,
        name: str,
        cmd: Sequence[str | os.PathLike[str]],
        env: dict[str, str | None] | None = None,
        cwd: Path | str | None = None,
    ) -> Proc:
        n = self._names.get(name, 0)
        self._names[name] = n + 1
        unique = name if n == 0 else f"{name}-{n}"
        proc = Proc(unique, cmd, self.log_dir, env=env, cwd=cwd)
        self.procs.append(proc)
        return proc

    def tails(self, n: int = 40) -> str:
        return "\n".join(p.tail(n) for p in self.procs)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.kill()
