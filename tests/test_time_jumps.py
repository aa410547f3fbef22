"""The wall clock jumping: an hour forward and back (a boot with no RTC, then NTP), and back then forward.

The rules work on the log's time, which never decreases (RULES.md, "Time"). The first
tests drive the real engine and log through clock steps on a clock that is believed
(`clock.trust = "always"`: an RTC, the simulator) and show what happens: no dose is
released twice, nothing is released while the clock reads earlier than the log (the
clamped time is not a real one), a correction back never reopens a window or repeats a
missed dose, and limits are counted on the log's time. Such a clock running ahead is
taken at its word: that case is shown too, as documented.

The tests after `NoRtcPi` run the same engine as on a Pi with no battery clock
(`clock.trust = "synchronized"`, the default there): the real ClockTrust watches the
wall clock, a steady clock and timesyncd's marker, and until NTP has synchronised the
clock nothing is released and no window is judged, so a clock ahead, by a boot or by
hand, causes neither an early release nor a false missed dose.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from dispenser.clocktrust import ClockTrust, TrustedClock
from support import NY, Memory, Rig, as_needed, daily, local, schedule

HOUR = timedelta(hours=1)


def set_clock(rig: Rig, text: str):
    """The wall clock now reads `text` (local), whichever way it moved; the engine ticks."""
    rig.now = local(text, rig.tz)
    rig.engine.tick(rig.now)
    return rig.now


def morning() -> Rig:
    """Sertraline at 08:00, window [07:30, 10:00); stock for days."""
    return Rig(schedule(daily("sertraline", 1, ["08:00"], before=30, after=120)), "2026-11-24T06:00:00",
               stock={"sertraline": 30})


def releases(rig: Rig) -> list[dict]:
    return rig.events("dose.released", "prn.released")


def ats_never_decrease(rig: Rig) -> bool:
    ats = [e["at"] for e in rig.events()]
    return ats == sorted(ats)


def test_forward_then_back_releases_once_and_the_correction_confirms_instead():
    rig = morning()
    rig.at("2026-11-24T07:00:00")
    set_clock(rig, "2026-11-24T08:15:00")  # really 07:15: the clock runs an hour ahead
    assert rig.engine.press(rig.now).feedback == "released"
    set_clock(rig, "2026-11-24T07:16:00")  # NTP: back to the true time
    assert rig.engine.press(rig.now).feedback == "confirmed"
    for text in ("2026-11-24T07:20:00", "2026-11-24T07:40:00", "2026-11-24T08:16:00", "2026-11-24T09:30:00"):
        set_clock(rig, text)
        assert rig.engine.press(rig.now).feedback != "released"
    assert len(releases(rig)) == 1
    rig.at("2026-11-24T12:00:00")
    assert rig.events("dose.missed") == [] and ats_never_decrease(rig)


def test_nothing_is_released_while_the_clock_reads_earlier_than_the_log():
    """After a clock that ran ahead is corrected, the log's time lies ahead of the true time:
    releasing at that clamped time could give a dose before its window truly opened."""
    rig = morning()
    rig.at("2026-11-24T07:00:00")
    set_clock(rig, "2026-11-24T08:00:00")  # really 07:00: the window seems open, dose.due is logged
    assert [e["at"] for e in rig.events("dose.due")] == ["2026-11-24T13:00:00.000Z"]
    set_clock(rig, "2026-11-24T07:01:00")  # corrected: the window truly opens at 07:30
    outcome = rig.engine.press(rig.now)
    assert outcome.feedback == "too_early" and outcome.detail["reason"] == "clock_behind"
    assert outcome.detail["opens_at"] == local("2026-11-24T08:00:00")
    set_clock(rig, "2026-11-24T07:45:00")  # truly in the window, but the log still reads 08:00
    assert rig.engine.rules.releasable(rig.now) == []  # not shown as due: a press would not release it
    assert rig.engine.press(rig.now).feedback == "too_early"
    assert releases(rig) == []
    set_clock(rig, "2026-11-24T08:00:01")  # the clock has passed the log: time is real again
    assert rig.engine.press(rig.now).feedback == "released"
    [release] = releases(rig)
    assert release["at"] == "2026-11-24T13:00:01.000Z"  # the wall clock, not a clamped time
    assert ats_never_decrease(rig)


def test_a_correction_back_never_reopens_a_missed_window_nor_misses_it_twice():
    """A clock an hour ahead closes the window early: the dose is logged missed then. That is
    the one false miss a wrong clock can cause (the rules cannot tell a clock ahead from an
    hour that passed); it errs on the safe side, and the correction makes nothing worse."""
    rig = morning()
    rig.at("2026-11-24T09:30:00")
    set_clock(rig, "2026-11-24T10:30:00")  # really 09:30, the window [07:30, 10:00) truly still open
    assert len(rig.events("dose.missed")) == 1
    set_clock(rig, "2026-11-24T09:31:00")
    assert rig.engine.press(rig.now).feedback == "too_early"  # not released: the dose is final
    for text in ("2026-11-24T09:59:00", "2026-11-24T10:00:00", "2026-11-24T10:31:00", "2026-11-24T12:00:00"):
        set_clock(rig, text)
        rig.engine.press(rig.now)
    assert len(rig.events("dose.missed")) == 1 and releases(rig) == []
    rig.at("2026-11-25T07:45:00")
    assert rig.engine.press(rig.now).feedback == "released"  # tomorrow is untouched
    assert ats_never_decrease(rig)


def test_a_correction_back_causes_no_missed_dose_of_its_own():
    """The clock ahead for a while logs nothing final; corrected, the dose is given in its window."""
    rig = morning()
    rig.at("2026-11-24T08:40:00")
    set_clock(rig, "2026-11-24T09:40:00")  # ahead, but the window [07:30, 10:00) is still open
    set_clock(rig, "2026-11-24T08:41:00")
    set_clock(rig, "2026-11-24T09:45:00")  # the clock has passed the log again
    assert rig.engine.press(rig.now).feedback == "released"
    rig.at("2026-11-24T12:00:00")
    assert rig.events("dose.missed") == [] and len(releases(rig)) == 1


def test_a_boot_with_the_clock_behind_the_log_releases_nothing_until_the_clock_is_right(tmp_path):
    """No RTC: the clock starts where it was saved, behind the log; NTP steps it forward later."""
    rig = Rig(schedule(daily("naltrexone", 2, ["09:00"], before=30, after=120)), "2026-11-24T06:00:00",
              stock={"naltrexone": 10}, db=str(tmp_path / "d.db"))
    rig.at("2026-11-24T09:00:00")
    rig.engine.refill(rig.now, "naltrexone", 20)  # the last event: 09:00
    rig.restart("2026-11-24T08:30:00")  # really 09:30; the clock reads 08:30
    outcome = rig.engine.press(rig.now)
    assert outcome.feedback == "too_early" and outcome.detail["reason"] == "clock_behind"
    assert releases(rig) == []
    set_clock(rig, "2026-11-24T09:31:00")  # NTP
    assert rig.engine.press(rig.now).feedback == "released"
    assert len(releases(rig)) == 1 and ats_never_decrease(rig) and rig.store.verify()[0]


def test_a_restart_while_the_clock_is_behind_loses_nothing_and_releases_nothing(tmp_path):
    rig = Rig(schedule(daily("sertraline", 1, ["08:00"])), "2026-11-24T06:00:00",
              stock={"sertraline": 10}, db=str(tmp_path / "d.db"))
    rig.at("2026-11-24T07:00:00")
    set_clock(rig, "2026-11-24T08:00:00")
    count = len(rig.events())
    set_clock(rig, "2026-11-24T07:02:00")
    rig.restart("2026-11-24T07:05:00")
    assert len(rig.events()) >= count
    assert rig.engine.press(rig.now).feedback == "too_early" and releases(rig) == []
    set_clock(rig, "2026-11-24T08:05:00")
    assert rig.engine.press(rig.now).feedback == "released"
    assert ats_never_decrease(rig) and rig.store.verify()[0]


def test_as_needed_across_a_jump_forward_and_back_keeps_its_interval_and_logs_no_denial():
    rig = Rig(schedule(as_needed("hydroxyzine", 3, every_h=4, max_units=3)), "2026-11-24T06:00:00",
              stock={"hydroxyzine": 10})
    rig.at("2026-11-24T12:00:00")
    set_clock(rig, "2026-11-24T13:00:00")  # really 12:00
    assert rig.engine.hold(rig.now).feedback == "released"  # logged 13:00
    set_clock(rig, "2026-11-24T12:01:00")
    denied = rig.engine.hold(rig.now)
    assert denied.feedback == "denied" and denied.detail["reason"] == "clock_behind"
    assert rig.events("prn.denied") == []  # not the person's doing: no misuse signal
    set_clock(rig, "2026-11-24T16:59:00")
    assert rig.engine.hold(rig.now).detail["reason"] == "interval"  # 4 h from the logged 13:00
    set_clock(rig, "2026-11-24T17:00:00")
    assert rig.engine.hold(rig.now).feedback == "released"
    ats = [e["at"] for e in releases(rig)]
    assert ats == ["2026-11-24T18:00:00.000Z", "2026-11-24T22:00:00.000Z"] and ats_never_decrease(rig)


def test_a_small_step_back_only_pauses_releases_for_that_long():
    rig = morning()
    rig.at("2026-11-24T07:50:00")
    rig.engine.refill(rig.now, "sertraline", 30)  # logged at 07:50:00
    rig.now -= timedelta(seconds=2)  # NTP steps back two seconds
    assert rig.engine.press(rig.now).feedback == "too_early"
    rig.now += timedelta(seconds=3)
    assert rig.engine.press(rig.now).feedback == "released"


# -- a Pi with no battery clock: the clock is trusted only once NTP has synchronised it --------


class NoRtcPi:
    """The Pi around a Rig: a wall clock that may be wrong, a steady clock that counts the true
    time, and timesyncd's marker, touched at each synchronisation. The engine is given the time
    the daemon's clock gives it (clocktrust.TrustedClock): `rig.now`."""

    def __init__(self, rig: Rig):
        self.rig = rig
        self.error = timedelta(0)  # the wall clock less the true time
        self.skew = timedelta(0)   # the time given to the engine (rig.now) less the true time
        self.marker: float | None = rig.now.timestamp()  # set up on a network: synchronised
        self.memory = Memory()     # the anchor kept for this boot (the log's meta, on a Pi)
        self._watch()

    def _watch(self, log_trusted: bool = True) -> None:
        self.trust = ClockTrust("synchronized", log_trusted=log_trusted, synchronized_at=lambda: self.marker,
                                wall=lambda: self.wall().timestamp(), steady=lambda: self.true().timestamp(),
                                memory=self.memory)
        self.rig.clock_trusted = self.trust.check
        self._believe()

    def _believe(self) -> None:
        """The daemon's loop reads its clock: the engine is given what ClockTrust believes."""
        true = self.true()
        self.rig.now = TrustedClock(self.trust).now()
        self.skew = self.rig.now - true

    def true(self) -> datetime:
        return self.rig.now - self.skew

    def wall(self) -> datetime:
        return self.true() + self.error

    def at(self, text: str) -> datetime:
        """Live on to the TRUE local time `text`, ticking as the daemon would."""
        given = local(text) + self.skew
        self.rig.at(given.astimezone(NY).replace(tzinfo=None).isoformat())
        return self.rig.now

    def step(self, delta: timedelta) -> None:
        """The wall clock is set (by hand, a bad source); the steady clock does not move."""
        self.error += delta
        self._believe()

    def ntp(self, to: timedelta = timedelta(0)) -> None:
        """timesyncd steps the clock (to the true time, or `to` off it: a hostile server) and touches its marker."""
        self.error = to
        self.marker = self.wall().timestamp()
        self._believe()

    def restart_daemon(self) -> None:
        """The daemon process restarts (a crash, an update); the Pi does not reboot."""
        self._watch(log_trusted=self.rig.store.clock_logged_trusted())  # as runner.build_daemon
        self.rig.restart()

    def power_cut(self, off: timedelta, clock_error: timedelta) -> None:
        """Off for `off`; the clock comes back `clock_error` off the truth; /run is empty."""
        true = self.true() + off
        self.error, self.marker, self.memory = clock_error, None, Memory()
        self.rig.now, self.skew = true + clock_error, clock_error
        self._watch()
        self.rig.restart()


