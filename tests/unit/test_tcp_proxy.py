"""The fault tests' proxy: an idle connection lives until the cut, and the cut reaches both peers."""

from __future__ import annotations

import socket
import time

import pytest

from tests.tcp_proxy import TcpProxy


@pytest.mark.unit
def test_idle_connections_live_until_the_cut_and_the_cut_reaches_both_ends() -> None:
    """Both pump threads sit in recv() on an idle connection. Idle is not cut (the proxy once
    dropped every connection its database had been quiet on for 2 s), and the cut must end it for
    the database too (one kept waiting mid-COPY holds its uncommitted rows; a replay of the same
    ids waits on them)."""
    server = socket.create_server(("127.0.0.1", 0))
    proxy = TcpProxy("127.0.0.1", server.getsockname()[1]).start()
    try:
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        upstream, _ = server.accept()
        upstream.settimeout(2)
        time.sleep(2.5)  # a quiet database
        client.sendall(b"COPY")
        assert upstream.recv(4) == b"COPY"
        upstream.sendall(b"OK")
        assert client.recv(2) == b"OK"
        upstream.settimeout(0.5)  # well before any timeout of the proxy's own
        proxy.cut()
        try:
            ended = upstream.recv(16) == b""
        except ConnectionResetError:
            ended = True
        except TimeoutError:
            ended = False
        assert ended, "the database side of a cut connection never learnt it was cut"
        client.close()
        upstream.close()
    finally:
        proxy.stop()
        server.close()
