"""Real nginx as a round-robin load balancer in front of proxy replicas."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .ports import free_port, wait_port
from .procs import Proc, ProcessManager

LOG_FORMAT = '$request_method $uri $status upstream=$upstream_addr session=$http_mcp_session_id'
LINE = re.compile(r"^(\S+) (\S+) (\d{3}) upstream=(\S+) session=(\S*)$")


@dataclass
class Nginx:
    url: str  # http://127.0.0.1:P (no path)
    access_log: Path
    proc: Proc

    def entries(self) -> list[dict[str, str]]:
        out = []
        for line in self.access_log.read_text(encoding="utf-8").splitlines():
            m = LINE.match(line.strip())
            if m:
                method, uri, status, upstream, session = m.groups()
                out.append({"method": method, "uri": uri, "status": status, "upstream": upstream, "session": session})
        return out


def start_nginx(pm: ProcessManager, workdir: Path, backends: list[str]) -> Nginx:
    """nginx in the foreground (`daemon off;`) with `-p workdir -c nginx.conf`; round robin over
    `backends` (host:port), logging `$upstream_addr` for every request."""
    binary = paths.require(paths.NGINX, "nginx (apt-get install nginx)")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "logs").mkdir(exist_ok=True)
    port = free_port()
    servers = "\n".join(f"    server {b} max_fails=0;" for b in backends)
    conf = f"""
daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/logs/error.log info;
events {{ worker_connections 256; }}
http {{
  log_format portal '{LOG_FORMAT}';
  access_log {workdir}/logs/access.log portal;
  client_body_temp_path {workdir}/client_body;
  proxy_temp_path {workdir}/proxy;
  fastcgi_temp_path {workdir}/fastcgi;
  uwsgi_temp_path {workdir}/uwsgi;
  scgi_temp_path {workdir}/scgi;
  upstream portal {{
{servers}
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://portal;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_buffering off;
      proxy_read_timeout 60s;
    }}
  }}
}}
"""
    conf_path = workdir / "nginx.conf"
    conf_path.write_text(conf, encoding="utf-8")
    proc = pm.start("nginx", [binary, "-p", str(workdir), "-c", str(conf_path), "-e", str(workdir / "logs" / "error.log")])
    wait_port(port)
    return Nginx(f"http://127.0.0.1:{port}", workdir / "logs" / "access.log", proc)


@dataclass
class MtlsIngress:
    url: str  # https://127.0.0.1:P (no path)
    proc: Proc


def start_mtls_nginx(
    pm: ProcessManager,
    workdir: Path,
    backend: str,
    server_cert: Path,
    server_key: Path,
    client_ca: Path,
    bind: str,
    cert_header: str = "ssl-client-cert",
    port: int | None = None,
) -> MtlsIngress:
    """nginx as a TLS ingress that asks clients for a certificate (`ssl_verify_client optional`:
    a client may present none; one that does not verify against `client_ca` is refused with 400)
    and proxies to `backend` (host:port) from the local address `bind`, adding the client's
    address to `X-Forwarded-For` and forwarding the verified certificate, URL-encoded PEM
    (`$ssl_client_escaped_cert`), in `cert_header` (which replaces any such header the client
    sent; empty, i.e. absent, when there is no certificate). `port`: where to listen (default:
    a free one)."""
    binary = paths.require(paths.NGINX, "nginx (apt-get install nginx)")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "logs").mkdir(exist_ok=True)
    port = port or free_port()
    conf = f"""
daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/logs/error.log info;
events {{ worker_connections 256; }}
http {{
  access_log {workdir}/logs/access.log;
  client_body_temp_path {workdir}/client_body;
  proxy_temp_path {workdir}/proxy;
  fastcgi_temp_path {workdir}/fastcgi;
  uwsgi_temp_path {workdir}/uwsgi;
  scgi_temp_path {workdir}/scgi;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {server_cert};
    ssl_certificate_key {server_key};
    ssl_client_certificate {client_ca};
    ssl_verify_client optional;
    ssl_verify_depth 2;
    location / {{
      proxy_pass http://{backend};
      proxy_bind {bind};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header {cert_header} $ssl_client_escaped_cert;
      proxy_buffering off;
      proxy_read_timeout 60s;
    }}
  }}
}}
"""
    conf_path = workdir / "nginx.conf"
    conf_path.write_text(conf, encoding="utf-8")
    proc = pm.start("nginx-mtls", [binary, "-p", str(workdir), "-c", str(conf_path), "-e", str(workdir / "logs" / "error.log")])
    wait_port(port)
    return MtlsIngress(f"https://127.0.0.1:{port}", proc)
