"""The hardware layer's exceptions: one base class the daemon can catch."""
from __future__ import annotations


class HardwareError(Exception):
    """Any hardware problem; the text is one line fit for a log or stderr."""


class HardwareConfigError(HardwareError):
    """A bad `[hardware]` table, e.g. `hardware.servo_pins[2]: pin 18 is already used by the buzzer`."""


class PinFactoryError(HardwareError):
    """No usable GPIO library for the chosen pin factory."""


class LcdFault(HardwareError):
    """The display could not be driven; `cause` is the underlying exception."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class ServoFault(HardwareError):
    """A compartment's servo could not be driven; `cause` is the underlying exception."""

    def __init__(self, message: str, compartment: int | None = None,
                 cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.compartment = compartment
        self.cause = cause
