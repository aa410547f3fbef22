"""`dispenser selftest` on the simulated device: every part exercised, the button awaited."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

from dispenser.hardware import build_sim_hardware
from dispenser.selftest import run_selftest
from waiting import HANG


def test_selftest_moves_every_compartment_and_waits_for_a_press():
    said, built = [], {}

    def build(put):
        built["hw"] = build_sim_hardware(put, compartments=3, sleep=lambda s: None)
        return built["hw"]

    def press_soon():
        while "hw" not in built or not any("press the button" in line for line in said):
            time.sleep(0.01)
        pin = built["hw"].button.device.pin
        pin.drive_low()
        pin.drive_high()

    threading.Thread(target=press_soon, daemon=True).start()
    assert run_selftest(build, said.append, wait_s=HANG, sleep=lambda s: None)  # returns at the press
    assert [line for line in said if line.startswith("ok    compartment")] == [
        f"ok    compartment {c} opens and closes" for c in (1, 2, 3)]
    assert "ok    button" in said and said[-1] == "self-test passed"


def test_selftest_without_a_press_fails_and_says_so(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[hardware]\nbackend = "sim"\ncompartments = 2\ndwell_ms = 50\n')
    result = subprocess.run([sys.executable, "-m", "dispenser", "selftest", "--config", str(config), "--wait", "0.2"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "FAIL  button: no press seen" in result.stdout
    assert "ok    compartment 2 opens and closes" in result.stdout
