"""A dispenser on a virtual clock: boot it, cut its power, and move time through every
moment it asks for, on a device clock that may differ from the true one.

The scenario runner (`simulate --scenario`), the randomized simulation (harness/) and the
tests' rig all drive a device this way; one loop keeps them from drifting apart.

    >>> from datetime import datetime, timedelta, timezone
    >>> class Alarm:                       # anything with wakeup_at and on_time
    ...     def __init__(self): self.seen = []
    ...     def wakeup_at(self, now): return now.replace(minute=0, second=0) + timedelta(hours=1)
    ...     def on_time(self, now): self.seen.append(f"{now:%H:%M}")
    >>> alarm = Alarm()
    >>> device = VirtualDevice(datetime(2026, 12, 1, 8, 30, tzinfo=timezone.utc), boot=lambda: None)
    >>> device.running = alarm
    >>> device.advance(datetime(2026, 12, 1, 11, 15, tzinfo=timezone.utc))
    >>> alarm.seen                         # every hour it asked for, then the moment asked
    ['09:00', '10:00', '11:00', '11:15']
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Callable, Protocol

ZERO = timedelta(0)


class Ticking(Protocol):
    """What the virtual clock drives: the daemon, or an engine wrapped by `EngineTicks`."""

    def wakeup_at(self, now: datetime) -> datetime | None: ...

    def on_time(self, now: datetime) -> None: ...


class VirtualDevice:
    """The true time, the device running (or off until `back_at`), and the loop between.

    `boot()` is called when the power comes back; it sets `running` (or leaves it None if
    the device died again while starting). `offset()` is how far the device's clock is
    from the true time (a boot without an RTC, a step NTP made): the device is asked
    and told in its own time, while `advance` moves the true one.
    """

    def __init__(self, start: datetime, boot: Callable[[], None],
                 offset: Callable[[], timedelta] = lambda: ZERO) -> None:
        self.true = start
        self.running: Ticking | None = None
        self.back_at: datetime | None = None
        self._boot = boot
        self._offset = offset

    def device_time(self) -> datetime:
        return self.true + self._offset()

    def power_cut(self, downtime: timedelta | None) -> None:
        """Memory is lost; the device comes back after `downtime` (at once for zero; never for None)."""
        self.running = None
        self.back_at = None if downtime is None else self.true + downtime
        if downtime == ZERO:
            self.back_at = None
            self._boot()

    def advance(self, target: datetime, *, tick_at_target: bool = True) -> None:
        """Move the true clock to `target`, telling the device of every moment it asks for
        up to it, and booting it when its power comes back on the way.

        With `tick_at_target` (the default) the device is told of `target` itself too;
        without, only of moments before it: a run that covers [start, until) stops there.
        """
        def reached(moment: datetime) -> bool:
            return moment <= target if tick_at_target else moment < target

        while True:
            if self.running is None:
                if self.back_at is not None and reached(self.back_at):
                    self.true = max(self.true, self.back_at)
                    self.back_at = None
                    self._boot()
                    continue
                self.true = max(self.true, target)
                return
            skew = self._offset()
            wakeup = self.running.wakeup_at(self.true + skew)
            if wakeup is None or not reached(wakeup - skew):
                break
            self.true = max(self.true, wakeup - skew)
            self.running.on_time(self.device_time())
        self.true = max(self.true, target)
        if tick_at_target and self.running is not None:
            self.running.on_time(self.device_time())


class EngineTicks:
    """An engine as `Ticking`: it asks for `next_wakeup` and is told by `tick`.

    `call` runs each engine call (the simulation catches a power cut inside one there).
    """

    def __init__(self, engine: "EngineLike", call: Callable[[Callable[[], object]], object] = lambda act: act()):
        self.engine = engine
        self._call = call
        self.ticks = 0

    def wakeup_at(self, now: datetime) -> datetime | None:
        return self.engine.next_wakeup(now)

    def on_time(self, now: datetime) -> None:
        self.ticks += 1
        self._call(lambda: self.engine.tick(now))


class EngineLike(Protocol):
    def next_wakeup(self, now: datetime) -> datetime | None: ...

    def tick(self, now: datetime) -> object: ...
