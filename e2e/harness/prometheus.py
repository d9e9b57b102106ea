"""Real Prometheus (Debian `prometheus`) scraping the portal's admin `/metrics`, and `promtool
check metrics` on an exposition body."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from . import paths
from .ports import free_port, wait_port
from .procs import Proc, ProcessManager

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


@dataclass
class Prometheus:
    url: str  # http://127.0.0.1:P
    proc: Proc

    def query(self, expr: str) -> list[dict[str, Any]]:
        """`/api/v1/query?query=expr` → the result vector."""
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        r.raise_for_status()
        body = r.json()
        assert body.get("status") == "success", body
        return body["data"]["result"]

    def targets(self) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/api/v1/targets", timeout=5)
        r.raise_for_status()
        return r.json()["data"]["activeTargets"]

    def wait_query(
        self, expr: str, want: Callable[[list[dict[str, Any]]], bool], timeout: float = 20.0
    ) -> list[dict[str, Any]]:
        """Polls the query until `want(result)` holds."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = self.query(expr)
                if want(last):
                    return last
            except (httpx.HTTPError, ValueError) as e:
                last = repr(e)
            if not self.proc.alive:
                raise AssertionError(f"prometheus exited\n{self.proc.tail()}")
            if time.monotonic() > deadline:
                targets: Any
                try:
                    targets = self.targets()
                except (httpx.HTTPError, ValueError) as e:
                    targets = repr(e)
                raise AssertionError(f"query {expr!r} never matched within {timeout}s; last: {last}; targets: {targets}")
            time.sleep(0.25)


def start_prometheus(pm: ProcessManager, workdir: Path, targets: list[str], interval: str = "1s") -> Prometheus:
    """Prometheus in the foreground scraping `targets` (host:port, path /metrics) every `interval`,
    storage under `workdir`."""
    binary = paths.require(PROMETHEUS, "prometheus (apt-get install prometheus; make e2e-setup)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    listed = ", ".join(f'"{t}"' for t in targets)
    config = workdir / "prometheus.yml"
    config.write_text(
        f"""global:
  scrape_interval: {interval}
  scrape_timeout: {interval}
  evaluation_interval: {interval}
scrape_configs:
  - job_name: portcullis
    metrics_path: /metrics
    scrape_interval: {interval}
    static_configs:
      - targets: [{listed}]
""",
        encoding="utf-8",
    )
    proc = pm.start(
        "prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        cwd=workdir,
    )
    wait_port(port, timeout=30)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"prometheus not ready after 30s\n{proc.tail()}")
        time.sleep(0.1)
    return Prometheus(url, proc)


def promtool_check_metrics(body: str) -> tuple[int, str]:
    """`promtool check metrics` with `body` on stdin → (exit code, its output)."""
    binary = paths.require(PROMTOOL, "promtool (apt-get install prometheus; make e2e-setup)")
    p = subprocess.run([str(binary), "check", "metrics"], input=body, capture_output=True, text=True, timeout=30)
    return p.returncode, (p.stdout + p.stderr).strip()
