"""The live simulator draws what the glass shows: keys go in, and the frame drawn is the
emulated HD44780's DDRAM, at the configured size; its clock never stands still."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import termios
import threading
from datetime import datetime, timedelta

import pytest

from dispenser.daemon import Daemon
from dispenser.engine import Engine
from dispenser.hardware import build_sim_hardware
from dispenser.live import Terminal, boxed
from dispenser.store import Store
from dispenser.inputs import Hold, Press, Stop
from support import as_needed, daily, local, schedule
from waiting import HANG, finishes, wait_until

START = "2026-11-24T06:00:00"


class Tty(io.StringIO):
    """A terminal the draw thread writes whole frames into."""

    def isatty(self) -> bool:
        return True

    def frames(self) -> list[str]:
        return [frame for frame in self.getvalue().split("\x1b[H\x1b[2J") if frame]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.at = now

    def now(self) -> datetime:
        return self.at


class Live:
    """A simulated device, its daemon driven on the test's thread, and a terminal drawing it."""

    def __init__(self, size: tuple[int, int] = (16, 2), interactive: bool = True, inp: object = None) -> None:
        self.hw = build_sim_hardware(lambda item: None, compartments=8, lcd_size=size, sleep=lambda s: None)
        multivitamin = daily("multivitamin", 2, ["08:00"])
        multivitamin["name"] = "Multivitamin (demo)"
        prn = as_needed("hydroxyzine", 3)
        prn["name"] = "Hydroxyzine 25 mg"
        self.engine = Engine(Store.open(":memory:", "disp-live"), 8, "America/New_York")
        self.clock = Clock(local(START))
        self.engine.apply_schedule(self.clock.at, schedule(multivitamin, prn), "local",
                                   stock={"multivitamin": 30, "hydroxyzine": 10})
        self.daemon = Daemon(self.engine, self.hw, timezone_name="America/New_York", sleep=lambda s: None)
        self.daemon.start(self.clock.at)
        self.out = Tty() if interactive else io.StringIO()
        self.terminal = Terminal(self.daemon, self.clock, 1.0, out=self.out, inp=inp or Tty())

    def at(self, text: str) -> None:
        self.clock.at = local(text)
        self.daemon.advance(self.clock.at)

    def handle_queued(self) -> list:
        """What the key reader put on the daemon's queue, handled as the daemon's loop would."""
        items = []
        while not self.daemon.inputs.empty():
            item = self.daemon.inputs.get()
            items.append(item)
            if not isinstance(item, Stop):
                self.daemon.handle(item, self.clock.at)
        return items

    def ddram(self) -> list[str]:
        return self.hw.lcd.emulator.lines()

    def drawn_glass(self) -> list[str]:
        """The LCD rows of the last frame drawn: the lines between the box's edges."""
        frame = self.out.frames()[-1].splitlines()
        top = next(i for i, line in enumerate(frame) if line.startswith("+-"))
        bottom = next(i for i in range(top + 1, len(frame)) if frame[i].startswith("+-"))
        assert frame[top] == frame[bottom] == "+" + "-" * self.hw.lcd.cols + "+"
        return [line[1:-1] for line in frame[top + 1:bottom]]

    def close(self) -> None:
        self.hw.close()


@pytest.fixture
def live_device():
    made: list[Live] = []

    def make(*args, **kwargs) -> Live:
        made.append(Live(*args, **kwargs))
        return made[-1]

    yield make
    for device in made:
        device.close()


@pytest.mark.parametrize("size", [(16, 2), (20, 4)])
def test_the_frame_is_the_ddram_not_the_daemons_text(live_device, size):
    device = live_device(size)
    device.at("2026-11-24T06:10:00")
    device.terminal.draw()
    assert device.drawn_glass() == device.ddram()
    assert all(len(row) == size[0] for row in device.drawn_glass()) and len(device.drawn_glass()) == size[1]
    # What the newcomer saw in a 30-column box: now the 16 columns the glass holds, and the name whole.
    name = "Multivitamin" if size[0] == 16 else "Multivitamin (demo)"  # whole where it fits
    assert device.ddram()[:2] == ["06:10 Next 08:00".ljust(size[0]), name.ljust(size[0])]


def test_what_is_drawn_comes_from_the_controller_whatever_wrote_it(live_device):
    device = live_device()
    device.terminal.draw()
    device.hw.lcd.show(["written past the", "daemon \\ caf\u00e9 and far too long"])  # not the daemon's text
    device.terminal.draw()
    assert device.drawn_glass() == ["written past the", "daemon ? caf? an"]  # as the ROM draws it, cut
    assert device.daemon._shown != device.drawn_glass()


