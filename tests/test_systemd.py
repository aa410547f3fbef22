"""The systemd unit, the install steps, and sd_notify (dispenser/service.py)."""
from __future__ import annotations

import fnmatch
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from dispenser import service
from dispenser.service import Notifier, install_steps, render_unit, unit_template
from inprocess import dispenser as run_in_process
from waiting import HANG

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "systemd" / "dispenser.service"
PACKAGED = ROOT / "dispenser" / "systemd" / "dispenser.service"


def _directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every setting, in order."""
    section, found = "", []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key.strip(), value.strip()))
    return found


def _settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for _section, key, value in _directives(text):
        out.setdefault(key, []).append(value)
    return out


# --- the unit file -----------------------------------------------------------------

def test_packaged_template_is_identical_to_the_shipped_unit():
    """One copy: the top-level unit is a link to the package's."""
    assert SHIPPED.is_symlink() and SHIPPED.resolve() == PACKAGED.resolve()
    assert PACKAGED.read_bytes() == SHIPPED.read_bytes()
    assert unit_template() == SHIPPED.read_text(encoding="utf-8")


def test_template_is_declared_as_package_data():
    """A non-editable `pip install .` (the Pi's) must carry the template."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = data["tool"]["setuptools"].get("package-data", {}).get("dispenser", [])
    assert any(fnmatch.fnmatch("systemd/dispenser.service", p) for p in patterns), (
        'pyproject.toml: add "systemd/*" to [tool.setuptools.package-data] dispenser')


def test_unit_settings():
    s = _settings(SHIPPED.read_text(encoding="utf-8"))
    expect = {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30",
        "ExecStart": "/opt/dispenser/venv/bin/dispenser run --config /etc/dispenser/config.toml",
        "Restart": "on-failure", "RestartSec": "5", "User": "dispenser", "Group": "dispenser",
        "SupplementaryGroups": "gpio i2c", "StateDirectory": "dispenser",
        "ConfigurationDirectory": "dispenser", "Wants": "network-online.target",
        "After": "network-online.target time-sync.target",
        "ProtectSystem": "strict", "ProtectHome": "true", "NoNewPrivileges": "true",
        "PrivateTmp": "true", "ProtectKernelTunables": "true", "ProtectKernelModules": "true",
        "ProtectControlGroups": "true", "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "RestrictNamespaces": "true", "LockPersonality": "true",
        "SystemCallArchitectures": "native", "DevicePolicy": "closed", "MemoryMax": "120M",
        "TimeoutStopSec": "20", "WantedBy": "multi-user.target",
    }
    for key, value in expect.items():
        assert s.get(key) == [value], key
    # The daemon must start without a network: never a hard dependency on it.
    assert "Requires" not in s and "BindsTo" not in s
    # PrivateDevices would hide /dev/gpiochip* and /dev/i2c-*.
    assert "PrivateDevices" not in s
    assert {"char-gpiochip rw", "char-i2c rw", "/dev/gpiomem rw"} <= set(s["DeviceAllow"])


def _stub_bin(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    stub = bin_dir / "dispenser"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    return bin_dir


def _analyze() -> str:
    found = shutil.which("systemd-analyze") or next(
        (p for p in ("/usr/bin/systemd-analyze", "/bin/systemd-analyze") if os.access(p, os.X_OK)), None)
    if found is None:
        pytest.skip("systemd-analyze is not installed (Debian package: systemd; ./dev test installs it)")
    return found


def _verify(unit_dir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, SYSTEMD_LOG_COLOR="0", SYSTEMD_PAGER="")
    return subprocess.run([_analyze(), "verify", "--man=no", str(unit_dir / "dispenser.service")],
                          capture_output=True, text=True, timeout=60, env=env, cwd=unit_dir)


def test_systemd_analyze_accepts_the_unit(tmp_path):
    # ExecStart must name an existing file on this machine: point it at a stub.
    bin_dir = _stub_bin(tmp_path)
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    (unit_dir / "dispenser.service").write_text(render_unit(str(bin_dir), "/etc/dispenser/config.toml"))
    result = _verify(unit_dir)
    # A misspelt key only warns (exit 0): any output at all is a failure.
    assert result.returncode == 0 and result.stderr == "" and result.stdout == "", (
        f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}")


MAX_EXPOSURE = 2.0


def _security(tmp_path, text: str) -> tuple[float, str]:
    """`systemd-analyze security --offline=yes` (systemd 252+) of a unit text: (exposure, report)."""
    unit_dir = tmp_path / "security"
    unit_dir.mkdir(exist_ok=True)
    (unit_dir / "dispenser.service").write_text(text)
    env = dict(os.environ, SYSTEMD_LOG_COLOR="0", SYSTEMD_PAGER="", SYSTEMD_COLORS="0")
    result = subprocess.run([_analyze(), "security", "--offline=yes", "--no-pager", "dispenser.service"],
                            capture_output=True, text=True, timeout=60, env=env, cwd=unit_dir)
    match = re.search(r"Overall exposure level for dispenser\.service: (\d+\.\d)", result.stdout)
    assert match, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return float(match.group(1)), result.stdout


def test_security_exposure_is_at_most_2(tmp_path):
    """It was 3.8 before SystemCallFilter, ProtectClock, ProtectKernelLogs, ProtectProc,
    PrivateMounts and UMask=0077."""
    exposure, report = _security(tmp_path, render_unit(str(_stub_bin(tmp_path))))
    assert exposure <= MAX_EXPOSURE, report


def test_security_check_sees_a_weaker_unit(tmp_path):
    """The measure above is only worth something if removing the hardening raises it."""
    text = render_unit(str(_stub_bin(tmp_path)))
    weaker = "\n".join(line for line in text.splitlines() if not line.startswith("SystemCallFilter="))
    assert _security(tmp_path, weaker)[0] > MAX_EXPOSURE


def test_hardening_keeps_what_the_daemon_needs():
    s = _settings(SHIPPED.read_text(encoding="utf-8"))
    for key, value in {"ProtectClock": "true", "ProtectKernelLogs": "true", "ProtectProc": "invisible",
                       "PrivateMounts": "true", "UMask": "0077", "SystemCallErrorNumber": "EPERM",
                       "ProtectHostname": "true", "RemoveIPC": "true"}.items():
        assert s.get(key) == [value], key
    assert s["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    # GPIO and I2C, the network for MQTT (and AF_UNIX for sd_notify and journald), the state dir.
    assert {"char-gpiochip rw", "char-i2c rw"} <= set(s["DeviceAllow"])
    assert s["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert "PrivateNetwork" not in s and "PrivateDevices" not in s and "IPAddressDeny" not in s
    # gpiozero reads /proc/cpuinfo and /proc/device-tree: /proc stays whole, only other processes hide.
    assert "ProcSubset" not in s
    # /run/systemd/timesync/synchronized (clock trust) stays readable: no InaccessiblePaths.
    assert "InaccessiblePaths" not in s and s["StateDirectory"] == ["dispenser"]
    assert s["NotifyAccess"] == ["main"]


def test_systemd_analyze_check_catches_a_misspelt_key(tmp_path):
    """The check above is only worth something if a typo makes it fail."""
    bin_dir = _stub_bin(tmp_path)
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    text = render_unit(str(bin_dir)).replace("ProtectHome=true", "ProtectHome=true\nProtectHoem=true")
    (unit_dir / "dispenser.service").write_text(text)
    result = _verify(unit_dir)
    assert "ProtectHoem" in result.stderr


# --- render_unit ---------------------------------------------------------------------

def test_render_unit_defaults_are_the_template():
    assert render_unit() == unit_template()
    assert render_unit("/opt/dispenser/venv/bin", "/etc/dispenser/config.toml") == unit_template()


def test_render_unit_points_exec_start_at_the_paths():
    text = render_unit("/srv/disp/venv/bin/", "/srv/disp/dispenser.toml")
    assert _settings(text)["ExecStart"] == ["/srv/disp/venv/bin/dispenser run --config /srv/disp/dispenser.toml"]
    # Everything else is untouched.
    other = [line for line in text.splitlines() if not line.startswith("ExecStart=")]
    assert other == [line for line in unit_template().splitlines() if not line.startswith("ExecStart=")]


def test_render_unit_escapes_specifiers():
    text = render_unit("/opt/50%/bin", "/etc/d$x/config.toml")
    assert _settings(text)["ExecStart"] == ["/opt/50%%/bin/dispenser run --config /etc/d$$x/config.toml"]


@pytest.mark.parametrize("venv_bin, config", [
    ("venv/bin", "/etc/dispenser/config.toml"),              # relative
    ("/opt/dispenser/venv/bin", "config.toml"),
    ("/opt/my venv/bin", "/etc/dispenser/config.toml"),      # whitespace
    ("/opt/dispenser/venv/bin", "/etc/x.toml\nUser=root"),   # a smuggled line
    ("/home/pi/venv/bin", "/etc/dispenser/config.toml"),     # hidden by ProtectHome
    ("/opt/dispenser/venv/bin", "/root/config.toml"),
])
def test_render_unit_refuses_bad_paths(venv_bin, config):
    with pytest.raises(ValueError) as error:
        render_unit(venv_bin, config)
    assert "\n" not in str(error.value)


# --- install_steps -------------------------------------------------------------------

def test_install_steps_for_a_fresh_pi():
    steps = install_steps("/tmp/dispenser.service")
    assert steps[0][0] == "useradd"
    assert steps[0][-1] == "dispenser"
    for flag in ("--system", "--no-create-home"):
        assert flag in steps[0]
    assert steps[0][steps[0].index("--groups") + 1] == "gpio,i2c"
    assert ["install", "-d", "-m", "0750", "-o", "root", "-g", "dispenser", "/etc/dispenser"] in steps
    assert ["install", "-m", "0644", "-o", "root", "-g", "root", "/tmp/dispenser.service",
            "/etc/systemd/system/dispenser.service"] in steps
    assert steps[-2:] == [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", "dispenser.service"]]
    assert all(isinstance(arg, str) for step in steps for arg in step)


def test_install_steps_options():
    steps = install_steps("/tmp/u", user_exists=True, config_source="/tmp/c.toml", start=False)
    assert steps[0] == ["usermod", "--append", "--groups", "gpio,i2c", "dispenser"]
    assert ["install", "-m", "0640", "-o", "root", "-g", "dispenser", "/tmp/c.toml",
            "/etc/dispenser/config.toml"] in steps
    assert steps[-1] == ["systemctl", "enable", "dispenser.service"]
    # The config directory exists before the config is copied into it.
    assert steps.index(["install", "-d", "-m", "0750", "-o", "root", "-g", "dispenser", "/etc/dispenser"]) < \
        steps.index(["install", "-m", "0640", "-o", "root", "-g", "dispenser", "/tmp/c.toml",
                     "/etc/dispenser/config.toml"])


# --- Notifier ------------------------------------------------------------------------

@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    """A Unix datagram socket standing in for systemd's, passed as NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(HANG)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        yield sock
    finally:
        sock.close()


