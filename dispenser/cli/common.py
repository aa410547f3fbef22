"""What every command shares: its one-line errors, the config, the log and engine, input parsing.

A handler raises UserError (or lets ConfigError, StoreError, StartError or ScheduleError
through) for bad input: `main` prints one line and exits 2, and nothing was changed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from .. import docjson
from ..config import Config, load_config
from ..timeutil import UTC

if TYPE_CHECKING:
    from ..engine import Engine
    from ..schedule import Schedule
    from ..store import Store



class UserError(Exception):
    """Something the person typed or pointed at is wrong; the text is the whole story."""


def now() -> datetime:
    return datetime.now(UTC)


def config_of(args: argparse.Namespace) -> Config:
    """The config `--config` names, else $DISPENSER_CONFIG or /etc/dispenser, else the defaults."""
    return load_config(getattr(args, "config", None))


def open_log(args: argparse.Namespace, config: Config, *, create: bool = True) -> Store:
    """The log `--db` (or the config) names; a missing one is refused unless `create`."""
    from ..opening import open_store
    return open_store(config, getattr(args, "db", None), create=create)


def open_engine(args: argparse.Namespace, config: Config) -> tuple[Engine, datetime]:
    """The engine over the log, and the time to give it (the clock's trust decides which)."""
    from ..opening import open_engine as build, trusted_now
    engine, trust = build(config, open_log(args, config))
    return engine, trusted_now(trust)


def schedule_in_force(args: argparse.Namespace, config: Config) -> Schedule:
    from ..schedule import parse_schedule
    store = open_log(args, config, create=False)
    try:
        version = store.current_schedule_version()
        document = store.schedule_document(version) if version is not None else None
        if document is None:
            raise UserError("no schedule is in force yet (use `dispenser schedule apply FILE`)")
        return parse_schedule(document, config.timezone, applied=True)
    finally:
        store.close()


def read_json(path: str) -> Any:
    """A JSON file, a duplicated key refused (docjson); any failure is one line."""
    try:
        return docjson.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot be read ({error})") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON ({error})") from None
    except RecursionError:
        raise UserError(f"{path}: not valid JSON (nested too deeply)") from None


def read_json_object(path: str) -> dict[str, Any]:
    document = read_json(path)
    if not isinstance(document, dict):
        raise UserError(f"{path}: not a JSON object")
    return document


def moment(text: str | None, tz: ZoneInfo | timezone, default: datetime) -> datetime:
    """An ISO time from the command line; one without an offset is local to `tz`."""
    if text is None:
        return default
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"{text!r} is not an ISO date and time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(UTC)


def positive(value: int, name: str, limit: int) -> int:
    if not 1 <= value <= limit:
        raise UserError(f"--{name} must be from 1 to {limit}")
    return value


def reader_gone() -> int:
    """The reader of stdout closed it (`dispenser log --json | head -1`): stop quietly.

    What was left unwritten goes to /dev/null, so Python's own flush at exit cannot fail
    again; 141 (128 + SIGPIPE) is what a shell reports for a program stopped by a closed pipe.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
    return 141
