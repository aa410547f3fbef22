"""The device's commands: the daemon, the simulator, schedules, refills, the log, reports, status."""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..config import Config, load_config
from ..schedule import load_schedule_file, parse_schedule
from ..scheduler import doses_between
from ..timeutil import UTC, format_utc, parse_utc
from .common import (UserError, config_of, moment as parse_moment, now as wall_now, open_engine, open_log,
                     positive, read_json, reader_gone, schedule_in_force)
from ..vocabulary import EventType, ScheduleSource

if TYPE_CHECKING:
    from ..hardware import Hardware
    from ..live import Terminal
    from ..store import Store



def add_commands(sub: Any, common: argparse.ArgumentParser) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Add the device's commands to the `dispenser` subparsers; return {name: handler}."""
    daemon = argparse.ArgumentParser(add_help=False)
    daemon.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        help="the system log's level (default: the config's [logging] level, else info)")
    sub.add_parser("run", parents=[common, daemon], help="the daemon (real or simulated hardware, per the config)")

    simulate = sub.add_parser("simulate", parents=[common, daemon], help="run on simulated hardware")
    simulate.add_argument("--scenario", metavar="FILE", help="run a scenario headless on a virtual clock")
    simulate.add_argument("--speed", type=float, default=1.0, help="virtual seconds per real second")

    schedule = sub.add_parser("schedule", help="validate, show or apply a schedule")
    schedule_sub = schedule.add_subparsers(dest="action", required=True, metavar="ACTION")
    validate = schedule_sub.add_parser("validate", parents=[common], help="check a schedule file")
    validate.add_argument("file")
    show = schedule_sub.add_parser("show", parents=[common], help="list the doses of the coming days")
    show.add_argument("--file", help="a schedule file instead of the schedule in force")
    show.add_argument("--from", dest="start", metavar="ISO", help="first moment (default: now)")
    show.add_argument("--days", type=int, default=7)
    show.add_argument("--json", action="store_true")
    apply = schedule_sub.add_parser("apply", parents=[common], help="put a schedule file in force")
    apply.add_argument("file")

    refill = sub.add_parser("refill", parents=[common], help="record that a compartment was refilled")
    refill.add_argument("medication")
    refill.add_argument("count", type=int)

    log = sub.add_parser("log", parents=[common], help="the adherence log; `log verify` checks its chain")
    log.add_argument("verify", nargs="?", choices=["verify"], help="check the hash chain")
    log.add_argument("--rules", action="store_true",
                     help="with verify: also judge every release against the safety rules (CONTRACT section 6)")
    log.add_argument("--since", metavar="ISO")
    log.add_argument("--json", action="store_true")

    report = sub.add_parser("report", parents=[common], help="adherence per medication")
    report.add_argument("--days", type=int, default=30)
    report.add_argument("--json", action="store_true")

    sub.add_parser("status", parents=[common], help="next dose, stock, backlog, schedule version")

    from .fhir import add_commands as add_fhir_commands  # schedule from-fhir, export fhir
    COMMANDS.update(add_fhir_commands(sub, schedule_sub, common))

    install = sub.add_parser("install-service", parents=[common],
                             help="install the systemd unit (as root); --config is copied to /etc/dispenser")
    install.add_argument("--venv-bin", help="the folder holding this venv's `dispenser` (default: this one's)")
    install.add_argument("--dry-run", action="store_true", help="print the unit and the commands only")

    selftest = sub.add_parser("selftest", parents=[common], help="check the parts after assembly")
    selftest.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the button")
    selftest.add_argument("--yes", action="store_true", help="the compartments are empty: move them "
                          "(on the simulated device: and do not wait for a press)")
    return COMMANDS


# -- commands ----------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from ..runner import StartError, build_daemon, run_daemon, stop_on_signals
    from ..service import Notifier
    config = config_of(args)
    _system_log(args, config)
    try:
        daemon = build_daemon(config, args.db, simulated=False, notifier=Notifier())
    except StartError as error:
        raise UserError(str(error)) from None
    stop_on_signals(daemon)
    run_daemon(daemon)
    return 0


