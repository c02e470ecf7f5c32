"""`/metrics` on a port of its own (CHURNOPS_METRICS_PORT): scraped inside the cluster, never exposed
with the API. The `churnops serve` parent answers it from the snapshots every worker publishes each
second, so a scrape costs no worker anything and sums all of them."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from churnops.errors import ConfigError
from churnops.serving.metrics import CONTENT_TYPE, render_published

NOT_HERE = b'{"error":{"code":"not_found","message":"this port serves /metrics only"}}'


def start_metrics_server(host: str, port: int, metrics_dir: Path) -> ThreadingHTTPServer:
    """Serve GET /metrics on host:port from a daemon thread (stopped with the process)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self._send(404, NOT_HERE, "application/json")
                return
            self._send(200, render_published(metrics_dir), CONTENT_TYPE)

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:  # scrapes are not access-logged
            return

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as err:
        raise ConfigError(f"CHURNOPS_METRICS_PORT: cannot listen on {host}:{port} ({err.strerror})") from err
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-port", daemon=True).start()
    return server
