"""The simulated device's chute: what its pill-drop sensor sees when a compartment cycles.

Every open-close cycle of a compartment drops one pill past the break-beam (its mock
pin pulled low, then high), unless that compartment was jammed for its next release
(`jam`: a scenario's `jam` step, the live simulator's `j` key). A jam lasts one
release: the cycles of that release drop nothing, the next ones drop again. The
simulated compartments hold what the log counts (nobody miscounts a simulation), and
the rules never release from one whose count is 0, so an empty compartment is never
cycled here.
"""
from __future__ import annotations

import threading


class SimulatedChute:
    """Drives a mock drop-sensor pin from the compartments' moves (`Compartments.on_move`)."""

    def __init__(self, pin: object) -> None:
        self.pin = pin  # a gpiozero MockPin
        self._lock = threading.Lock()
        self._jammed: set[int] = set()
        self._jamming: set[int] = set()  # jammed for the release now cycling
        self.dropped = 0

    def jam(self, compartment: int) -> None:
        """The next release of `compartment` drops nothing."""
        with self._lock:
            self._jammed.add(compartment)

    def jam_next(self) -> None:
        """The next release, from whichever compartment, drops nothing (the live simulator's `j`)."""
        with self._lock:
            self._jam_any = True

    _jam_any = False

    def jammed(self, compartment: int) -> bool:
        with self._lock:
            return compartment in self._jammed or compartment in self._jamming

    def on_move(self, compartment: int, state: str) -> None:
        """A servo moved: the first open of a jammed release takes the jam; each close drops a pill."""
        with self._lock:
            if state == "open" and (compartment in self._jammed or self._jam_any):
                self._jammed.discard(compartment)
                self._jam_any = False
                self._jamming.add(compartment)
            if state == "detached":
                self._jamming.discard(compartment)
            falls = state == "closed" and compartment not in self._jamming
        if falls:
            self.dropped += 1
            self.pin.drive_low()  # type: ignore[attr-defined]
            self.pin.drive_high()  # type: ignore[attr-defined]
