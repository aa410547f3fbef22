"""When the wall clock is believed (dispenser/clocktrust.py): timesyncd's marker, steps, drift.

A fake Pi gives the three readings ClockTrust takes: the wall clock, the steady clock
(seconds since boot, which never steps) and the mtime of timesyncd's marker file.
"""
from __future__ import annotations

import os

import pytest

from dispenser.clocktrust import ClockTrust, marker_mtime
from support import Memory

HOUR = 3600.0


class Pi:
    """A Raspberry Pi with no battery clock, booted at wall time `wall0`."""

    def __init__(self, wall0: float = 1_795_000_000.0):
        self.steady = 12.0          # seconds since boot
        self.offset = wall0 - 12.0  # wall = steady + offset
        self.marker: float | None = None

    def wall(self) -> float:
        return self.steady + self.offset

    def wait(self, seconds: float) -> None:
        self.steady += seconds

    def step(self, seconds: float) -> None:
        """Someone (or something) sets the wall clock; the steady clock does not move."""
        self.offset += seconds

    def ntp(self, step: float = 0.0) -> None:
        """timesyncd synchronises: it steps the clock if need be, and touches its marker."""
        self.offset += step
        self.marker = self.wall()

    def trust(self, mode: str = "synchronized") -> ClockTrust:
        return ClockTrust(mode, synchronized_at=lambda: self.marker, wall=self.wall, steady=lambda: self.steady)


def test_always_believes_the_clock_whatever_it_does():
    pi = Pi()
    trust = pi.trust("always")
    pi.step(5 * HOUR)
    assert trust.check() and trust.untrusted_for() == 0.0


def test_a_boot_is_untrusted_until_the_first_synchronisation_then_trusted():
    pi = Pi()
    trust = pi.trust()
    assert not trust.check()
    pi.wait(90)
    assert not trust.check() and trust.untrusted_for() == 90
    pi.ntp(step=2 * HOUR)  # the saved time was two hours behind
    assert trust.check() and trust.untrusted_for() == 0.0
    assert trust.last_step == 2 * HOUR


def test_a_restart_after_a_synchronisation_since_boot_is_trusted_at_once():
    pi = Pi()
    pi.ntp()
    pi.wait(600)
    assert pi.trust().check()


def test_a_synchronised_clock_that_loses_the_network_for_days_stays_trusted():
    pi = Pi()
    trust = pi.trust()
    pi.ntp()
    for _ in range(3 * 24):
        pi.wait(HOUR)
        pi.step(0.01)  # the crystal drifts: 10 ms an hour, far below a step
        assert trust.check()


def test_a_step_by_hand_after_the_first_synchronisation_is_not_believed_but_reported_once():
    pi = Pi()
    trust = pi.trust()
    pi.ntp()
    assert trust.check()
    pi.wait(30)
    true = pi.wall()
    pi.step(HOUR)  # `date -s` an hour ahead
    assert trust.check() and trust.last_step == HOUR  # the counted time is still good: doses go on
    assert trust.now() == true and trust.stepped_away == HOUR
    assert "3600 s ahead" in trust.take_step_report() and trust.take_step_report() is None
    pi.wait(60)
    assert trust.now() == true + 60 and trust.take_step_report() is None
    pi.ntp(step=-HOUR)  # set right again: the wall clock agrees with the count, and is followed
    assert trust.check() and trust.now() == pi.wall() and trust.stepped_away is None


def test_a_step_back_by_hand_is_not_believed_either():
    pi = Pi()
    trust = pi.trust()
    pi.ntp()
    trust.check()
    pi.wait(30)
    true = pi.wall()
    pi.step(-HOUR)
    assert trust.check() and trust.now() == true and trust.stepped_away == -HOUR
    assert "3600 s behind" in trust.take_step_report()
    pi.wait(5)
    pi.ntp(step=HOUR)
    assert trust.check() and trust.now() == pi.wall() and trust.take_step_report() is None


def test_ten_forward_steps_by_a_time_server_that_touches_the_marker_move_nothing():
    """timesyncd steps to what a hostile server says and touches its marker as it steps:
    after the first synchronisation since boot, the marker vouches for nothing."""
    pi = Pi()
    trust = pi.trust()
    pi.ntp()
    trust.check()
    reports = []
    for _ in range(10):
        pi.wait(60)
        pi.ntp(step=8 * HOUR)
        assert trust.check()
        reports.append(trust.take_step_report())
    assert trust.now() == pi.steady + (pi.offset - 80 * HOUR)  # ten minutes later by the boot clock
    assert trust.stepped_away == 80 * HOUR and trust.last_step == 8 * HOUR
    assert len([r for r in reports if r]) == 1  # one episode, one report


def test_a_drift_correction_after_days_offline_is_followed():
    """Offline, the crystal drifts both clocks alike; NTP back steps the wall clock by the drift
    (timesyncd steps beyond 0.4 s): within 500 ppm of the time since the anchor, it is believed."""
    pi = Pi()
    trust = pi.trust()
    pi.ntp()
    trust.check()
    pi.wait(3 * 24 * HOUR)
    pi.ntp(step=-4.0)  # 15 ppm over three days
    assert trust.check() and trust.now() == pi.wall() and trust.take_step_report() is None


