"""Whether the wall clock can be believed, on a device that may have no battery clock.

The dose rules need the true time: a clock that runs ahead releases a dose before its
window truly opens and closes windows early (a false missed dose). A Raspberry Pi has no
real-time clock; after a boot its clock starts from a saved time, and NTP steps it to the
true time later; someone may also set it by hand. So the rules act only while the clock
is trusted (docs/RULES.md, "Time"), and this module says when that is:

- `"always"`: a battery real-time clock, or the simulator's host clock, is believed;
- `"synchronized"`: believed once systemd-timesyncd has synchronised it since the boot
  (it touches /run/systemd/timesync/synchronized at each synchronisation, and /run is
  emptied at every boot). Before that the clock is not trusted and the rules hold doses.

**After the first synchronisation since boot the boot clock counts.** The time given to
the rules is then the wall clock at that synchronisation plus the seconds the boot
clock (CLOCK_BOOTTIME: never stepped, slewed with the wall clock) has counted since. The
wall clock is followed only while it stays within what drift explains (1 s plus 500 ppm
of the time since the anchor; a synchronised clock drifts seconds a day, and NTP slews
rather than steps it). A later step beyond that, forward or back, by hand or by a time
server (timesyncd touches its marker when it steps, so the marker vouches for nothing
then), is reported once (`take_step_report`, logged as a `device.fault` of the "clock")
and not believed: ten steps of +8 h cannot open as-needed intervals or close windows.
When the wall clock comes back within the tolerance it is followed again.

The anchor lives as long as the boot: a restarted daemon finds it again through
`memory` (the log's meta, keyed by the kernel's boot id); a reboot anchors afresh at its
first synchronisation. A time source that lies at boot is only stopped by NTS (chrony)
or a battery clock (docs/INSTALL.md).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from .vocabulary import ClockTrustMode

if TYPE_CHECKING:
    from .config import Config
    from .store import Store

MODES = tuple(ClockTrustMode)
MARKER = Path("/run/systemd/timesync/synchronized")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
STEP_TOLERANCE_S = 1.0  # far above what NTP slews between two checks, far below a dose window
SLEW_PER_S = 0.0005     # the kernel slews the clock by at most 500 ppm; drift is far less
MEMORY_KEY = "clock_anchor"  # the log's meta key that keeps the anchor across daemon restarts


def marker_mtime(path: Path = MARKER) -> float | None:
    """When timesyncd last synchronised the clock (the marker's mtime), or None if not since boot."""
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def steady_seconds() -> float:
    """Seconds since boot, suspend included: it never steps, whatever the wall clock does."""
    return time.clock_gettime(getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))


def boot_id(path: Path = BOOT_ID) -> str | None:
    """The kernel's id of this boot (new at every boot), or None where there is none."""
    try:
        return path.read_text(encoding="ascii").strip() or None
    except OSError:
        return None


class StoreMemory:
    """Keeps a ClockTrust's anchor in the log's meta table, for this boot only.

        >>> from types import SimpleNamespace
        >>> from dispenser.store import Store
        >>> store = Store.open(":memory:", "disp-0001")
        >>> t = SimpleNamespace(wall=1_800_000_000.0, boot=100.0)     # the clocks, injected
        >>> def started(boot):          # the daemon's ClockTrust, started in the kernel's boot `boot`
        ...     return ClockTrust("synchronized", memory=StoreMemory(store, boot), synchronized_at=lambda: 1.0,
        ...                       wall=lambda: t.wall, steady=lambda: t.boot)
        >>> started("boot-1").now()     # synchronised: anchored, the anchor kept in the log
        1800000000.0
        >>> t.wall += 8 * 3600; t.boot += 60     # a step by hand, and a restart a minute later
        >>> started("boot-1").now()     # the same boot: the counted time, the step not believed
        1800000060.0
        >>> started("boot-2").now()     # another boot anchors afresh, on the wall clock
        1800028800.0
    """

    def __init__(self, store: Store, boot: str | None = None) -> None:
        self.store, self.boot = store, boot if boot is not None else boot_id()

    def recall(self) -> dict | None:
        if self.boot is None:
            return None
        try:
            saved = json.loads(self.store.meta_get(MEMORY_KEY) or "null")
        except Exception:  # noqa: BLE001 - a note that cannot be read (or parsed) is no note
            return None
        return saved if isinstance(saved, dict) and saved.get("boot") == self.boot else None

    def remember(self, anchor: dict) -> None:
        if self.boot is None:
            return
        try:
            self.store.meta_set(MEMORY_KEY, json.dumps({**anchor, "boot": self.boot}))
        except Exception:  # noqa: BLE001 - a full disk must not stop the clock; the anchor stays in memory
            pass