def test_keys_go_in_and_the_frame_follows_the_glass(live_device):
    """Real keys through a pseudo-terminal: `h` asks for the as-needed dose, space presses."""
    main, side = os.openpty()
    with os.fdopen(side, "r", closefd=True) as inp:
        device = live_device(inp=inp)
        assert device.terminal.interactive
        reader = threading.Thread(target=device.terminal.read_keys)  # as `run_live` starts it
        reader.start()
        # Keys typed before the reader sets cbreak mode would be flushed with the line discipline.
        assert wait_until(lambda: not termios.tcgetattr(side)[3] & termios.ICANON)
        os.write(main, b"h q")  # hold, press, quit
        finishes(reader.join)  # it returns at `q`, and queues "stop" as it ends
        os.close(main)
    device.at("2026-11-24T13:00:00")
    assert device.handle_queued() == [Hold(), Press(), Stop()]
    device.terminal.draw()
    assert device.drawn_glass() == device.ddram()
    # The press found nothing due (an as-needed dose asks for no confirmation): the glass says so.
    assert device.drawn_glass() == ["Too early       ", "Opens at 07:30  "]
    assert [e["type"] for e in device.engine.store.events()][-1] == "prn.released"


def test_an_as_needed_dose_says_no_press_is_needed(live_device):
    device = live_device()
    device.at("2026-11-24T13:00:00")
    device.daemon.put("hold")
    device.handle_queued()
    device.terminal.draw()
    assert device.drawn_glass() == ["Take your pill  ", "No need to press"]
    assert [e["type"] for e in device.engine.store.events()][-1] == "prn.released"
    device.daemon.put("press")
    device.handle_queued()
    device.terminal.draw()
    assert device.drawn_glass() == ["Too early       ", "Opens at 07:30  "]  # tomorrow's vitamin, honestly


def test_the_clock_on_screen_moves_every_second_while_the_glass_stands_still(live_device):
    """The draw thread skipped a frame equal to the last, and its clock was not part of it: the
    seconds stood still until the LCD changed (up to a minute, half an hour on a feedback screen)."""
    device = live_device()
    device.terminal.draw()
    glass = device.ddram()
    for second in range(1, 4):
        device.clock.at = local(START) + timedelta(seconds=second)
        device.terminal.draw()
        assert f"06:00:0{second}" in device.out.frames()[-1]
        assert device.ddram() == glass
    assert len(device.out.frames()) == 4
    device.terminal.draw()  # the same second, the same glass: nothing to redraw
    assert len(device.out.frames()) == 4
    device.at("2026-11-24T06:01:00")  # the daemon's minute: the glass's clock moves too
    device.terminal.draw()
    assert device.drawn_glass()[0].startswith("06:01")


def test_a_pipe_gets_one_line_per_change_of_the_glass(live_device):
    device = live_device((20, 4), interactive=False)
    device.terminal.draw()
    device.terminal.draw()
    device.at("2026-11-24T06:01:00")
    device.terminal.draw()
    lines = device.out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0] == "LCD | 06:00 Next 08:00 | Multivitamin (demo) | Tue 24 Nov 06:00 | "
    assert lines[1] == "LCD | " + " | ".join(row.rstrip() for row in device.ddram())


def test_no_display_fitted_is_drawn_as_such():
    assert boxed(("abc", "de")) == ["+---+", "|abc|", "|de |", "+---+"]
    hardware = build_sim_hardware(lambda item: None, compartments=2, lcd=False, sleep=lambda s: None)
    try:
        assert hardware.lcd.glass() is None
    finally:
        hardware.close()


def test_the_simulator_command_draws_the_glass(tmp_path):
    """`dispenser simulate` scripted: every LCD line is the 16 columns the glass holds."""
    config = tmp_path / "c.toml"
    config.write_text(f'[hardware]\nbackend = "sim"\ndwell_ms = 50\n[storage]\ndb = "{tmp_path / "d.db"}"\n')
    result = subprocess.run([sys.executable, "-m", "dispenser", "simulate", "--config", str(config)],
                            input="hold\nquit\n", capture_output=True, text=True, timeout=HANG)
    assert result.returncode == 0, result.stderr
    frames = [line[len("LCD | "):].split(" | ") for line in result.stdout.splitlines() if line.startswith("LCD | ")]
    assert frames and all(len(rows) == 2 and all(len(row) <= 16 for row in rows) for rows in frames), frames
    assert ["Take your pill", "No need to press"] in frames, frames
    assert not any("Press when taken" in rows for rows in frames)
