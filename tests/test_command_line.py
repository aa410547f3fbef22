"""The `dispenser` command at the edges people meet: closed pipes, --version, the self-test
on the simulated device, install-service refusing what cannot work. Real processes where the
process is what is tested (pipes, --version, a key pressed, the venv it runs from); in this
process (tests/inprocess.py) the month's log made for the pipes, the self-test without a
config (its servos' dwells on a virtual clock) and install-service's refusals."""
from __future__ import annotations

import fcntl
import functools
import subprocess
import sys

import pytest

from inprocess import dispenser as run_in_process
from support import DEMO

import dispenser


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dispenser", *args]


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(command(*args), capture_output=True, text=True, timeout=60, **kwargs)


# -- a reader that goes away (`| head -1`) ------------------------------------------------------


def first_line_then_close(args: list[str], stdin=subprocess.DEVNULL, after=None) -> tuple[str, int, str]:
    """Run `args` with stdout to a small pipe, read one line, close the pipe: as `| head -1` does."""
    proc = subprocess.Popen(args, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    fcntl.fcntl(proc.stdout.fileno(), 1031, 4096)  # F_SETPIPE_SZ: a page, so the writer meets the close
    first = proc.stdout.readline().decode()
    proc.stdout.close()
    if after is not None:
        after(proc)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return first, proc.returncode, err.decode()


@pytest.fixture(scope="module")
def month_log(tmp_path_factory):
    """A log of a month of the demo schedule (about 300 kB of JSON lines)."""
    folder = tmp_path_factory.mktemp("month")
    scenario = folder / "month.toml"
    scenario.write_text(f'start = "2026-11-24T06:00:00"\nuntil = "2026-12-24T06:00:00"\n'
                        f'schedule = "{DEMO / "schedule.json"}"\n')
    db = folder / "month.db"
    result = run_in_process("simulate", "--scenario", str(scenario), "--db", str(db))
    assert result.returncode == 0 and len(result.stdout) > 100_000, result.stderr
    return db


@pytest.mark.parametrize("args", [
    ("log", "--json"),
    ("log",),
])
def test_log_into_a_closed_pipe_stops_quietly(month_log, args):
    first, code, err = first_line_then_close(command(*args, "--db", str(month_log)))
    assert first.strip()
    assert code == 141 and err == "", err  # 128 + SIGPIPE, as a shell shows it; not a word on stderr


@pytest.mark.parametrize("extra", [(), ("--json",)])
def test_schedule_show_into_a_closed_pipe_stops_quietly(extra):
    first, code, err = first_line_then_close(
        command("schedule", "show", "--file", str(DEMO / "schedule.json"), "--days", "3000", *extra))
    assert first.strip()
    assert code == 141 and err == "", err


def test_a_scenario_into_a_closed_pipe_stops_quietly(tmp_path):
    scenario = tmp_path / "month.toml"
    scenario.write_text(f'start = "2026-11-24T06:00:00"\nuntil = "2026-12-24T06:00:00"\n'
                        f'schedule = "{DEMO / "schedule.json"}"\n')
    first, code, err = first_line_then_close(command("simulate", "--scenario", str(scenario)))
    assert '"device.started"' in first
    assert code == 141 and err == "", err


def test_the_live_simulator_stops_when_nobody_reads_its_screen(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f'[hardware]\nbackend = "sim"\ndwell_ms = 50\n[storage]\ndb = "{tmp_path / "d.db"}"\n')

    def press(proc):  # the screen changes: the simulator draws into the closed pipe
        try:
            for _ in range(3):
                proc.stdin.write(b"press\n")
                proc.stdin.flush()
        except BrokenPipeError:
            pass  # it has stopped already
        proc.wait(timeout=30)  # by itself: its stdin stays open

    first, code, err = first_line_then_close(command("simulate", "--config", str(config)),
                                             stdin=subprocess.PIPE, after=press)
    assert first.startswith("LCD |"), err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert code == 141, err


# -- --version -----------------------------------------------------------------------------------


def test_version():
    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"dispenser {dispenser.__version__}"


def test_checking_the_hardware_table_loads_no_gpio_library(tmp_path):
    """Every command checks the config's [hardware] table; only those that drive pins import
    gpiozero and the LCD drivers (before, `status`, `report`, `log verify`... paid 30 ms for them)."""
    config = tmp_path / "config.toml"
    config.write_text(f'[hardware]\nbackend = "pi"\npin_factory = "lgpio"\nlcd = "pcf8574"\n'
                      f'compartments = 2\nservo_pins = [12, 13]\n[storage]\ndb = "{tmp_path / "d.db"}"\n')
    code = ("import sys; from dispenser.config import load_config; import dispenser.cli, dispenser.hardware; "
            f"load_config({str(config)!r}); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gpiozero', 'adafruit_character_lcd', "
            "'lgpio', 'RPi', 'board', 'busio')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -- selftest on the simulated device ----------------------------------------------------------


def no_config_env(tmp_path) -> dict:
    import os
    env = {key: value for key, value in os.environ.items() if key != "DISPENSER_CONFIG"}
    env.update(HOME=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"))
    return env


@pytest.mark.skipif(__import__("os").path.exists("/etc/dispenser/config.toml"), reason="this machine has a config")
def test_selftest_without_a_config_says_it_tests_the_simulator_and_yes_skips_the_press(tmp_path, monkeypatch):
    # In-process, on a virtual clock: the built-in defaults' eight servos dwell 8.8 s of real
    # time otherwise, and the process around the command is not what is tested here.
    import dispenser.selftest
    slept: list[float] = []
    monkeypatch.setattr(dispenser.selftest, "run_selftest",
                        functools.partial(dispenser.selftest.run_selftest, sleep=slept.append))
    result = run_in_process("selftest", "--yes", env=no_config_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line for line in result.stdout.splitlines() if line.startswith("ok    compartment")] == [
        f"ok    compartment {c} opens and closes" for c in range(1, 9)]       # the default eight
    assert slept == [0.5] * 16 + [0.3, 0.5]   # each opens and closes at the default dwell; the buzzer; the LED
    first = result.stdout.splitlines()[0]
    assert first.startswith("info  no configuration") and "simulated device, not real hardware" in first
    assert "skip  button: not waited for" in result.stdout and "self-test passed" in result.stdout


def test_selftest_on_the_simulated_device_takes_a_key_as_the_button(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[hardware]\nbackend = "sim"\ncompartments = 2\ndwell_ms = 50\n')
    proc = subprocess.Popen(command("selftest", "--config", str(config), "--wait", "30"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        said = []
        for line in proc.stdout:
            said.append(line)
            if line.startswith("...   press"):
                break
        assert said and "space or enter" in said[-1], said
        assert f'{config}: [hardware] backend = "sim": this tests the simulated device' in said[0]
        proc.stdin.write("x")  # not the button
        proc.stdin.write(" ")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out + err
    assert "ok    button" in out and out.rstrip().endswith("self-test passed")


# -- install-service refuses what could not start -------------------------------------------------


@pytest.mark.skipif(__import__("os").path.exists("/etc/dispenser/config.toml"), reason="this machine has a config")
def test_install_service_refuses_without_a_config():
    result = run_in_process("install-service", "--dry-run", "--venv-bin", "/opt/dispenser/venv/bin")
    assert result.returncode == 2 and result.stdout == "", result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "no configuration at /etc/dispenser/config.toml" in lines[0], lines
    assert "--config" in lines[0] and "Traceback" not in result.stderr


def test_install_service_refuses_a_missing_or_broken_config(tmp_path):
    missing = run_in_process("install-service", "--dry-run", "--venv-bin", "/opt/dispenser/venv/bin",
                             "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no configuration" in missing.stderr
    broken = tmp_path / "c.toml"
    broken.write_text('[device]\nid = "disp 7"\n')
    result = run_in_process("install-service", "--dry-run", "--venv-bin", "/opt/dispenser/venv/bin",
                            "--config", str(broken))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "device.id" in result.stderr


@pytest.mark.parametrize("venv_bin", ["/tmp/pip-run-abc/bin", "/var/tmp/venv/bin", "/dev/shm/v/bin"])
def test_install_service_refuses_a_temporary_venv(tmp_path, venv_bin):
    config = tmp_path / "config.toml"
    config.write_text('[device]\nid = "disp-0007"\n')
    result = run_in_process("install-service", "--dry-run", "--venv-bin", venv_bin, "--config", str(config))
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "temporary folder" in lines[0] and "/opt/dispenser" in lines[0], lines


def test_install_service_refuses_the_temporary_venv_it_runs_from(tmp_path):
    """`python -m dispenser install-service` from a throwaway venv: ExecStart would point into it."""
    import os
    import site
    venv = tmp_path / "venv"  # pytest's tmp_path is in the temporary folder
    (venv / "bin").mkdir(parents=True)
    os.symlink(sys.executable, venv / "bin" / "python")
    config = tmp_path / "config.toml"
    config.write_text('[device]\nid = "disp-0007"\n')
    root = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    result = subprocess.run([str(venv / "bin" / "python"), "-m", "dispenser", "install-service", "--dry-run",
                             "--config", str(config)], capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join([root, *site.getsitepackages()])))
    assert result.returncode == 2 and "temporary folder" in result.stderr, result.stdout + result.stderr


# -- docs/INSTALL.md tells the story the commands tell ---------------------------------------------


def test_install_guide_matches_the_commands():
    import re
    from pathlib import Path
    guide = (Path(__file__).resolve().parents[1] / "docs" / "INSTALL.md").read_text()
    shell = "\n".join(re.findall(r"```sh\n(.*?)```", guide, re.DOTALL))
    selftests = [line for line in shell.splitlines() if "dispenser selftest" in line]
    assert selftests and all("--yes" in line for line in selftests)  # without it a Pi refuses
    assert "dispenser install-service" in shell
    apt = next(line for line in shell.splitlines() if "apt-get install" in line and "python3-venv" in line)
    assert "python3-lgpio" in apt and "swig" not in apt  # Raspberry Pi OS's lgpio or the wheel: no compiler
    venvs = [line for line in shell.splitlines() if "-m venv" in line]
    assert venvs and all("--system-site-packages" in line for line in venvs)
