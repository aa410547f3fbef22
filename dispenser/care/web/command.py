"""The web view's part of `dispenser care`: `care user add NAME`, and starting the web
server inside `care serve`. Errors are `AccountError` / `WebError`: one line, exit 2."""
from __future__ import annotations

import getpass
import socket
import sys
from datetime import datetime, timezone

from ..config import CareConfig
from ..database import Database
from .accounts import AccountError, add_user, check_name
from .server import WebServer, split_listen

READY_WAIT_S = 10.0


class WebError(RuntimeError):
    """The web view could not start; one line."""


def read_password() -> str:
    """From the terminal (asked twice), else the first line of standard input (scripts)."""
    if sys.stdin.isatty():
        try:
            first = getpass.getpass("password: ")
            again = getpass.getpass("again: ")
        except (EOFError, KeyboardInterrupt):   # Ctrl-D or Ctrl-C at the prompt
            print(file=sys.stderr)              # the prompt's line ends; the error has a line of its own
            raise AccountError("no password given: nothing changed") from None
        if again != first:
            raise AccountError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def user_add(config: CareConfig, name: str) -> str:
    """Add a staff account (or change its password); the line to print."""
    check_name(name)
    password = read_password()
    with Database(config.database_url).connect() as conn:
        new = add_user(conn, name, password, datetime.now(timezone.utc))
    return f"{name}: {'added' if new else 'password changed'}; they log in at {config.public_url}/login"


def start_web(config: CareConfig, database: Database) -> WebServer:
    """The web view listening on `[web] listen`, or WebError when it cannot."""
    from .app import create_app
    host, port = split_listen(config.listen)
    try:   # asked first, so that a taken port is our one line, not uvicorn's log and exit
        with socket.create_server((host, port)):
            pass
    except OSError as error:
        raise WebError(f"web.listen: cannot listen on {config.listen} ({error.strerror or error})") from None
    web = WebServer(create_app(config, database), host, port)
    web.start()
    if not web.wait_ready(READY_WAIT_S):
        web.stop()
        raise WebError(f"web.listen: cannot listen on {config.listen} (is the port taken?)")
    return web
