"""`dispenser ...` run in the test's own process: the command's output, errors and exit code
as `subprocess.run` gives them, without a new interpreter's imports (~0.3 s of CPU each).

For the tests where the command's work is under test, not the process around it. Pipes,
signals, exit at a signal, systemd and the daemon keep real subprocesses (see
tests/test_command_line.py, tests/test_journal.py, tests/test_systemd.py).

    result = dispenser("schedule", "apply", path, "--db", db)
    assert result.returncode == 0, result.stderr

What a process would start fresh is set and put back around the call: argv, stdin,
stdout, stderr, the environment (`env` replaces it, as for subprocess), the working
folder (`cwd`), the umask (the command tightens it: cli.private_umask), the signal
handlers and the loggers the commands configure. An exception escaping the command is a traceback on stderr and
exit 1, as Python's own top level would make it.
"""
from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from dispenser.cli import main

_LOGGERS = ("", "dispenser", "dispenser.sync", "dispenser.events")


def _stream(data: bytes = b"") -> io.TextIOWrapper:
    """A text stream with a `.buffer`, as sys.stdout is (some commands write bytes)."""
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", write_through=True)


def _text(stream: io.TextIOWrapper) -> str:
    stream.flush()
    raw = stream.buffer.getvalue()  # type: ignore[attr-defined]
    return raw.decode("utf-8", errors="replace").replace("\r\n", "\n")


@contextmanager
def _loggers_kept() -> Iterator[None]:
    saved = []
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.level, logger.propagate))
    try:
        yield
    finally:
        for logger, handlers, level, propagate in saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate


@contextmanager
def _signals_kept() -> Iterator[None]:
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


@contextmanager
def _environment(env: Mapping[str, str] | None) -> Iterator[None]:
    if env is None:
        yield
        return
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def _folder(cwd: str | Path | None) -> Iterator[None]:
    if cwd is None:
        yield
        return
    saved = os.getcwd()
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved)


@contextmanager
def _umask(mask: int | None) -> Iterator[None]:
    saved = os.umask(0o022 if mask is None else mask)
    if mask is None:
        os.umask(saved)  # only read it: the caller's umask stays, as a child inherits it
    try:
        yield
    finally:
        os.umask(saved)


def dispenser(*args: object, input: str | None = None, env: Mapping[str, str] | None = None,  # noqa: A002
              cwd: str | Path | None = None, umask: int | None = None,
              **_ignored: object) -> subprocess.CompletedProcess:
    """`python -m dispenser *args` in this process; `timeout`, `capture_output`, `text` are accepted and moot."""
    argv = [str(arg) for arg in args]
    out, err, stdin = _stream(), _stream(), _stream((input or "").encode())
    with ExitStack() as stack:
        stack.enter_context(_loggers_kept())
        stack.enter_context(_signals_kept())
        stack.enter_context(_environment(env))
        stack.enter_context(_folder(cwd))
        stack.enter_context(_umask(umask))
        saved = sys.stdin, sys.stdout, sys.stderr, sys.argv
        sys.stdin, sys.stdout, sys.stderr, sys.argv = stdin, out, err, ["dispenser", *argv]
        try:
            code = main(argv)
        except SystemExit as stop:
            if stop.code is None or isinstance(stop.code, int):
                code = stop.code or 0
            else:
                print(stop.code, file=err)
                code = 1
        except Exception:  # noqa: BLE001 - what Python's top level does with it
            traceback.print_exc(file=err)
            code = 1
        finally:
            sys.stdin, sys.stdout, sys.stderr, sys.argv = saved
    return subprocess.CompletedProcess([sys.executable, "-m", "dispenser", *argv], code, _text(out), _text(err))
