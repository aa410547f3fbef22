"""The `dispenser` command. Bad input: one line on stderr, exit 2, nothing changed.

    common.py   what every command shares (errors, config, log, engine, input parsing)
    device.py   the device's commands: run, simulate, schedule, refill, log, report, status...
    clinic.py   `sync` and `clinic ...`: the MQTT tools of the device owner and the clinic
    fhir.py     `schedule from-fhir` and `export fhir`
    (`dispenser care ...` registers from dispenser/care/cli.py: the care service is its own extra)

The handlers never import each other; this module only assembles the parser.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from .. import __version__
from ..config import ConfigError
from ..schedule import ScheduleError
from ..store import StoreError
from .common import UserError, reader_gone

__all__ = ["UserError", "build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The `dispenser` command's parser (the docs test reads its commands from it)."""
    return _assemble()[0]


def _assemble() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    """The parser and the handler of each command."""
    from . import clinic, device
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", help="the TOML configuration file")
    common.add_argument("--db", metavar="PATH", help="the SQLite log (default: the config's [storage] db)")

    parser = argparse.ArgumentParser(prog="dispenser", description="A supervised smart pill dispenser.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    handlers: dict[str, Handler] = {}
    handlers.update(device.add_commands(sub, common))
    handlers.update(clinic.add_commands(sub, common))
    from ..care.cli import add_commands as add_care_commands  # argparse only: the care service is an extra
    handlers.update(add_care_commands(sub, common))
    return parser, handlers


def private_umask() -> None:
    """Whatever this process creates (the log and its -wal/-shm, keys, signed schedules)
    is its user's alone: the medication record and the clinic's key are no one else's.
    Only tightens: a stricter umask (the unit's UMask=0077) stays."""
    os.umask(os.umask(0o077) | 0o077)


def main(argv: list[str] | None = None) -> int:
    from ..opening import StartError
    private_umask()
    try:
        try:
            parser, handlers = _assemble()
            args = parser.parse_args(argv)
            return handlers[args.command](args)
        finally:
            if sys.stdout is not None:
                sys.stdout.flush()  # a reader gone (`| head -1`) shows here, not as an error at exit
    except BrokenPipeError:
        return reader_gone()
    except (UserError, ConfigError, StoreError, StartError) as error:
        from ..journal import under_journal
        # Under systemd the line that stops the service is an error (<3>) to `journalctl -p err`.
        print(f"{'<3>' if under_journal() else ''}dispenser: {error}", file=sys.stderr)
        return 2
    except ScheduleError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
