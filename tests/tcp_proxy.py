"""A loopback TCP proxy that a test can cut and restore: a database that stops answering, for real."""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.servers import free_port


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; `cut()` resets every connection and refuses new ones."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.down = threading.Event()
        self.closed = threading.Event()
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> TcpProxy:
        self.thread.start()
        return self

    def cut(self) -> None:
        self.down.set()
        with self.lock:
            for sock in list(self.sockets):
                _reset(sock)
            self.sockets.clear()

    def restore(self) -> None:
        self.down.clear()

    def stop(self) -> None:
        self.closed.set()
        self.cut()
        self.listener.close()
        self.thread.join(timeout=5)

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down.is_set():
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                _reset(client)
                continue
            with self.lock:
                self.sockets.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with self.lock:
            self.sockets.discard(src)
            self.sockets.discard(dst)
        _reset(src)
        _reset(dst)


def _reset(sock: socket.socket) -> None:
    """Close with RST (linger 0): the peer sees the connection die, not a polite EOF."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    with contextlib.suppress(OSError):
        sock.close()