def _system_log(args: argparse.Namespace, config: Config) -> None:
    """The daemon's lines on stderr, for the journal (journal.py): once, where it starts."""
    from ..journal import configure
    configure(args.log_level or config.log_level)


def cmd_simulate(args: argparse.Namespace) -> int:
    if not args.scenario:
        return simulate_live(args)
    return simulate_scenario(args)


def simulate_live(args: argparse.Namespace) -> int:
    from ..daemon import ScaledClock
    from ..live import Terminal, run_live
    from ..runner import StartError, build_daemon, stop_on_signals
    if not args.speed > 0:
        raise UserError("--speed must be more than 0")
    config = config_of(args)
    _system_log(args, config)
    holder: list[Terminal] = []

    def on_move(compartment: int, state: str) -> None:
        if holder:
            holder[0].on_move(compartment, state)

    try:
        daemon = build_daemon(config, args.db, simulated=True, demo=True, on_move=on_move)
    except StartError as error:
        raise UserError(str(error)) from None
    clock = ScaledClock(wall_now(), args.speed)
    terminal = Terminal(daemon, clock, args.speed)
    holder.append(terminal)
    stop_on_signals(daemon)
    run_live(daemon, clock, args.speed, terminal)
    return reader_gone() if terminal.unread else 0


def simulate_scenario(args: argparse.Namespace) -> int:
    from ..scenario import ScenarioError, ScenarioRun, load_scenario
    config = config_of(args) if args.config or args.db else Config()
    try:
        scenario = load_scenario(args.scenario, config.timezone)
    except ScenarioError as error:
        raise UserError(str(error)) from None
    if args.db:
        Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    out = sys.stdout
    run = ScenarioRun(scenario, config, args.db,
                      emit=lambda event: print(json.dumps(event, ensure_ascii=False), file=out))
    try:
        run.run()
    except ScenarioError as error:
        raise UserError(str(error)) from None
    finally:
        run.close()
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    if args.action == "from-fhir":
        from .fhir import cmd_schedule_from_fhir
        return cmd_schedule_from_fhir(args)
    return {"validate": schedule_validate, "show": schedule_show, "apply": schedule_apply}[args.action](args)


def schedule_validate(args: argparse.Namespace) -> int:
    config = config_of(args) if args.config else Config()
    schedule = load_schedule_file(args.file, config.timezone)
    meds = len(schedule.medications)
    print(f"{args.file}: valid, version {schedule.version}, {meds} medication{'s' * (meds != 1)}, "
          f"timezone {schedule.timezone}")
    return 0


def schedule_show(args: argparse.Namespace) -> int:
    config = config_of(args) if args.config or not args.file else Config()
    if args.file:
        schedule = load_schedule_file(args.file, config.timezone)
    else:
        schedule = schedule_in_force(args, config)
    days = positive(args.days, "days", 3660)
    start = parse_moment(args.start, schedule.tz, wall_now())
    try:
        local_start = start.astimezone(schedule.tz)
        local_end = (local_start.replace(tzinfo=None) + timedelta(days=days)).replace(tzinfo=schedule.tz)
        end = local_end.astimezone(UTC)
    except OverflowError:
        raise UserError(f"--from {args.start} and --days {days} reach past the year 9999") from None
    doses = doses_between(schedule, start, end)
    if args.json:
        print(json.dumps([{
            "medication_id": d.medication_id, "scheduled_at": format_utc(d.scheduled_at),
            "quantity": d.quantity, "window_start": format_utc(d.window_start),
            "window_end": format_utc(d.window_end)} for d in doses], indent=1))
        return 0
    for dose in doses:
        local = dose.scheduled_at.astimezone(schedule.tz)
        opens = dose.window_start.astimezone(schedule.tz).strftime("%H:%M")
        closes = dose.window_end.astimezone(schedule.tz).strftime("%H:%M")
        print(f"{local:%a %Y-%m-%d %H:%M}  {dose.medication_id:<20} x{dose.quantity}  "
              f"compartment {dose.compartment}  window {opens}-{closes}")
    if not doses:
        print("no doses in that time")
    return 0


