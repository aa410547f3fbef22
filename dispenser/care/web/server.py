"""The web view served by uvicorn on a thread of its own, beside the ingest workers.

    web = WebServer(app, "127.0.0.1", 8080)
    web.start(); web.wait_ready(10); ...; web.stop()
"""
from __future__ import annotations

import threading
import time

import uvicorn
from starlette.applications import Starlette


def split_listen(listen: str) -> tuple[str, int]:
    """`[web] listen` ("HOST:PORT", checked by the config) as (host, port)."""
    host, _, port = listen.rpartition(":")
    return host, int(port)


class WebServer:
    """uvicorn running one app until `stop()`. Off the main thread it takes no signals: the caller owns them."""

    def __init__(self, app: Starlette, host: str, port: int):
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                    access_log=False, lifespan="off", server_header=False))
        self.thread = threading.Thread(target=self.server.run, name="care-web", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def wait_ready(self, timeout: float) -> bool:
        """True once it listens; False if it gave up (the port taken) or the time ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.thread.is_alive():
            if self.server.started:
                return True
            time.sleep(0.05)
        return bool(self.server.started)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