def press(rig: Rig):
    return rig.engine.press(rig.now)


def held(outcome) -> bool:
    return outcome.detail.get("reason") == "clock_unsynchronized" and not outcome.releases


def test_a_boot_with_the_clock_an_hour_ahead_releases_and_misses_nothing_until_ntp():
    rig = morning()  # sertraline 08:00, window [07:30, 10:00)
    pi = NoRtcPi(rig)
    pi.at("2026-11-24T07:00:00")
    last_before = rig.events()[-1]["at"]
    pi.power_cut(timedelta(minutes=30), clock_error=timedelta(hours=1))  # true 07:30, the clock 08:30
    outcome = press(rig)
    assert outcome.feedback == "too_early" and held(outcome)
    pi.at("2026-11-24T09:15:00")  # the clock reads 10:15: by it, the window has closed
    assert held(press(rig))
    assert rig.events("dose.missed") == [] and releases(rig) == []
    # While the clock is untrusted the log's time stands still: nothing in it lies ahead of the truth.
    assert [e["type"] for e in rig.events()[-2:]] == ["clock.unsynchronized", "device.started"]
    assert all(e["at"] == last_before for e in rig.events()[-2:])
    pi.ntp()  # true 09:15: the window is truly still open
    assert press(rig).feedback == "released"
    assert [e["type"] for e in rig.events("clock.synchronized")] == ["clock.synchronized"]
    assert rig.events("clock.synchronized")[0]["at"] == "2026-11-24T14:15:00.000Z"
    pi.at("2026-11-24T12:00:00")
    assert rig.events("dose.missed") == [] and len(releases(rig)) == 1
    assert ats_never_decrease(rig) and rig.store.verify()[0]


