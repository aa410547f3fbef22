#!/usr/bin/env python3
"""The clinic broker's accounts (Mosquitto 2.0 dynamic-security plugin). Python 3 stdlib only.

    broker/dynsec.py init /var/lib/mosquitto/dynamic-security.json
        the plugin's file from broker/dynamic-security.json, with the passwords of `admin`
        and `clinic` (asked, or $DYNSEC_ADMIN_PASSWORD / $DYNSEC_CLINIC_PASSWORD); the
        broker must be stopped (it rewrites the file on every change)
    broker/dynsec.py [CONNECTION] add-device DEVICE_ID
        role device-ID (its own topics, and its Home Assistant discovery configs
        homeassistant/+/ID/#) and three accounts, each bound to its client id: ID (the daemon),
        ID-sync (`dispenser sync`) and ID-simulate (`dispenser simulate --scenario`),
        all with the device's password (asked, or $DEVICE_PASSWORD)
    broker/dynsec.py [CONNECTION] add-caregiver NAME DEVICE_ID...
        role caregiver-NAME (the alerts and status of those devices) and the account NAME,
        bound to client id clinic-watch-NAME (`dispenser clinic watch --session NAME`)
        (password asked, or $CAREGIVER_PASSWORD)
    broker/dynsec.py [CONNECTION] add-care
        the account `care` for `dispenser care serve` (password asked, or $CARE_PASSWORD),
        with the role `care` (created too on a broker set up before it existed): it may
        only read events through the shared subscription `$share/care/.../events` and the
        status topics, never send a schedule (the `clinic` account, which may, stays as it is)
    broker/dynsec.py [CONNECTION] remove-device DEVICE_ID | remove-caregiver NAME

Passwords reach mosquitto_ctrl on its command line: run this where no other user can
list processes (the broker host, as root). The clinic's own `clinic watch --session`
names must differ from every caregiver's name (a caregiver owns clinic-watch-NAME). The care
service's workers connect as care-1, care-2, ...: no device or caregiver may be named so.

The add and remove commands run mosquitto_ctrl against the running broker as `admin`
(password asked, or $DYNSEC_ADMIN_PASSWORD). CONNECTION: --host (127.0.0.1),
--port (1883, the broker's local listener), and --cafile/--cert/--key for a TLS one.
"""
from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "dynamic-security.json"
PREFIX = "pilldispenser"
ITERATIONS = 101                     # what mosquitto_ctrl uses
ONE_SHOT_COMMANDS = ("sync", "simulate")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def password_fields(password: str) -> dict:
    """The plugin's stored form: PBKDF2-HMAC-SHA512, 64 bytes, base64, with a random salt."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, ITERATIONS, 64)
    return {"password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode(),
            "iterations": ITERATIONS}


def secret(variable: str, prompt: str) -> str:
    value = os.environ.get(variable)
    if value is None:
        if not sys.stdin.isatty():
            sys.exit(f"{prompt.strip(': ')}: set ${variable} or run this in a terminal")
        value = getpass.getpass(prompt)
        if value != getpass.getpass("again: "):
            sys.exit("the passwords differ")
    if len(value) < 12:
        sys.exit(f"{prompt.strip(': ')}: use at least 12 characters")
    return value


def init(out: Path) -> None:
    if out.exists():
        sys.exit(f"{out} exists: add accounts to a running broker with add-device/add-caregiver")
    document = json.loads(TEMPLATE.read_text())
    passwords = {"admin": secret("DYNSEC_ADMIN_PASSWORD", "admin password: "),
                 "clinic": secret("DYNSEC_CLINIC_PASSWORD", "clinic password: ")}
    for client in document["clients"]:
        client.update(password_fields(passwords[client["username"]]))
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(document, indent=1) + "\n")
    print(f"wrote {out} (mode 0600); the broker's user must own it (chown mosquitto: {out})")


HA_PREFIX = "homeassistant"           # [homeassistant] discovery_prefix (docs/MQTT.md, "Home Assistant")


def device_acls(device: str) -> list[tuple[str, str]]:
    base = f"{PREFIX}/{device}"
    return ([("publishClientSend", f"{base}/{leaf}") for leaf in ("events", "alerts", "status", "state")]
            + [("subscribeLiteral", f"{base}/schedule/set"), ("publishClientReceive", f"{base}/schedule/set")]
            # (v2) its own Home Assistant discovery configs, `<prefix>/<component>/<device>/<object>/config`
            + [("publishClientSend", f"{HA_PREFIX}/+/{device}/#")])


CARE = "care"                         # the care service's account and role; its shared subscription's group


def care_acls(prefix: str = PREFIX) -> list[tuple[str, str]]:
    """What `dispenser care serve` reads and nothing more. Mosquitto (2.0.11) checks a shared
    subscription against its whole name, `$share/care/...`, and a delivery against the topic."""
    return [("subscribePattern", f"$share/{CARE}/{prefix}/+/events"), ("publishClientReceive", f"{prefix}/+/events"),
            ("subscribePattern", f"{prefix}/+/status"), ("publishClientReceive", f"{prefix}/+/status")]


def caregiver_acls(devices: list[str]) -> list[tuple[str, str]]:
    # Subscribing is allowed by the shared `caregiver` role (so `clinic watch` subscribes
    # as usual); what is delivered is decided here, message by message.
    return [("publishClientReceive", f"{PREFIX}/{device}/{leaf}") for device in devices for leaf in ("alerts", "status")]


class Ctrl:
    """mosquitto_ctrl as admin. It exits 0 on most failures: its words are checked too."""

    def __init__(self, args):
        password = secret("DYNSEC_ADMIN_PASSWORD", "admin password: ")
        self.base = ["mosquitto_ctrl", "-h", args.host, "-p", str(args.port), "-u", "admin", "-P", password]
        for option in ("cafile", "cert", "key"):
            if getattr(args, option):
                self.base += [f"--{option}", getattr(args, option)]

    def __call__(self, *args: str, check: bool = True) -> bool:
        result = subprocess.run([*self.base, "dynsec", *args], capture_output=True, text=True)
        output = "\n".join(line for line in (result.stdout + result.stderr).splitlines()
                           if line.strip() and "without encryption" not in line
                           and "visible on the network" not in line)
        failed = result.returncode != 0 or "rror" in output
        if failed and check:
            sys.exit(f"mosquitto_ctrl dynsec {args[0]} {args[1] if len(args) > 1 else ''}: {output}")
        return not failed


def add_device(ctrl: Ctrl, device: str) -> None:
    password = secret("DEVICE_PASSWORD", f"password of {device}: ")
    role = f"device-{device}"
    ctrl("createRole", role)
    for acltype, topic in device_acls(device):
        ctrl("addRoleACL", role, acltype, topic, "allow")
    for name in (device, *(f"{device}-{command}" for command in ONE_SHOT_COMMANDS)):
        ctrl("createClient", name, "-c", name, "-p", password)
        ctrl("addClientRole", name, role)
    print(f"{device}: role {role}; accounts {device}, " + ", ".join(f"{device}-{c}" for c in ONE_SHOT_COMMANDS))


def add_caregiver(ctrl: Ctrl, name: str, devices: list[str]) -> None:
    password = secret("CAREGIVER_PASSWORD", f"password of {name}: ")
    role = f"caregiver-{name}"
    ctrl("createRole", role)
    for acltype, topic in caregiver_acls(devices):
        ctrl("addRoleACL", role, acltype, topic, "allow")
    ctrl("createClient", name, "-c", f"clinic-watch-{name}", "-p", password)
    ctrl("addClientRole", name, "caregiver")
    ctrl("addClientRole", name, role)
    print(f"{name}: alerts and status of {', '.join(devices)}; client id clinic-watch-{name}")


def add_care(ctrl: Ctrl) -> None:
    password = secret("CARE_PASSWORD", "password of care: ")
    if ctrl("createRole", CARE, check=False):   # else it is there already (broker/dynamic-security.json has it)
        for acltype, topic in care_acls():
            ctrl("addRoleACL", CARE, acltype, topic, "allow")
    ctrl("createClient", CARE, "-p", password)
    ctrl("addClientRole", CARE, CARE)
    print(f"{CARE}: reads events ($share/{CARE}/{PREFIX}/+/events) and status; sends nothing")


def remove_device(ctrl: Ctrl, device: str) -> None:
    for name in (device, *(f"{device}-{command}" for command in ONE_SHOT_COMMANDS)):
        ctrl("deleteClient", name, check=False)
    ctrl("deleteRole", f"device-{device}", check=False)


def remove_caregiver(ctrl: Ctrl, name: str) -> None:
    ctrl("deleteClient", name, check=False)
    ctrl("deleteRole", f"caregiver-{name}", check=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--cafile")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init").add_argument("file", type=Path)
    sub.add_parser("add-device").add_argument("device")
    caregiver = sub.add_parser("add-caregiver")
    caregiver.add_argument("name")
    caregiver.add_argument("devices", nargs="+")
    sub.add_parser("add-care")
    sub.add_parser("remove-device").add_argument("device")
    sub.add_parser("remove-caregiver").add_argument("name")
    args = parser.parse_args(argv)
    for value in [getattr(args, key) for key in ("device", "name") if hasattr(args, key)] + getattr(args, "devices", []):
        # `clinic-...` client ids are the clinic's own (push, watch), `care-N` the care service's
        # workers': no account may be bound to one.
        if not NAME.match(value) or value in ("admin", "clinic", CARE) or value.startswith(("clinic-", f"{CARE}-")):
            sys.exit(f"{value!r}: use letters, digits, '-', '_' and '.' (not admin, clinic, care, clinic-... or care-...)")
    if args.command == "init":
        return init(args.file)
    ctrl = Ctrl(args)
    if not ctrl("getDefaultACLAccess", check=False):
        sys.exit(f"cannot reach the broker's dynamic-security plugin at {args.host}:{args.port} as admin")
    if args.command == "add-device":
        add_device(ctrl, args.device)
    elif args.command == "add-caregiver":
        add_caregiver(ctrl, args.name, args.devices)
    elif args.command == "add-care":
        add_care(ctrl)
    elif args.command == "remove-device":
        remove_device(ctrl, args.device)
    else:
        remove_caregiver(ctrl, args.name)


if __name__ == "__main__":
    main()
