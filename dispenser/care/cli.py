"""`dispenser care serve / status / ack / link / export fhir / user add`: the argparse part, and the handlers.

Imported by the `dispenser` command to register `care`; it imports nothing heavy at the
top (the daemon's process builds the same parser), and without the `care` extra every
`care` command says in one line how to install it. Bad input: one line, exit 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from datetime import datetime, timezone
from typing import Any, Callable

Handler = Callable[[argparse.Namespace], int]
READY_WAIT_S = 30.0


class CareError(Exception):
    """Bad input or a database that cannot be used: the text is the whole story."""


def add_commands(sub: Any, common: argparse.ArgumentParser) -> dict[str, Handler]:
    """Add `care` to the `dispenser` subparsers; return {"care": handler}."""
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", metavar="PATH",
                        help="care.toml (default: $DISPENSER_CARE_CONFIG, else /etc/dispenser/care.toml)")
    care = sub.add_parser("care", help="the care service: ingest, notify people, acknowledge")
    actions = care.add_subparsers(dest="action", required=True, metavar="ACTION")
    serve = actions.add_parser("serve", parents=[config], help="ingest every device's events and notify, until stopped")
    serve.add_argument("--workers", type=int, default=1, metavar="N", help="ingest processes on the shared subscription")
    status = actions.add_parser("status", parents=[config], help="devices: online or not, last event, open alerts")
    status.add_argument("--json", action="store_true")
    ack = actions.add_parser("ack", parents=[config], help="acknowledge an alert: its escalation stops")
    ack.add_argument("alert_id", metavar="ALERT_ID")
    ack.add_argument("--by", metavar="NAME", default=None, help="who acknowledges (default: the login name)")
    link = actions.add_parser("link", parents=[config], help="the family's read-only link to a patient's page")
    link.add_argument("device", metavar="DEVICE")
    link.add_argument("--revoke", action="store_true", help="revoke every link to that patient instead")
    export = actions.add_parser("export", help="a device's stored events in another format")
    formats = export.add_subparsers(dest="format", required=True, metavar="FORMAT")
    fhir = formats.add_parser("fhir", parents=[config], help="a FHIR R4 Bundle on stdout (docs/FHIR.md)")
    fhir.add_argument("--device", required=True, metavar="ID", help="the device whose events")
    fhir.add_argument("--since", metavar="ISO", help="only what changed at or after this time (UTC without an offset)")
    user = actions.add_parser("user", parents=[config], help="staff who log in to the web view")
    user.add_argument("user_action", choices=["add"], metavar="add")
    user.add_argument("name", metavar="NAME", help="the password is read from the terminal, or stdin's first line")
    return {"care": cmd_care}


def cmd_care(args: argparse.Namespace) -> int:
    from . import missing_extra
    missing = missing_extra()
    if missing is not None:
        return _fail(f"`dispenser care` needs the care extra (missing: {missing}): pip install 'dispenser[care]' (in a clone: pip install '.[care]')")
    from .config import CareConfigError
    from .database import DatabaseError
    from .fhir_export import ExportError
    from .web.accounts import AccountError
    from .web.command import WebError
    handlers: dict[str, Handler] = {"serve": care_serve, "status": care_status, "ack": care_ack, "link": care_link,
                                    "export": care_export, "user": care_user}
    try:
        return handlers[args.action](args)
    except (CareError, CareConfigError, DatabaseError, ExportError, AccountError, WebError) as error:
        return _fail(str(error))


def _fail(message: str) -> int:
    print(f"dispenser: {message}", file=sys.stderr)
    return 2


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _config(args: argparse.Namespace) -> Any:
    from .config import load_care_config
    return load_care_config(args.config)


def _connect(config: Any, *, existing: bool = False) -> Any:
    """A connection; `existing` for a command that only reads or acknowledges what `care serve`
    stored: a missing SQLite file is one line, not an empty database made (maybe in /var/lib)."""
    from pathlib import Path
    from .database import Database
    if existing and config.database_url.startswith("sqlite:///"):
        path = config.database_url[len("sqlite:///"):]
        if path != ":memory:" and not Path(path).is_file():
            raise CareError(f"{path}: no care database there (`dispenser care serve` makes it; "
                            f"[database] url in {config.source})")
    return Database(config.database_url).connect()


# -- serve -------------------------------------------------------------------------------


def care_serve(args: argparse.Namespace) -> int:
    """Until SIGTERM or Ctrl-C: the workers, the ladder's timer."""
    from .message import plural
    from ..mqtt_client import TlsFilesError
    from .notify import check_urls
    from .serve import CareService
    config = _config(args)
    if config.mqtt is None:
        raise CareError(f"{config.source}: no [mqtt] table: there is no broker to ingest from")
    if not 1 <= args.workers <= 64:
        raise CareError("--workers must be from 1 to 64")
    bad = check_urls([url for patient in config.patients for url in (*patient.notify, *patient.clinic_notify)])
    if bad is not None:
        raise CareError(f"{config.source}: apprise cannot use the URL {bad.split('://')[0]}://... (see apprise's URL list)")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    try:
        service = CareService(config, args.workers, processes=True)   # a process per worker: no shared GIL
    except TlsFilesError as error:
        raise CareError(str(error)) from None
    from .web.command import start_web
    web = start_web(config, service.database)   # the web view on [web] listen (docs/CARE.md)
    print(f"dispenser care: web view at {config.public_url} (listening on {config.listen})", file=sys.stderr)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    service.start()
    where = f"{config.mqtt.host}:{config.mqtt.port}"
    try:
        if service.wait_ready(READY_WAIT_S):
            print(f"dispenser care: {plural(args.workers, 'worker')} subscribed at {where}, database "
                  f"{config.database_url.split('://')[0]}", file=sys.stderr, flush=True)
        else:
            print(f"dispenser care: not subscribed at {where} yet; retrying", file=sys.stderr, flush=True)
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()
        web.stop()
    return 0