def test_a_boot_with_the_saved_time_behind_misses_only_what_truly_closed():
    """The usual boot with no RTC: the clock starts at the time saved before the power went."""
    rig = morning()
    pi = NoRtcPi(rig)
    pi.at("2026-11-24T06:30:00")
    pi.power_cut(timedelta(hours=4), clock_error=timedelta(hours=-4))  # true 10:30, the clock 06:30
    pi.at("2026-11-24T10:40:00")
    assert rig.events("dose.missed") == [] and held(press(rig))
    pi.ntp()
    press(rig)  # the catch-up: the 08:00 window truly closed at 10:00
    [missed] = rig.events("dose.missed")
    assert missed["data"]["scheduled_at"] == "2026-11-24T13:00:00Z"
    assert missed["at"] == "2026-11-24T15:40:00.000Z"  # when it was known, never before 10:00
    assert missed["data"]["while"] == "clock_unsynchronized"  # not the person's miss: the device could not give it
    [alert] = [e for e in rig.events("alert.raised") if "missed" in e["data"]["kind"]]
    assert alert["data"]["kind"] == "doses_missed_while_unavailable" and alert["data"]["events"] == [missed["event_id"]]
    assert "waiting for the correct time, so it could not give it" in alert["data"]["message"]
    pi.at("2026-11-25T07:45:00")
    assert press(rig).feedback == "released" and len(rig.events("dose.missed")) == 1


