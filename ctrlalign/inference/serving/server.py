"""Running the app: a bound socket, uvicorn configured for serving, a server thread."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket (port 0 picks a free one), so the caller knows the port
    before the server starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def uvicorn_server(
    app: FastAPI, drain_timeout_s: float | None = 30.0, access_log: bool = False
) -> uvicorn.Server:
    """uvicorn for ``app``: a deep accept backlog (a burst of clients must not get
    connection errors), keep-alive long enough for clients that pool connections, and
    ``drain_timeout_s`` for requests in flight at shutdown."""
    config = uvicorn.Config(
        app,
        log_level="info" if access_log else "warning",
        access_log=access_log,
        lifespan="on",
        backlog=2048,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=None if drain_timeout_s is None else int(drain_timeout_s),
    )
    return uvicorn.Server(config)


class ServerThread:
    """A uvicorn server in a background thread (tests, benchmarks): ``url`` is its base."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0):
        self.sock = bind(host, port)
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        self.server = uvicorn_server(app)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline and self.thread.is_alive():
            time.sleep(0.01)
        if not self.server.started:
            raise RuntimeError("the server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)
