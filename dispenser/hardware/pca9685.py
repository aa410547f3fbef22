"""Servos on a PCA9685 board (`servo_driver = "pca9685"`): compartment N on channel N-1.

The chip times the 50 Hz pulses itself, so they are steady (gpiozero's software PWM
jitters) and one board drives up to 16 compartments over the two I2C wires the LCD
already uses. `Pca9685Servo` has what `Compartments` drives: an `angle` setter,
`detach()` and `close()`. adafruit_pca9685 is imported only here, only for this
driver, to keep the daemon light on a Pi Zero.

    >>> servos = build_pca9685_servos(i2c, 8, address=0x40)   # a Pi's I2C bus  # doctest: +SKIP
    >>> box = Compartments(servos, [90] * 8, [0] * 8)        # those servos  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any

from .compartments import MAX_ANGLE, MIN_ANGLE
from .errors import HardwareError

SERVO_HZ = 50  # what hobby servos expect
CHANNELS = 16


class Pca9685Servo:
    """One hobby servo on one PCA9685 channel (an adafruit_pca9685 `PWMChannel`).

    The angle maps linearly onto [min_pulse_ms, max_pulse_ms] as for the gpio servos.
    `detach()` switches the channel fully off: no pulses, the servo goes limp.
    """

    def __init__(self, channel: Any, *, period_ms: float, min_pulse_ms: float = 1.0,
                 max_pulse_ms: float = 2.0) -> None:
        self.channel = channel  # adafruit_pca9685's PWMChannel (the library is untyped)
        self.period_ms = period_ms
        self.min_pulse_ms = min_pulse_ms
        self.max_pulse_ms = max_pulse_ms
        self._angle: float | None = None

    @property
    def angle(self) -> float | None:
        """The angle last set; None while detached."""
        return self._angle

    @angle.setter
    def angle(self, value: float | None) -> None:
        if value is None:  # as gpiozero: no angle = no pulses
            self.detach()
            return
        if not isinstance(value, (int, float)) or not MIN_ANGLE <= value <= MAX_ANGLE:
            raise ValueError(f"servo angle must be from {MIN_ANGLE:g} to {MAX_ANGLE:g}, not {value!r}")
        self.channel.duty_cycle = self.duty_cycle(value)
        self._angle = float(value)

    def duty_cycle(self, angle: float) -> int:
        """The library's 16-bit duty cycle for `angle`.

        The chip counts 4096 steps a period and the library drops the low 4 bits,
        which would cut every pulse short by up to one step (4.9 us); rounding to a
        whole step against the chip's real period keeps the error under half a step.
        """
        pulse_ms = self.min_pulse_ms + (self.max_pulse_ms - self.min_pulse_ms) * angle / MAX_ANGLE
        return round(pulse_ms / self.period_ms * 4096) << 4

    def detach(self) -> None:
        self.channel.duty_cycle = 0  # the library sets the channel's full-off bit
        self._angle = None

    def close(self) -> None:
        self.detach()


def build_pca9685_servos(i2c: object, count: int, *, address: int = 0x40, min_pulse_ms: float = 1.0,
                         max_pulse_ms: float = 2.0) -> list[Pca9685Servo]:
    """Servos on channels 0..count-1 of the PCA9685 at `address`, set to 50 Hz.

    Creating them moves nothing: each channel is switched off (a channel still
    pulsing from a previous run goes limp) and the first pulse comes with the first
    release. Raises HardwareError with one line when the chip does not answer.
    """
    if not 1 <= count <= CHANNELS:
        raise ValueError(f"a PCA9685 has {CHANNELS} channels, not {count}")
    try:
        from adafruit_pca9685 import PCA9685
    except Exception as error:
        raise HardwareError(f"PCA9685: the adafruit_pca9685 library cannot be loaded: "
                            f"{type(error).__name__}: {error}") from error
    try:
        chip = PCA9685(i2c, address=address)
        chip.frequency = SERVO_HZ
        period_ms = 1000 / chip.frequency  # read back: the prescaler rounds (20 ms -> 19.99 ms)
        servos = [Pca9685Servo(chip.channels[n], period_ms=period_ms, min_pulse_ms=min_pulse_ms,
                               max_pulse_ms=max_pulse_ms) for n in range(count)]
        for servo in servos:
            servo.detach()
    except (OSError, ValueError) as error:  # the library's probe raises ValueError
        raise HardwareError(f"PCA9685 at 0x{address:02X}: no answer on I2C bus 1 "
                            f"({type(error).__name__}: {error}); check SDA/SCL, VCC and the "
                            "address jumpers (i2cdetect -y 1)") from error
    return servos