# -- status ------------------------------------------------------------------------------


def status_report(conn: Any, config: Any, now: datetime, only: str | None = None) -> dict:
    """Every device heard or configured (or `only` that one): online since when, last event, open alerts."""
    devices: dict[str, dict] = {}
    where, params = (" WHERE device = ?", (only,)) if only is not None else ("", ())
    for device, online, since, heard, seq, kind, at in conn.execute(
            "SELECT device, online, status_since, last_heard, last_seq, last_type, last_at FROM devices"
            + where + " ORDER BY device", params):
        devices[device] = {"device": device, "online": None if online is None else bool(online),
                           "since": since, "last_heard": heard,
                           "last_event": None if seq is None else {"seq": seq, "type": kind, "at": at}}
    for patient in config.patients:
        if only is None or patient.device == only:
            devices.setdefault(patient.device, {"device": patient.device, "online": None, "since": None,
                                                "last_heard": None, "last_event": None})
    for entry in devices.values():
        patient = config.patient(entry["device"])
        entry["patient"] = patient.name if patient else None
        entry["open_alerts"] = []
    for alert_id, device, kind, severity, at, rung, notified, escalated in conn.execute(
            "SELECT alert_id, device, kind, severity, at, rung, notified_at, escalated_at FROM alerts"
            " WHERE acked_at IS NULL AND resolved_at IS NULL" + where.replace("WHERE", "AND") + " ORDER BY at, alert_id",
            params):
        if device in devices:
            devices[device]["open_alerts"].append({
                "alert_id": alert_id, "kind": kind, "severity": severity, "at": at,
                "told": ["nobody yet", "people", "clinic"][min(rung, 2)],
                "notified_at": notified, "escalated_at": escalated})
    return {"at": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "devices": list(devices.values())}


