"""Choosing a gpiozero pin factory by name.

Imports are lazy: an x86 machine never imports RPi.GPIO or lgpio (both refuse to
load off a Pi), and choosing "mock" needs neither.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import PinFactoryError

if TYPE_CHECKING:  # gpiozero itself loads with the factory chosen: the [hardware] checks need none of it
    from gpiozero import Factory

FACTORIES = ("auto", "lgpio", "rpigpio", "mock")


def make_pin_factory(name: str = "auto") -> Factory:
    """A gpiozero pin factory: "lgpio" (Bookworm, Pi 5), "rpigpio", "mock"
    (MockFactory with PWM-capable pins), or "auto" (lgpio, then RPi.GPIO)."""
    if name == "mock":
        from gpiozero.pins.mock import MockFactory, MockPWMPin

        return MockFactory(pin_class=MockPWMPin)
    if name == "lgpio":
        return _open("lgpio", _lgpio)
    if name == "rpigpio":
        return _open("rpigpio", _rpigpio)
    if name == "auto":
        reasons = []
        for label, opener in (("lgpio", _lgpio), ("rpigpio", _rpigpio)):
            try:
                return opener()
            except Exception as error:  # each library fails differently off a Pi
                reasons.append(f"{label}: {_reason(error)}")
        raise PinFactoryError("no GPIO library works here (" + "; ".join(reasons)
                              + "); on a Raspberry Pi install lgpio, elsewhere use pin_factory = \"mock\"")
    raise PinFactoryError(f"unknown pin factory {name!r}; choose one of {', '.join(FACTORIES)}")


def _open(label: str, opener: Callable[[], Factory]) -> Factory:
    try:
        return opener()
    except Exception as error:
        raise PinFactoryError(f"pin factory {label!r} cannot be used: {_reason(error)}") from None


def _lgpio() -> Factory:
    from gpiozero.pins.lgpio import LGPIOFactory

    return LGPIOFactory()


def _rpigpio() -> Factory:
    from gpiozero.pins.rpigpio import RPiGPIOFactory

    return RPiGPIOFactory()


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
