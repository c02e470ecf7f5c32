"""A loopback TCP proxy that a test can cut and restore: a database that stops answering, for real."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from tests.servers import free_port


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; `cut()` resets every connection and refuses new ones;
    `delay` (seconds) holds every chunk from the target that long: a server that answers late."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.delay = 0.0
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
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() below; close() alone does not
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
            upstream.settimeout(None)  # the 2 s are for connecting: an idle database is not a cut one
            with self.lock:
                self.sockets.update((client, upstream))
            for src, dst, late in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pump, args=(src, dst, late), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, late: bool = False) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if late and self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
        with self.lock:
            self.sockets.discard(src)
            self.sockets.discard(dst)
        _reset(src)
        _reset(dst)


def _reset(sock: socket.socket) -> None:
    """Kill the connection for both peers: shutdown first, because a close() alone leaves the socket
    alive while a pump thread is blocked in recv() on it (the peer would never know: a database
    kept waiting mid-COPY holds its uncommitted rows, and a replay of the same ids waits on them);
    then close with RST (linger 0)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class ProxyProcess:
    """A TcpProxy in its own process (no GIL shared with a busy test), driven over stdin:
    `delay SECONDS`, `cut`, `restore`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        import subprocess
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.tcp_proxy", target_host, str(target_port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def command(self, line: str) -> None:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def _serve(host: str, port: int) -> None:
    import sys

    proxy = TcpProxy(host, port).start()
    print(proxy.port, flush=True)
    for line in sys.stdin:
        verb, *args = line.split()
        if verb == "delay":
            proxy.delay = float(args[0])
        elif verb == "cut":
            proxy.cut()
        elif verb == "restore":
            proxy.restore()
        print("ok", flush=True)
    proxy.stop()


if __name__ == "__main__":
    import sys

    _serve(sys.argv[1], int(sys.argv[2]))