def care_status(args: argparse.Namespace) -> int:
    from .message import plural
    config = _config(args)
    with _connect(config, existing=True) as conn:
        report = status_report(conn, config, _now())
    if args.json:
        print(json.dumps(report, indent=1, ensure_ascii=False))
        return 0
    if not report["devices"]:
        print("no devices heard or configured yet")
    for entry in report["devices"]:
        state = {True: "online", False: "offline", None: "not heard"}[entry["online"]]
        if entry["online"] is None and entry["last_heard"]:
            state = f"heard {entry['last_heard']}"
        elif entry["since"]:
            state += f" since {entry['since']}"
        last = entry["last_event"]
        last_text = f"last event seq {last['seq']} {last['type']} at {last['at']}" if last else "no event yet"
        name = f" ({entry['patient']})" if entry["patient"] else " (no [[patient]] in the config)"
        print(f"{entry['device']}{name}: {state}; {last_text}; {plural(len(entry['open_alerts']), 'open alert')}")
        for alert in entry["open_alerts"]:
            print(f"  {alert['alert_id']}  {alert['severity']:<8} {alert['kind']}  at {alert['at']}, "
                  f"told: {alert['told']}")
    return 0


# -- ack ---------------------------------------------------------------------------------


def acknowledge(conn: Any, alert_id: str, by: str, now: datetime) -> tuple[bool, str | None, str | None]:
    """(found, acked_by, acked_at) after acknowledging; an alert acknowledged before keeps its first ack."""
    from ..timeutil import format_at
    with conn.transaction():
        conn.execute("UPDATE alerts SET acked_at = ?, acked_by = ? WHERE alert_id = ? AND acked_at IS NULL",
                     (format_at(now), by, alert_id))
        rows = conn.execute("SELECT acked_by, acked_at FROM alerts WHERE alert_id = ?", (alert_id,))
    if not rows:
        return False, None, None
    return True, rows[0][0], rows[0][1]


def care_ack(args: argparse.Namespace) -> int:
    import getpass
    config = _config(args)
    by = args.by if args.by is not None else getpass.getuser()
    if not by.strip() or len(by) > 100 or not by.isprintable():
        raise CareError("--by must be a name of 1 to 100 printable characters")
    now = _now()
    with _connect(config, existing=True) as conn:
        found, acked_by, acked_at = acknowledge(conn, args.alert_id, by, now)
    if not found:
        raise CareError(f"no alert {args.alert_id!r} (`dispenser care status` lists the open ones)")
    from ..timeutil import format_at
    if acked_at != format_at(now):      # acknowledged before: the first acknowledgement stays
        print(f"{args.alert_id}: already acknowledged by {acked_by} at {acked_at}; nothing changed")
        return 0
    print(f"{args.alert_id}: acknowledged by {acked_by} at {acked_at}; its escalation has stopped")
    return 0


def care_user(args: argparse.Namespace) -> int:
    """`care user add NAME`: a staff account for the web view."""
    from .web.command import user_add
    print(user_add(_config(args), args.name))
    return 0


# -- link --------------------------------------------------------------------------------


def care_link(args: argparse.Namespace) -> int:
    from .message import plural
    from ..timeutil import format_at
    config = _config(args)
    if config.patient(args.device) is None:
        raise CareError(f"{args.device!r} is no [[patient]] device in {config.source}")
    from .tokens import issue_family_link
    with _connect(config) as conn:
        if args.revoke:
            with conn.transaction():
                rows = conn.execute("UPDATE links SET revoked = ? WHERE device = ? AND revoked IS NULL"
                                    " RETURNING device", (format_at(_now()), args.device))
            print(f"{args.device}: {plural(len(rows), 'link')} revoked")
            return 0
        token = issue_family_link(conn, args.device, _now())   # the database keeps only its sha256
    print(f"{config.public_url}/family/{token}")
    return 0


# -- export ------------------------------------------------------------------------------


def care_export(args: argparse.Namespace) -> int:
    """`care export fhir --device ID [--since ISO]`: the Bundle on stdout (fhir_export.py)."""
    from ..fhir_out import parse_since
    from .fhir_export import export_device
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError:
        raise CareError(f"--since: {args.since!r} is not an ISO date and time") from None
    from pathlib import Path
    from .database import Database
    config = _config(args)
    database = Database(config.database_url, create=False)  # a read: nothing made, nothing changed
    if database.dialect == "sqlite" and not Path(database.path).is_file():
        raise CareError(f"{database.path}: no care database there (`dispenser care serve` makes it)")
    with database.connect() as conn:
        bundle = export_device(conn, config, args.device, since=since, now=_now())
    print(json.dumps(bundle, indent=1, ensure_ascii=False))
    return 0