def schedule_apply(args: argparse.Namespace) -> int:
    config = config_of(args)
    document = read_json(args.file)
    parse_schedule(document, config.timezone)  # a bad file changes nothing, not even the log
    engine, now = open_engine(args, config)
    try:
        engine.tick(now)  # a long catch-up first, slice by slice (RULES.md, Downtime)
        outcome = engine.apply_schedule(now, document, ScheduleSource.LOCAL)
    finally:
        engine.store.close()
    if outcome.feedback != "applied":
        raise UserError(f"schedule refused ({outcome.detail['reason']}): {'; '.join(outcome.detail['problems'])}")
    print(f"schedule version {document['version']} applied; the clinic is told of this local change "
          "(alert schedule_applied_locally), and its next schedule replaces it")
    return 0


def cmd_refill(args: argparse.Namespace) -> int:
    config = config_of(args)
    if not 0 <= args.count <= 1000:
        raise UserError("COUNT must be from 0 to 1000")
    engine, now = open_engine(args, config)
    try:
        model = engine.view
        medication = model.medication(args.medication)
        if medication is None:
            known = ", ".join(item.medication_id for item in model.stock) \
                if model.schedule_version is not None else "none: no schedule in force"
            raise UserError(f"{args.medication!r} is not in the schedule in force (known: {known})")
        engine.tick(now)  # a long catch-up first, slice by slice (RULES.md, Downtime)
        engine.refill(now, args.medication, args.count)
        compartment = medication.compartment
    finally:
        engine.store.close()
    print(f"compartment {compartment} ({args.medication}) now holds {args.count}")
    return 0


def _verify_rules(store: Store, config: Config) -> int:
    """The log judged by the checker written from the contract, not by the rules that wrote it."""
    from ..logcheck import check_store
    violations = check_store(store, until=wall_now(), default_timezone=config.timezone)
    for violation in violations[:20]:
        print(f"log verify --rules: {violation}", file=sys.stderr)
    if violations:
        print(f"log verify --rules: {len(violations)} violation(s)", file=sys.stderr)
        return 1
    print(f"log verified: {store.event_count()} events, hash chain intact, every release within the safety rules")
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    config = config_of(args)
    if args.rules and not args.verify:
        raise UserError("--rules goes with `dispenser log verify`")
    store = open_log(args, config, create=False)
    try:
        if args.verify:
            ok, seq, reason = store.verify()
            if not ok:
                print(f"log verify: seq {seq}: {reason}", file=sys.stderr)
                return 1
            if args.rules:
                return _verify_rules(store, config)
            print(f"log verified: {store.event_count()} events, hash chain intact")
            return 0
        since = parse_moment(args.since, UTC, datetime.min.replace(tzinfo=UTC)) if args.since else None
        for event in store.events(since_seq=store.first_seq_at(since) - 1 if since is not None else 0):
            if since is not None and parse_utc(event["at"]) < since:
                continue
            print(json.dumps(event, ensure_ascii=False) if args.json else _log_line(event))
    finally:
        store.close()
    return 0


def _log_line(event: dict) -> str:
    data = event["data"]
    about = " ".join(f"{key}={value}" for key, value in data.items()
                     if key in ("medication_id", "scheduled_at", "quantity", "reason", "kind", "severity",
                                "count", "version", "source", "remaining"))
    if event["type"] == EventType.ALERT_RAISED:
        about += f"  \"{data['message']}\""
    return f"{event['seq']:>6}  {event['at']}  {event['type']:<24} {about}"


