"""Whether the wall clock can be believed, on a device that may have no battery clock.

The dose rules need the true time: a clock that runs ahead releases a dose before its
window truly opens and closes windows early (a false missed dose). A Raspberry Pi has no
real-time clock; after a boot its clock starts from a saved time, and NTP steps it to the
true time later; someone may also set it by hand. So the rules act only while the clock
is trusted (docs/RULES.md, "Time"), and this module says when that is:

- `"always"`: a battery real-time clock, or the simulator's host clock, is believed;
- `"synchronized"`: believed once systemd-timesyncd has synchronised it since the boot
  (it touches /run/systemd/timesync/synchronized at each synchronisation, and /run is
  emptied at every boot), and no longer once the wall clock steps where the steady
  clock did not, until a synchronisation after that step. A clock that was synchronised
  and then lost the network stays trusted: it drifts seconds a day, not hours.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

MODES = ("synchronized", "always")
MARKER = Path("/run/systemd/timesync/synchronized")
STEP_TOLERANCE_S = 1.0  # far above what NTP slews between two checks, far below a dose window
SLEW_PER_S = 0.0005     # the kernel slews the clock by at most 500 ppm


def marker_mtime(path: Path = MARKER) -> float | None:
    """When timesyncd last synchronised the clock (the marker's mtime), or None if not since boot."""
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def steady_seconds() -> float:
    """Seconds since boot, suspend included: it never steps, whatever the wall clock does."""
    return time.clock_gettime(getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))


def trust_for(config, *, log_trusted: bool = True, simulated: bool = False) -> "ClockTrust":
    """The ClockTrust a config asks for (`[clock] trust` and `marker`).

    A simulated clock may run faster than the steady one: no step to watch for there.
    """
    marker = Path(config.clock_marker)
    return ClockTrust("always" if simulated else config.clock_trust, log_trusted=log_trusted,
                      synchronized_at=lambda: marker_mtime(marker))


class ClockTrust:
    """Call `check()` before the rules act on the wall clock; it is cheap (two clock reads, a stat).

        >>> trust = ClockTrust("synchronized")
        >>> trust.check()            # False until timesyncd has synchronised since boot
    """

    def __init__(self, mode: str = "synchronized", *, log_trusted: bool = True,
                 synchronized_at: Callable[[], float | None] = marker_mtime,
                 wall: Callable[[], float] = time.time, steady: Callable[[], float] = steady_seconds):
        """`log_trusted`: the log's last word on the clock (`store.clock_logged_trusted()`). When it says
        untrusted (a restart after a step this process cannot see), only a synchronisation
        after this start counts, not the marker of an earlier one."""
        if mode not in MODES:
            raise ValueError(f"clock trust must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        self._synchronized_at, self._wall, self._steady = synchronized_at, wall, steady
        self._seen_sync = synchronized_at() if mode == "synchronized" else None
        self.trusted = mode == "always" or (self._seen_sync is not None and log_trusted)
        self._offset: float | None = None   # wall - steady at the last check
        self._checked_at = steady()          # steady time of the last check
        self._untrusted_since = None if self.trusted else self._checked_at
        self.last_step: float | None = None  # seconds the wall clock last stepped by (+ forward)

    def check(self) -> bool:
        """Is the wall clock to be believed now? Notices steps and synchronisations since the last call."""
        if self.mode == "always":
            return True
        wall, steady, synced = self._wall(), self._steady(), self._synchronized_at()
        offset, elapsed = wall - steady, steady - self._checked_at
        new_sync = synced is not None and synced != self._seen_sync
        if self._offset is not None and abs(offset - self._offset) > STEP_TOLERANCE_S + SLEW_PER_S * elapsed:
            self.last_step = offset - self._offset
            # Trusted again only by a synchronisation no older than the last check (read on
            # the new clock): timesyncd's own step touches the marker as it steps.
            self.trusted = new_sync and synced >= wall - elapsed - STEP_TOLERANCE_S
        elif new_sync:
            self.trusted = True
        self._offset, self._checked_at, self._seen_sync = offset, steady, synced
        if self.trusted:
            self._untrusted_since = None
        elif self._untrusted_since is None:
            self._untrusted_since = steady
        return self.trusted

    def untrusted_for(self) -> float:
        """Seconds (steady) since the clock stopped being trusted, 0 while it is trusted."""
        return 0.0 if self._untrusted_since is None else self._steady() - self._untrusted_since

    def describe(self) -> str:
        """One line for `selftest` and `status`."""
        if self.mode == "always":
            return "trusted as set (clock.trust = \"always\": a battery clock, or the simulator)"
        if self.check():
            return "synchronised by NTP"
        if self.last_step is not None:
            return f"stepped by {self.last_step:+.0f} s and not synchronised since: doses are held"
        if self._seen_sync is not None:  # synchronised once, but the log says the clock went wrong since
            return "not synchronised since the log last found it untrusted: doses are held until it is"
        return "not synchronised by NTP since boot: doses are held until it is"
