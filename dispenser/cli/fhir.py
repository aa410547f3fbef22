"""`dispenser schedule from-fhir` and `dispenser export fhir`: FHIR R4 in and out (docs/FHIR.md).

The conversions are pure (fhir_in.py, fhir_out.py); this reads the file or the log, and
writes the result on stdout. Bad input: one line per problem on stderr, exit 2.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..config import load_config
from .common import open_log, read_json
from ..vocabulary import EventType

# The conversions are imported by their command only: the parser is built for every
# command, `dispenser run` included, and fhir_in/fhir_out cost 2.5 ms of every start.


def add_commands(sub: argparse._SubParsersAction, schedule_actions: argparse._SubParsersAction,
                 common: argparse.ArgumentParser) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Add `schedule from-fhir` and `export fhir`; return {command: handler} for the top level."""
    from_fhir = schedule_actions.add_parser(
        "from-fhir", parents=[common], help="a FHIR R4 Bundle or MedicationRequest -> a schedule document on stdout")
    from_fhir.add_argument("file")
    from_fhir.add_argument("--device", metavar="ID", help="the device it is for (device_id)")
    from_fhir.add_argument("--timezone", metavar="NAME",
                           help="the person's IANA time zone (default: the config's [device] timezone)")
    export = sub.add_parser("export", help="the log in another format")
    formats = export.add_subparsers(dest="action", required=True, metavar="FORMAT")
    fhir = formats.add_parser("fhir", parents=[common], help="the log as a FHIR R4 Bundle on stdout")
    fhir.add_argument("--since", metavar="ISO", help="only what changed at or after this time (UTC without an offset)")
    return {"export": cmd_export}


def cmd_schedule_from_fhir(args: argparse.Namespace) -> int:
    from ..fhir_in import FhirError, schedule_from_fhir
    config = load_config(args.config)
    zone = args.timezone
    if zone is None:
        if config.source == "built-in defaults":
            raise FhirError(["--timezone: is required: name the person's time zone (or give a config "
                             "with [device] timezone)"])
        zone = config.timezone
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise FhirError([f"--timezone: {zone!r} is not an IANA time zone name"]) from None
    document = schedule_from_fhir(read_json(args.file), now=datetime.now(timezone.utc), timezone=zone,
                                  device_id=args.device, compartments=config.compartments)
    print(json.dumps(document, indent=1, ensure_ascii=False))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..fhir_in import FhirError
    from ..fhir_out import export_bundle, medications_from_documents, parse_since
    config = load_config(args.config)
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError:
        raise FhirError([f"--since: {args.since!r} is not an ISO date and time"]) from None
    store = open_log(args, config, create=False)
    try:
        events = list(store.events())
        versions = dict.fromkeys(e["data"].get("version") for e in events if e["type"] == EventType.SCHEDULE_APPLIED)
        documents = [store.schedule_document(v) for v in versions if isinstance(v, int)]
    finally:
        store.close()
    device_id = events[0]["device_id"] if events else config.device_id
    bundle = export_bundle(events, device_id, medications=medications_from_documents(d for d in documents if d),
                           since=since, timestamp=datetime.now(timezone.utc))
    print(json.dumps(bundle, indent=1, ensure_ascii=False))
    return 0
