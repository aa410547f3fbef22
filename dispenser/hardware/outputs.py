"""Outputs the daemon drives: the buzzer and the status LED.

Deliberately dumb: on, off, or a blink pattern that gpiozero times on its own
thread. When and why to beep is the daemon's business.
"""
from __future__ import annotations

from gpiozero import DigitalOutputDevice, Factory


class _Signal:
    def __init__(self, pin: int, *, active_high: bool = True, pin_factory: Factory | None = None) -> None:
        self.device = DigitalOutputDevice(pin, active_high=active_high, initial_value=False,
                                          pin_factory=pin_factory)

    @property
    def is_on(self) -> bool:
        return bool(self.device.value)

    def on(self) -> None:
        self.device.on()

    def off(self) -> None:
        """Stop any pattern and switch off."""
        self.device.off()

    def pattern(self, on_ms: int, off_ms: int = 0, times: int | None = 1) -> None:
        """Blink `times` times (None: until `off()`), without blocking the caller."""
        if off_ms <= 0 and times == 1:
            off_ms = 1  # gpiozero needs a period; one on-pulse then stays off
        self.device.blink(on_time=on_ms / 1000, off_time=off_ms / 1000, n=times, background=True)

    def close(self) -> None:
        self.device.close()


class Buzzer(_Signal):
    """An active buzzer (it sounds when powered), usually through a transistor.

        >>> from gpiozero.pins.mock import MockFactory
        >>> buzzer = Buzzer(22, pin_factory=MockFactory())
        >>> buzzer.pattern(200, 100, times=3)   # three short beeps, timed on gpiozero's thread
        >>> buzzer.close()                      # (stops them)
    """

    def beep(self, ms: int) -> None:
        self.pattern(ms, 0, 1)


class Led(_Signal):
    """The status LED.

        >>> from gpiozero.pins.mock import MockFactory
        >>> led = Led(23, pin_factory=MockFactory())
        >>> led.pattern(500, 500, times=None)   # blink until led.off()
        >>> led.off(); led.is_on
        False
    """