def trust_for(config: Config, *, log_trusted: bool = True, simulated: bool = False,
              store: Store | None = None) -> ClockTrust:
    """The ClockTrust a config asks for (`[clock] trust` and `marker`).

    A simulated clock may run faster than the steady one: no step to watch for there.
    `store`: the log, where the anchor is kept for daemons and commands of the same boot.
    """
    marker = Path(config.clock_marker)
    return ClockTrust(ClockTrustMode.ALWAYS if simulated else config.clock_trust, log_trusted=log_trusted,
                      synchronized_at=lambda: marker_mtime(marker),
                      memory=StoreMemory(store) if store is not None else None)


class ClockTrust:
    """Call `check()` before the rules act on the wall clock; it is cheap (two clock reads, a stat).

        >>> from types import SimpleNamespace
        >>> t = SimpleNamespace(marker=None, wall=1_800_000_000.0, boot=100.0)   # the clocks, injected
        >>> trust = ClockTrust("synchronized", synchronized_at=lambda: t.marker,
        ...                    wall=lambda: t.wall, steady=lambda: t.boot)
        >>> trust.check()            # False until timesyncd has synchronised since boot
        False
        >>> t.marker = t.wall; trust.check()
        True
        >>> t.wall += 8 * 3600       # a step by hand afterwards
        >>> trust.now()              # the time to give the rules (TrustedClock wraps it): not moved
        1800000000.0
    """

    def __init__(self, mode: str = ClockTrustMode.SYNCHRONIZED, *, log_trusted: bool = True,
                 synchronized_at: Callable[[], float | None] = marker_mtime,
                 wall: Callable[[], float] = time.time, steady: Callable[[], float] = steady_seconds,
                 memory: StoreMemory | None = None) -> None:
        """`log_trusted`: the log's last word on the clock (`store.clock_logged_trusted()`). When it says
        untrusted (a restart before the clock was set), only a synchronisation after this start
        counts, not the marker of an earlier one. `memory` (StoreMemory) keeps the anchor of
        this boot across restarts of the daemon."""
        if mode not in MODES:
            raise ValueError(f"clock trust must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = ClockTrustMode(mode)
        self._synchronized_at, self._wall, self._steady = synchronized_at, wall, steady
        self._memory = memory if mode == ClockTrustMode.SYNCHRONIZED else None
        self._seen_sync = synchronized_at() if mode == ClockTrustMode.SYNCHRONIZED else None
        self._offset: float | None = None   # wall - steady at the last check
        self._checked_at = steady()          # steady time of the last check
        self.last_step: float | None = None  # seconds the wall clock last stepped by (+ forward)
        # After the first synchronisation: (wall - steady then, steady then), and the
        # wall - steady that is believed now (the anchor's, or the wall clock's while it agrees).
        self._anchor: tuple[float, float] | None = None
        self._believed: float | None = None
        self._off_by: float | None = None    # believed time less the wall clock, while a step is not believed
        self._report: str | None = None      # a step not believed, for the daemon to log once
        saved = self._memory.recall() if self._memory is not None else None
        if saved is not None:
            self._restore(saved)
        self.trusted = mode == ClockTrustMode.ALWAYS or self._anchor is not None or (
            self._seen_sync is not None and log_trusted)
        if mode == ClockTrustMode.SYNCHRONIZED and self.trusted and self._anchor is None:
            offset = wall() - self._checked_at
            self._anchored(offset, self._checked_at)
        self._untrusted_since = None if self.trusted else self._checked_at

    def _restore(self, saved: dict) -> None:
        try:
            anchor = (float(saved["offset"]), float(saved["steady"]))
            believed = float(saved["believed"])
            reported = saved.get("reported")
            reported = None if reported is None else float(reported)
        except (KeyError, TypeError, ValueError):
            return
        self._anchor, self._believed, self._reported = anchor, believed, reported

    _reported: float | None = None  # the wall clock's offset whose step was last reported

    def _anchored(self, offset: float, steady: float) -> None:
        self._anchor, self._believed = (offset, steady), offset
        self._remember()

    def _remember(self) -> None:
        if self._memory is not None and self._anchor is not None:
            self._memory.remember({"offset": self._anchor[0], "steady": self._anchor[1],
                                   "believed": self._believed, "reported": self._reported})

    def check(self) -> bool:
        """Is the time to be believed now? Notices steps and synchronisations since the last call."""
        if self.mode == ClockTrustMode.ALWAYS:
            return True
        wall, steady, synced = self._wall(), self._steady(), self._synchronized_at()
        offset, elapsed = wall - steady, steady - self._checked_at
        new_sync = synced is not None and synced != self._seen_sync
        previous = self._offset
        stepped = previous is not None and abs(offset - previous) > STEP_TOLERANCE_S + SLEW_PER_S * elapsed
        if stepped and previous is not None:
            self.last_step = offset - previous
        if self._anchor is None:
            # Trusted only by a synchronisation no older than the last check (read on the new
            # clock): timesyncd's own step touches the marker as it steps; a step by hand does not.
            if new_sync and synced is not None and (not stepped or synced >= wall - elapsed - STEP_TOLERANCE_S):
                self.trusted = True
                self._anchored(offset, steady)
        else:
            self._follow(offset, steady, self._anchor)
        self._offset, self._checked_at, self._seen_sync = offset, steady, synced
        if self.trusted:
            self._untrusted_since = None
        elif self._untrusted_since is None:
            self._untrusted_since = steady
        return self.trusted

    def _follow(self, offset: float, steady: float, anchor: tuple[float, float]) -> None:
        """After the anchor: follow the wall clock only within what drift explains."""
        anchor_offset, anchor_steady = anchor
        if abs(offset - anchor_offset) <= STEP_TOLERANCE_S + SLEW_PER_S * max(0.0, steady - anchor_steady):
            changed = offset != self._believed or self._reported is not None
            self._believed, self._off_by, self._reported = offset, None, None
            if changed:
                self._remember()
            return
        self._off_by = (self._believed if self._believed is not None else anchor_offset) - offset
        if self._reported is None or abs(offset - self._reported) > STEP_TOLERANCE_S:
            if self._reported is None:  # once per episode; later steps only move last_step
                ahead = -self._off_by
                self._report = (f"the wall clock was stepped to {abs(ahead):.0f} s {'ahead of' if ahead > 0 else 'behind'} "
                                f"the time counted since the first synchronisation; not believed: doses go by "
                                f"the counted time")
            self._reported = offset
            self._remember()

    def now(self) -> float:
        """The time to give the rules (seconds since the epoch): after the anchor, the counted
        time; before it, the wall clock as it is (the rules hold doses while it is untrusted)."""
        self.check()
        if self._believed is None:
            return self._wall()
        return self._steady() + self._believed

    def take_step_report(self) -> str | None:
        """A step after the first synchronisation that is not believed: its one line, once."""
        report, self._report = self._report, None
        return report

    @property
    def stepped_away(self) -> float | None:
        """Seconds the wall clock is off the time believed (+ ahead), while a step is not believed."""
        return None if self._off_by is None else -self._off_by

    def untrusted_for(self) -> float:
        """Seconds (steady) since the clock stopped being trusted, 0 while it is trusted."""
        return 0.0 if self._untrusted_since is None else self._steady() - self._untrusted_since

    def describe(self) -> str:
        """One line for `selftest` and `status`."""
        if self.mode == ClockTrustMode.ALWAYS:
            return "trusted as set (clock.trust = \"always\": a battery clock, or the simulator)"
        if self.check():
            if self._off_by is not None:
                return (f"synchronised by NTP; the wall clock has since been stepped {_span(-self._off_by)} "
                        f"and is not believed: the dispenser keeps its own count")
            return "synchronised by NTP"
        if self.last_step is not None:
            return f"stepped by {self.last_step:+.0f} s and not synchronised since: doses are held"
        if self._seen_sync is not None:  # synchronised once, but the log says the clock went wrong since
            return "not synchronised since the log last found it untrusted: doses are held until it is"
        return "not synchronised by NTP since boot: doses are held until it is"


def _span(seconds: float) -> str:
    direction = "ahead" if seconds > 0 else "back"
    return f"{abs(seconds):.0f} s {direction}"


class TrustedClock:
    """The daemon's clock (as daemon.SystemClock) on a Pi with `clock.trust = "synchronized"`:
    the time ClockTrust believes, so a step after the first synchronisation moves nothing.

        >>> from dispenser.config import Config
        >>> clock = TrustedClock(trust_for(Config()))
        >>> clock.now().tzinfo           # aware UTC
        datetime.timezone.utc
    """

    def __init__(self, trust: ClockTrust):
        self.trust = trust

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.trust.now(), timezone.utc)

    def seconds_until(self, moment: datetime) -> float:
        return (moment - self.now()).total_seconds()  # the counted time runs at the boot clock's pace