def cmd_report(args: argparse.Namespace) -> int:
    from ..report import OUTCOMES, adherence, checkin_trend, window_events
    config = config_of(args)
    days = positive(args.days, "days", 3660)
    store = open_log(args, config, create=False)
    end = wall_now()
    start = end - timedelta(days=days)
    try:
        events = window_events(store, start)  # only its window of the log (report.py)
        version = store.current_schedule_version()
        tz_name = parse_schedule(store.schedule_document(version), config.timezone, applied=True).timezone \
            if version else config.timezone
    finally:
        store.close()
    from zoneinfo import ZoneInfo
    reports = adherence(events, start, end, ZoneInfo(tz_name))
    trend = checkin_trend(events, start, end)
    if args.json:
        print(json.dumps({"from": format_utc(start), "to": format_utc(end),
                          "medications": [r.as_dict() for r in reports.values()],
                          "checkins": trend.__dict__}, indent=1))
        return 0
    print(f"Adherence, last {days} days")
    header = f"{'medication':<20}" + "".join(f"{name.replace('_', ' '):>15}" for name in OUTCOMES) \
        + f"{'days all taken':>16}"
    print(header)
    for report in reports.values():
        share = "-" if report.days_all_taken is None else f"{report.days_all_taken:.0%}"
        line = f"{report.medication_id:<20}" + "".join(f"{getattr(report, n):>15}" for n in OUTCOMES) + f"{share:>16}"
        if report.missed_unavailable:
            line += f"   {report.missed_unavailable} missed while the dispenser was off or waiting for the time"
        if report.release_failures:
            line += f"   {report.release_failures} release(s) failed (a dose given on a retry counts as given)"
        if report.prn_released or report.prn_denied:
            line += f"   as needed: {report.prn_released} given, {report.prn_denied} refused"
        print(line)
    if trend.count:
        print(f"Check-ins: {trend.count}, mean mood {trend.mood_mean} of 5, side effects {trend.side_effects}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from ..opening import open_engine as build_engine, trusted_now
    config = config_of(args)
    store = open_log(args, config, create=False)
    try:
        engine, trust = build_engine(config, store, read_only=True)  # no copy of the fold: it only looks
        now = trusted_now(trust)
        model = engine.look(now)  # logs nothing: status only reads
        version = model.schedule_version
        print(f"device        {config.device_id} ({config.backend}, {config.compartments} compartments)")
        print(f"clock         {trust.describe()}")
        print(f"schedule      {'version ' + str(version) if version is not None else 'none in force'}")
        if version is not None:
            first = model.due[0] if model.due else model.next_dose
            if first:
                print(f"next dose     {first.medication_id} x{first.quantity} at "
                      f"{first.scheduled_at.astimezone(model.timezone):%a %H:%M} (compartment {first.compartment})"
                      f"{' - due now' if model.due else ''}")
            for item in model.stock:
                print(f"stock         compartment {item.compartment}: {item.medication_id} {item.count}")
        print(f"outbox        {store.backlog()} event(s) waiting to be sent")
        broker = store.meta_get("broker")
        print(f"broker        {'not configured' if not config.mqtt else broker or 'never connected'}")
        if config.mqtt and config.mqtt.get("tls") is False:
            print("broker link   plain MQTT, no TLS ([mqtt] tls = false)")
    finally:
        store.close()
    return 0


def cmd_install_service(args: argparse.Namespace) -> int:
    """Write the unit, create the service user and enable the service: the steps of docs/INSTALL.md."""
    import os
    import pwd
    import subprocess
    import tempfile
    from ..service import DEFAULT_CONFIG, DEFAULT_VENV_BIN, install_steps, render_unit
    here = str(Path(sys.executable).parent)
    # Through the symlink when it leads here, so that switching it (INSTALL.md, section 8) switches the service.
    same = os.path.realpath(DEFAULT_VENV_BIN) == os.path.realpath(here)
    venv_bin = args.venv_bin or (DEFAULT_VENV_BIN if same else here)
    try:
        unit = render_unit(venv_bin)
    except ValueError as error:
        raise UserError(str(error)) from None
    temporary = _temporary_folder(venv_bin)
    if temporary:
        raise UserError(f"{venv_bin} is in {temporary}, a temporary folder the service cannot see (PrivateTmp=) "
                        "and a reboot may empty: install into a venv under /opt/dispenser (docs/INSTALL.md, "
                        "section 3), or name one with --venv-bin")
    # The service runs with this config: without it, or with a broken one, it could not start.
    source = args.config or DEFAULT_CONFIG
    try:
        os.stat(source)
    except FileNotFoundError:
        raise UserError(f"no configuration at {source}: write it first (docs/INSTALL.md, section 4), "
                        "or give one with --config FILE to install it there") from None
    except OSError as error:
        raise UserError(f"{source}: cannot be read ({error.strerror}); run as root (sudo)") from None
    load_config(source)  # a broken config is refused before anything is installed
    try:
        pwd.getpwnam("dispenser")
        user_exists = True
    except KeyError:
        user_exists = False
    with tempfile.NamedTemporaryFile("w", suffix=".service", delete=False) as handle:
        handle.write(unit)
    steps = install_steps(handle.name, config_source=args.config, user_exists=user_exists)
    if args.dry_run:
        print(unit)
        for step in steps:
            print("$ " + " ".join(step))
        os.unlink(handle.name)
        return 0
    if os.geteuid() != 0:
        os.unlink(handle.name)
        raise UserError("install-service must run as root (sudo); --dry-run shows what it would do")
    try:
        for step in steps:
            print("$ " + " ".join(step))
            result = subprocess.run(step)
            if result.returncode != 0:
                raise UserError(f"`{' '.join(step)}` failed with exit code {result.returncode}")
    finally:
        os.unlink(handle.name)
    print("installed: check it with `systemctl status dispenser` and `journalctl -u dispenser -f`")
    return 0


def _temporary_folder(path: str) -> str | None:
    """The temporary folder `path` is in (the unit's PrivateTmp= hides them), or None."""
    import tempfile
    folders = {"/tmp", "/var/tmp", "/dev/shm", os.path.realpath(tempfile.gettempdir())}
    for candidate in (os.path.normpath(path), os.path.realpath(path)):
        for folder in sorted(folders):
            if candidate == folder or candidate.startswith(folder.rstrip("/") + "/"):
                return folder
    return None


def cmd_selftest(args: argparse.Namespace) -> int:
    import contextlib
    from ..runner import StartError, build_hardware_for
    from ..inputs import Input, Press
    from ..selftest import keys_as_button, run_selftest
    config = config_of(args)
    if config.backend == "pi" and not args.yes:
        raise UserError("every compartment opens once: empty them all, then run `dispenser selftest --yes`")
    simulated = config.backend == "sim"
    buttons: list[Callable[[Input], None]] = []

    def build(put: Callable[[Input], None]) -> Hardware:
        buttons.append(put)
        try:
            return build_hardware_for(config, put, simulated=False)
        except StartError as error:
            raise UserError(str(error)) from None

    def say(line: str) -> None:
        print(line, flush=True)

    from ..clocktrust import trust_for
    if simulated:
        why = ("no configuration (--config, $DISPENSER_CONFIG, /etc/dispenser/config.toml)"
               if config.source == "built-in defaults" else f'{config.source}: [hardware] backend = "sim"')
        say(f"info  {why}: this tests the simulated device, not real hardware")
    say(f"info  clock: {trust_for(config).describe()}")
    def press() -> None:
        if buttons:
            buttons[0](Press())

    keys = keys_as_button(press) \
        if simulated and not args.yes else contextlib.nullcontext()
    with keys:
        ok = run_selftest(build, say, wait_s=args.wait,
                          button="space or enter (the simulated button)" if simulated else "the button",
                          await_press=not (simulated and args.yes))
    return 0 if ok else 1


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "install-service": cmd_install_service,
    "selftest": cmd_selftest,
    "simulate": cmd_simulate,
    "schedule": cmd_schedule,
    "refill": cmd_refill,
    "log": cmd_log,
    "report": cmd_report,
    "status": cmd_status,
}