def test_a_clock_set_an_hour_ahead_by_hand_after_ntp_is_not_believed():
    """After the first synchronisation the boot clock counts: the step moves nothing."""
    rig = morning()
    pi = NoRtcPi(rig)
    pi.at("2026-11-24T07:20:00")
    pi.step(timedelta(hours=1))  # the clock reads 08:20, truly 07:20: the window is not open
    outcome = press(rig)
    assert outcome.feedback == "too_early" and outcome.detail.get("reason") != "clock_unsynchronized"
    pi.at("2026-11-24T07:45:00")  # the wall clock reads 08:45
    assert press(rig).feedback == "released"
    assert releases(rig)[0]["at"] == "2026-11-24T12:45:00.000Z"  # the true time, not the wall clock's
    pi.at("2026-11-24T09:50:00")  # the wall clock reads 10:50: past the window, which truly is open
    assert press(rig).feedback == "confirmed"
    pi.at("2026-11-24T12:00:00")
    assert rig.events("dose.missed") == [] and len(releases(rig)) == 1 and ats_never_decrease(rig)


def test_a_synchronised_clock_offline_for_days_keeps_dispensing():
    rig = morning()
    pi = NoRtcPi(rig)  # synchronised once; the network then goes for three days
    for day in ("24", "25", "26"):
        pi.at(f"2026-11-{day}T07:45:00")
        assert press(rig).feedback == "released"
        rig.now += timedelta(milliseconds=36)  # the crystal drifts, far below a step
    assert len(releases(rig)) == 3 and rig.events("clock.unsynchronized") == []


def test_two_days_without_ntp_hold_every_dose_then_each_closed_window_is_missed_once(tmp_path):
    rig = Rig(schedule(daily("sertraline", 1, ["08:00", "20:00"], before=30, after=120)), "2026-11-24T06:00:00",
              stock={"sertraline": 30}, db=str(tmp_path / "d.db"))
    pi = NoRtcPi(rig)
    pi.power_cut(timedelta(minutes=5), clock_error=timedelta(0))  # NTP unreachable for two days
    for text in ("2026-11-24T08:00:00", "2026-11-24T20:00:00", "2026-11-25T08:00:00", "2026-11-25T20:00:00"):
        pi.at(text)
        assert held(press(rig))
    pi.power_cut(timedelta(0), clock_error=timedelta(0))  # a restart while still unsynchronised
    assert rig.engine.rules.state.clock_trusted is False and not rig.store.clock_logged_trusted()  # as the log says
    pi.at("2026-11-26T07:45:00")
    assert releases(rig) == [] and rig.events("dose.missed") == []
    pi.ntp()
    assert press(rig).feedback == "released"  # today's window is open
    missed = [e["data"]["scheduled_at"] for e in rig.events("dose.missed")]
    assert missed == ["2026-11-24T13:00:00Z", "2026-11-25T01:00:00Z", "2026-11-25T13:00:00Z",
                      "2026-11-26T01:00:00Z"]
    assert {e["data"].get("while") for e in rig.events("dose.missed")} == {"clock_unsynchronized"}
    assert ats_never_decrease(rig) and rig.store.verify()[0]