def _receive(sock: socket.socket) -> str:
    return sock.recv(4096).decode("utf-8")


def test_notifier_sends_each_message(notify_socket):
    notifier = Notifier()
    assert notifier.enabled
    notifier.ready()
    assert _receive(notify_socket) == "READY=1"
    notifier.watchdog()
    assert _receive(notify_socket) == "WATCHDOG=1"
    notifier.status("next dose 08:00 — sertraline")
    assert _receive(notify_socket) == "STATUS=next dose 08:00 — sertraline"
    notifier.stopping()
    assert _receive(notify_socket) == "STOPPING=1"


def test_notifier_status_is_one_line(notify_socket):
    Notifier().status("fault\nREADY=1")
    assert _receive(notify_socket) == "STATUS=fault READY=1"


def test_notifier_abstract_socket(monkeypatch):
    name = f"dispenser-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(HANG)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        Notifier().ready()
        assert _receive(sock) == "READY=1"
    finally:
        sock.close()


def test_watchdog_interval(notify_socket, monkeypatch):
    assert Notifier().watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert Notifier().watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier().watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))   # meant for another process
    assert Notifier().watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    for bad in ("", "0", "-5", "soon"):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert Notifier().watchdog_interval() is None, bad


def test_notifier_without_notify_socket_does_nothing(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    calls = []
    monkeypatch.setattr(service.sdnotify, "SystemdNotifier", lambda *a, **k: calls.append(a) or None)
    notifier = Notifier()
    assert not notifier.enabled
    notifier.ready()
    notifier.watchdog()
    notifier.status("x")
    notifier.stopping()
    assert notifier.watchdog_interval() is None
    assert calls == []


def test_notifier_survives_a_vanished_socket(notify_socket, tmp_path):
    notifier = Notifier()
    notify_socket.close()
    (tmp_path / "notify").unlink()
    notifier.ready()        # systemd gone: nothing raised, the daemon carries on
    notifier.watchdog()


def test_install_service_dry_run_shows_the_unit_and_every_step(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[device]\nid = "disp-0007"\n')
    result = run_in_process("install-service", "--dry-run", "--venv-bin", "/opt/dispenser/venv/bin",
                            "--config", config)
    assert result.returncode == 0, result.stderr
    assert "ExecStart=/opt/dispenser/venv/bin/dispenser run --config /etc/dispenser/config.toml" in result.stdout
    steps = [line[2:] for line in result.stdout.splitlines() if line.startswith("$ ")]
    assert any(step.startswith(("useradd --system", "usermod --append")) for step in steps)
    assert f"install -m 0640 -o root -g dispenser {config} /etc/dispenser/config.toml" in steps
    assert steps[-2:] == ["systemctl daemon-reload", "systemctl enable --now dispenser.service"]


def test_install_service_refuses_a_venv_the_service_cannot_see():
    result = run_in_process("install-service", "--dry-run", "--venv-bin", "/home/pi/venv/bin")
    assert result.returncode == 2 and "ProtectHome" in result.stderr and "Traceback" not in result.stderr


# --- the daemon under the unit's system call filter ------------------------------------------

SECCOMP = ROOT / "tests" / "seccomp.py"


def _filtered(*args: str) -> list[str]:
    """A `dispenser` command run under the shipped unit's SystemCallFilter (EPERM for the rest)."""
    return [sys.executable, str(SECCOMP), str(SHIPPED), "--", sys.executable, "-m", "dispenser", *args]


def test_the_daemon_runs_under_the_units_system_call_filter(tmp_path, notify_socket, broker_factory, tls_files):
    """READY and WATCHDOG to systemd, TLS and MQTT to the broker, SQLite in WAL, a clean
    stop: all with only the system calls the unit allows (the rest fail with EPERM)."""
    import json as _json
    from broker import Clinic
    from support import DEMO
    _analyze()
    broker = broker_factory(tls=tls_files)
    db = tmp_path / "state" / "dispenser.db"
    db.parent.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(f'[device]\nid = "disp-0001"\n[hardware]\nbackend = "sim"\n[storage]\ndb = "{db}"\n'
                      f'[mqtt]\nhost = "localhost"\nport = {broker.port}\ntls_ca = "{tls_files.ca}"\n')
    config.chmod(0o600)
    applied = subprocess.run(_filtered("schedule", "apply", str(DEMO / "schedule.json"), "--config", str(config)),
                             capture_output=True, text=True, timeout=60)
    assert applied.returncode == 0, applied.stderr
    clinic = Clinic(broker, tls=tls_files).connect("pilldispenser/disp-0001/status")
    stderr = tmp_path / "daemon.err"
    with open(stderr, "w") as err:
        daemon = subprocess.Popen(_filtered("run", "--config", str(config)), stdout=subprocess.DEVNULL, stderr=err,
                                  env=dict(os.environ, WATCHDOG_USEC="2000000"))
    try:
        seen: list[str] = []
        deadline = time.monotonic() + HANG
        while not {"READY=1", "WATCHDOG=1"} <= set(seen):
            assert time.monotonic() < deadline and daemon.poll() is None, (seen, stderr.read_text())
            try:
                seen += _receive(notify_socket).split("\n")
            except socket.timeout:
                pass
        assert clinic.wait_for(lambda: any(p["online"] for p in clinic.json_on("pilldispenser/disp-0001/status")), HANG)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=HANG) == 0, stderr.read_text()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        clinic.close()
    assert clinic.json_on("pilldispenser/disp-0001/status")[-1]["online"] is False
    assert "not permitted" not in stderr.read_text().lower(), stderr.read_text()
    verify = subprocess.run(_filtered("log", "verify", "--config", str(config)), capture_output=True, text=True,
                            timeout=60)
    assert verify.returncode == 0, verify.stderr
    types = [_json.loads(line)["type"] for line in run_in_process("log", "--json", "--config", config).stdout.splitlines()]
    assert "device.started" in types and "device.stopped" in types


def test_the_filter_really_refuses_privileged_calls():
    """The check above means something only if the emulated filter bites."""
    probe = "import os\ntry:\n    os.nice(1)\nexcept PermissionError:\n    print('refused')\n"
    result = subprocess.run([sys.executable, str(SECCOMP), str(SHIPPED), "--", sys.executable, "-c", probe],
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "refused", result.stderr
