"""When the wall clock is believed (dispenser/clocktrust.py): timesyncd's marker, steps, drift.

A fake Pi gives the three readings ClockTrust takes: the wall clock, the steady clock
(seconds since boot, which never steps) and the mtime of timesyncd's marker file.
"""
from __future__ import annotations

import os

import pytest

from dispenser.clocktrust import ClockTrust, marker_mtime

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


def test_a_step_by_hand_is_untrusted_until_ntp_synchronises_again():
    pi = Pi()
    trust = pi.trust()
    pi.ntp()
    assert trust.check()
    pi.wait(30)
    pi.step(HOUR)  # `date -s` an hour ahead
    assert not trust.check() and trust.last_step == HOUR
    pi.wait(60)
    assert not trust.check()  # no step now, but still no synchronisation since
    pi.ntp(step=-HOUR)
    assert trust.check() and trust.last_step == -HOUR


def test_a_step_back_by_hand_is_untrusted_too():
    pi = Pi()
    trust = pi.trust()
    pi.ntp()
    trust.check()
    pi.wait(30)
    pi.step(-HOUR)
    assert not trust.check()
    pi.wait(5)
    pi.ntp(step=HOUR)
    assert trust.check()


def test_timesyncds_own_step_stays_trusted_whether_seen_before_or_after_its_touch():
    pi = Pi()
    trust = pi.trust()
    pi.ntp()
    trust.check()
    pi.wait(50)
    pi.ntp(step=-3.0)  # a step and its touch, then the check
    assert trust.check()
    pi.wait(50)
    pi.step(4.0)       # the check falls between timesyncd's step ...
    assert not trust.check()
    pi.wait(0.002)
    pi.marker = pi.wall()  # ... and its touch of the marker
    assert trust.check()


def test_an_old_synchronisation_does_not_vouch_for_a_later_step():
    """The marker was touched before the step: it must not count as a sync after it."""
    pi = Pi()
    trust = pi.trust()
    pi.ntp()
    trust.check()
    pi.wait(20)
    pi.ntp()        # a regular sync the daemon has not looked at yet ...
    pi.wait(20)
    pi.step(HOUR)   # ... then the clock is set an hour ahead
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


def test_slewing_is_not_a_step():
    pi = Pi()
    trust = pi.trust()
    pi.ntp()
    trust.check()
    for _ in range(60):
        pi.wait(60)
        pi.step(0.025)  # NTP slews at most 500 ppm: 30 ms a minute
        assert trust.check()
    pi.wait(60)
    pi.step(1.2)
    assert not trust.check()


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
    assert trust.describe().startswith("stepped by +3600 s")


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
