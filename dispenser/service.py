"""Running under systemd: the unit file, the steps that install it, and sd_notify.

Pure helpers: nothing here runs a command or writes a file. `dispenser install-service`
renders the unit, writes it somewhere, and runs `install_steps()` one by one; the
daemon uses `Notifier` to tell systemd it is ready and alive.

The unit lives in the package (`dispenser/systemd/dispenser.service`), so an installed
dispenser can render it; `systemd/dispenser.service` at the top of the repository is a
symbolic link to it, for installing by hand.
"""
from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import PurePosixPath

import sdnotify

UNIT_NAME = "dispenser.service"
SERVICE_USER = "dispenser"
SERVICE_GROUPS = ("gpio", "i2c")
DEFAULT_VENV_BIN = "/opt/dispenser/venv/bin"
DEFAULT_CONFIG = "/etc/dispenser/config.toml"
UNIT_DIR = "/etc/systemd/system"
CONFIG_DIR = "/etc/dispenser"

# Hidden from the service by ProtectHome=true: a venv or config there cannot work.
_HIDDEN = ("/home", "/root", "/run/user")
_EXEC_START = re.compile(r"^ExecStart=.*$", re.MULTILINE)


def unit_template() -> str:
    """The shipped unit file's text, exactly as in the package."""
    return resources.files("dispenser").joinpath("systemd", UNIT_NAME).read_text(encoding="utf-8")


def render_unit(venv_bin: str = DEFAULT_VENV_BIN, config_path: str = DEFAULT_CONFIG) -> str:
    """The unit text with ExecStart running `{venv_bin}/dispenser run --config {config_path}`.

    `venv_bin` is the virtualenv's bin directory (where the `dispenser` script is).
    Both must be absolute paths outside /home, /root and /run/user (the unit has
    ProtectHome=true) without whitespace, quotes or backslashes; anything else raises
    ValueError with one line naming the problem. With the defaults the result is the
    template unchanged.
    """
    executable = _unit_path(str(PurePosixPath(_check_path(venv_bin, "venv_bin")) / "dispenser"))
    config = _unit_path(_check_path(config_path, "config_path"))
    text = unit_template()
    if len(_EXEC_START.findall(text)) != 1:
        raise ValueError("the unit template must have exactly one ExecStart= line")
    return _EXEC_START.sub(lambda _: f"ExecStart={executable} run --config {config}", text, count=1)


def install_steps(unit_file: str, *, config_source: str | None = None,
                  config_path: str = DEFAULT_CONFIG, user_exists: bool = False,
                  user: str = SERVICE_USER, groups: tuple[str, ...] = SERVICE_GROUPS,
                  start: bool = True) -> list[list[str]]:
    """The commands (argv lists, to be run as root in order) that install the service.

    `unit_file` is a file holding the rendered unit (see `render_unit`). With
    `user_exists` the user is only added to `groups` (usermod) instead of created.
    With `config_source` that file is installed as `config_path` (root:user, 0640, as
    it may hold the broker password); without it the config is left alone. With
    `start=False` the service is enabled for the next boot but not started.
    """
    group_list = ",".join(groups)
    if user_exists:
        account = ["usermod", "--append", "--groups", group_list, user]
    else:
        account = ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                   "--shell", "/usr/sbin/nologin", "--user-group", "--groups", group_list, user]
    config_dir = str(PurePosixPath(config_path).parent)
    steps = [
        account,
        # root owns the config; the service's group may read it.
        ["install", "-d", "-m", "0750", "-o", "root", "-g", user, config_dir],
    ]
    if config_source is not None:
        steps.append(["install", "-m", "0640", "-o", "root", "-g", user, config_source, config_path])
    steps += [
        ["install", "-m", "0644", "-o", "root", "-g", "root", unit_file, f"{UNIT_DIR}/{UNIT_NAME}"],
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", UNIT_NAME] if start else ["systemctl", "enable", UNIT_NAME],
    ]
    return steps


class Notifier:
    """sd_notify for the daemon; every method does nothing when NOTIFY_SOCKET is unset.

    The environment is read once, when the Notifier is made. Sending never raises
    (sdnotify swallows socket errors): a lost notification must not stop a dose.
    """

    def __init__(self) -> None:
        self._socket_path = os.environ.get("NOTIFY_SOCKET") or None
        self._watchdog_usec = os.environ.get("WATCHDOG_USEC")
        self._watchdog_pid = os.environ.get("WATCHDOG_PID")
        self._sd = sdnotify.SystemdNotifier() if self._socket_path else None

    @property
    def enabled(self) -> bool:
        """True when run by systemd with a notify socket (Type=notify)."""
        return self._sd is not None

    def ready(self) -> None:
        self._send("READY=1")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def status(self, text: str) -> None:
        """One line shown by `systemctl status`; newlines become spaces."""
        self._send("STATUS=" + " ".join(str(text).splitlines()))

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: half of $WATCHDOG_USEC.

        None when there is no watchdog to feed: no notify socket, WATCHDOG_USEC unset
        or not a positive number, or WATCHDOG_PID naming another process.
        """
        if not self.enabled or not self._watchdog_usec:
            return None
        if self._watchdog_pid and self._watchdog_pid.strip() != str(os.getpid()):
            return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        return usec / 2 / 1_000_000 if usec > 0 else None

    def _send(self, state: str) -> None:
        if self._sd is not None:
            # sdnotify encodes with latin-1 (a non-latin-1 status would be dropped);
            # systemd reads UTF-8: hand it a str whose latin-1 bytes are the UTF-8.
            self._sd.notify(state.encode("utf-8").decode("latin-1"))


def _check_path(value: str, name: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"{name} must be an absolute path, not {value!r}")
    if any(ch.isspace() or ch in "\"'\\;" or not ch.isprintable() for ch in value):
        raise ValueError(f"{name} {value!r} may not hold spaces, quotes, backslashes or semicolons")
    normal = os.path.normpath(value)
    if any(normal == top or normal.startswith(top + "/") for top in _HIDDEN):
        raise ValueError(f"{name} {value!r} is hidden from the service by ProtectHome=; "
                         f"use a path such as /opt/dispenser or /etc/dispenser")
    return normal


def _unit_path(path: str) -> str:
    # systemd expands %specifiers and $VARIABLES in ExecStart: keep them literal.
    return path.replace("%", "%%").replace("$", "$$")