def test_an_old_synchronisation_does_not_vouch_for_a_step_before_the_first_check():
    """The daemon started before NTP answered; the marker was touched, then the clock set by hand
    before the daemon looked: the marker is older than the step, so nothing is anchored on it."""
    pi = Pi()
    trust = pi.trust()
    assert not trust.check()
    pi.wait(20)
    pi.ntp()
    pi.wait(20)
    pi.step(HOUR)
    assert not trust.check()


def test_a_restart_after_a_step_waits_for_a_new_synchronisation():
    """The daemon restarted after it logged clock.unsynchronized: the old marker vouches for nothing."""
    pi = Pi()
    pi.ntp()
    pi.wait(60)
    pi.step(HOUR)  # seen by the process before, which logged it; then it restarted
    trust = ClockTrust("synchronized", log_trusted=False, synchronized_at=lambda: pi.marker,
                       wall=pi.wall, steady=lambda: pi.steady)
    assert not trust.check() and "log last found it untrusted" in trust.describe()
    pi.wait(30)
    pi.ntp(step=-HOUR)
    assert trust.check()


def test_slewing_is_followed_and_a_step_beyond_it_is_not():
    pi = Pi()
    trust = pi.trust()
    pi.ntp()
    trust.check()
    for _ in range(60):
        pi.wait(60)
        pi.step(0.025)  # NTP slews at most 500 ppm: 30 ms a minute
        assert trust.check() and trust.now() == pi.wall()
    pi.wait(60)
    believed = trust.now()
    pi.step(5.0)
    assert trust.check() and trust.now() == believed and trust.stepped_away == 5.0


def test_a_restarted_daemon_keeps_the_anchor_of_this_boot():
    pi, memory = Pi(), Memory()
    trust = ClockTrust("synchronized", synchronized_at=lambda: pi.marker, wall=pi.wall,
                       steady=lambda: pi.steady, memory=memory)
    pi.ntp()
    trust.check()
    pi.wait(60)
    pi.ntp(step=8 * HOUR)
    trust.check()
    assert trust.take_step_report()
    pi.wait(60)  # the daemon restarts: the marker is fresh, the wall clock 8 h ahead
    again = ClockTrust("synchronized", synchronized_at=lambda: pi.marker, wall=pi.wall,
                       steady=lambda: pi.steady, memory=memory)
    assert again.check() and again.now() == pi.wall() - 8 * HOUR
    assert again.take_step_report() is None  # reported by its predecessor already


def test_the_anchor_is_kept_in_the_log_for_this_boot_only():
    from dispenser.clocktrust import StoreMemory
    from dispenser.store import Store
    store = Store.open(":memory:", "disp-test")
    StoreMemory(store, boot="boot-1").remember({"offset": 1.0, "steady": 2.0, "believed": 1.0, "reported": None})
    assert StoreMemory(store, boot="boot-1").recall()["offset"] == 1.0
    assert StoreMemory(store, boot="boot-2").recall() is None  # a reboot anchors afresh


def test_the_marker_is_read_from_the_file(tmp_path):
    marker = tmp_path / "synchronized"
    assert marker_mtime(marker) is None
    marker.touch()
    os.utime(marker, (1_795_000_000, 1_795_000_000))
    assert marker_mtime(marker) == 1_795_000_000


def test_describe_says_why_doses_are_held():
    pi = Pi()
    assert "held" in pi.trust().describe()
    assert "simulator" in pi.trust("always").describe()
    pi.ntp()
    trust = pi.trust()
    assert trust.describe() == "synchronised by NTP"
    pi.wait(10)
    pi.step(HOUR)
    assert trust.describe().startswith("synchronised by NTP; the wall clock has since been stepped 3600 s ahead")
    booting = Pi()
    trust = booting.trust()
    booting.step(HOUR)
    trust.check()
    booting.wait(1)
    booting.step(HOUR)
    assert trust.describe().startswith("stepped by +3600 s and not synchronised since")


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="synchronized, always"):
        ClockTrust("rtc")


PI_HARDWARE = {"backend": "pi", "compartments": 4, "servo_pins": [12, 13, 18, 19], "lcd": "pcf8574"}


def test_a_pi_waits_for_ntp_by_default_and_the_simulator_believes_its_host():
    from dispenser.config import parse_config
    assert parse_config({}).clock_trust == "always"
    assert parse_config({"hardware": PI_HARDWARE}).clock_trust == "synchronized"
    assert parse_config({"hardware": PI_HARDWARE, "clock": {"trust": "always"}}).clock_trust == "always"


@pytest.mark.parametrize("value", ["rtc", 1, True, ""])
def test_a_bad_clock_trust_is_one_line_naming_the_key(value):
    from dispenser.config import ConfigError, parse_config
    with pytest.raises(ConfigError, match=r"^c.toml: clock.trust must be"):
        parse_config({"clock": {"trust": value}}, "c.toml")
