"""A real redis-server (Debian's) on a free loopback port, with append-only persistence
(`appendfsync always`: every write is on disk before Redis answers), restartable on the same
port and data directory."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import paths
from .ports import free_port, wait_port
from .procs import Proc, ProcessManager


@dataclass
class Redis:
    port: int
    workdir: Path
    pm: ProcessManager
    proc: Proc | None = field(default=None)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = paths.require(paths.REDIS_SERVER, "redis-server (apt-get install redis-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = self.pm.start("redis", [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
            "--protected-mode", "yes", "--logfile", "",
        ])
        wait_port(self.port)
        deadline = time.monotonic() + 20
        while self.command("PING") != "+PONG":
            if time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not answer PING\n{self.proc.tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM: Redis ends after its append-only file is on disk."""
        if self.proc is not None:
            self.proc.kill()
            self.proc = None

    def command(self, *args: str) -> str:
        """One command in RESP over a fresh socket; the first reply line (or "" when down)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                out = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
                s.sendall(out.encode())
                return s.recv(65536).decode(errors="replace").split("\r\n", 1)[0]
        except OSError:
            return ""


def start_redis(pm: ProcessManager, workdir: Path) -> Redis:
    r = Redis(free_port(), workdir, pm)
    r.start()
    return r
