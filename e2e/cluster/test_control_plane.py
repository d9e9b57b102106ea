"""The control plane itself: the pinned release answers, and nothing listens beyond loopback."""

from __future__ import annotations

import json
import os
from pathlib import Path

from kube import K8S_VERSION


def test_the_apiserver_and_kubectl_report_the_pinned_kubernetes_version(cluster):
    v = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert v["serverVersion"]["gitVersion"] == K8S_VERSION, v
    assert (v["serverVersion"]["major"], v["serverVersion"]["minor"]) == ("1", "37"), v
    assert v["clientVersion"]["gitVersion"] == K8S_VERSION, v


def _listening(pid: int) -> list[str]:
    """host:port of every listening TCP socket of process `pid` (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            f = line.split()
            local, state, inode = f[1], f[3], f[9]
            if state != "0A" or inode not in inodes:
                continue
            addr, port = local.split(":")
            if width == 8:
                host = ".".join(str(int(addr[i : i + 2], 16)) for i in (6, 4, 2, 0))
            else:
                host = "::1" if addr == "00000000000000000000000001000000" else addr
            out.append(f"{host}:{int(port, 16)}")
    return out


def test_every_control_plane_process_listens_on_loopback_only(cluster):
    seen = {}
    for name, proc in cluster.cp.procs.items():
        assert proc.alive, f"{name} is not running\n{proc.tail()}"
        seen[name] = _listening(proc.pid)
        assert seen[name], f"{name} listens nowhere?"
    wrong = {n: [a for a in addrs if not a.startswith("127.")] for n, addrs in seen.items()}
    assert not any(wrong.values()), f"listening beyond loopback: {wrong} (all: {seen})"