def test_as_needed_waits_for_ntp_at_boot_and_is_not_counted_as_a_denial():
    rig = Rig(schedule(as_needed("hydroxyzine", 3, every_h=4, max_units=3)), "2026-11-24T06:00:00",
              stock={"hydroxyzine": 10})
    pi = NoRtcPi(rig)
    pi.at("2026-11-24T12:00:00")
    pi.power_cut(timedelta(minutes=1), clock_error=timedelta(hours=3))  # booted, NTP not yet answered
    outcome = rig.engine.hold(rig.now)
    assert outcome.feedback == "denied" and held(outcome)
    assert rig.events("prn.denied") == [] and releases(rig) == []
    pi.ntp()
    assert rig.engine.hold(rig.now).feedback == "released"


def test_a_daemon_restart_after_a_step_by_hand_keeps_the_count_of_this_boot():
    """The restarted daemon finds the anchor (the log's meta, for this boot): the fresh marker
    and the wall clock an hour ahead do not become its time."""
    rig = morning()
    pi = NoRtcPi(rig)
    pi.at("2026-11-24T07:00:00")
    pi.step(timedelta(hours=1))
    assert press(rig).feedback == "too_early"  # truly 07:00
    pi.marker = pi.wall().timestamp()  # timesyncd touched its marker since: vouches for nothing now
    pi.restart_daemon()
    assert press(rig).feedback == "too_early"
    pi.at("2026-11-24T07:45:00")
    assert press(rig).feedback == "released"
    pi.at("2026-11-24T12:00:00")
    assert rig.events("dose.missed") == [] and len(releases(rig)) == 1 and ats_never_decrease(rig)


def test_ten_forward_steps_of_eight_hours_release_no_more_than_the_limit_by_the_true_time():
    """The bug: a hostile time server stepped the clock +8 h ten times (timesyncd touching its
    marker each time); 10 as-needed doses went out in 10 real minutes against 3 a day, and
    when the true time came back every dose was held for about 3 days."""
    rig = Rig(schedule(as_needed("hydroxyzine", 3, every_h=4, max_units=3),
                       daily("sertraline", 1, ["08:00"], before=30, after=120)), "2026-11-24T06:00:00",
              stock={"hydroxyzine": 30, "sertraline": 30})
    pi = NoRtcPi(rig)
    pi.at("2026-11-24T12:00:00")
    for minute in range(10):
        pi.ntp(to=pi.error + timedelta(hours=8))
        rig.engine.hold(rig.now, "hydroxyzine")
        pi.at(f"2026-11-24T12:{minute + 1:02d}:00")
    assert pi.wall() - pi.true() == timedelta(hours=80)
    assert [e["at"] for e in releases(rig)] == ["2026-11-24T17:00:00.000Z"]  # the first, at the true time
    for hour in range(13, 36):  # a hold every true hour for a day, the clock still 80 h ahead
        pi.at(f"2026-11-{24 + hour // 24}T{hour % 24:02d}:00:00")
        rig.engine.hold(rig.now, "hydroxyzine")
    by_true_time = [e["at"] for e in releases(rig) if e["type"] == "prn.released"]
    assert by_true_time == ["2026-11-24T17:00:00.000Z", "2026-11-24T21:00:00.000Z", "2026-11-25T01:00:00.000Z"]
    pi.ntp()  # the true time comes back
    pi.at("2026-11-25T12:00:00")
    assert rig.engine.hold(rig.now, "hydroxyzine").feedback == "released"  # not held for days
    pi.at("2026-11-26T07:45:00")
    assert press(rig).feedback == "released"
    missed = rig.events("dose.missed")  # nobody pressed on the 24th and 25th; none closed early by the wall clock
    assert [(e["data"]["scheduled_at"], e["at"]) for e in missed] == [
        ("2026-11-24T13:00:00Z", "2026-11-24T15:00:00.000Z"), ("2026-11-25T13:00:00Z", "2026-11-25T15:00:00.000Z")]
    assert all(e["data"].get("while") is None for e in rig.events("dose.missed"))
    assert ats_never_decrease(rig) and rig.store.verify()[0]
