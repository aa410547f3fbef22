"""Pure: failed staff logins counted per account and per client address, and refused for a
while after too many, so a password cannot be guessed at the speed of the network.

Every failure is counted against two keys, the name tried and the address it came from.
A key with `max_failures` failures within `window_s` is refused for `lockout_s`: every
login with that name, or from that address, is answered 429 without checking any
password (the right one too: else the lock would only slow the guessing). A success
forgets both keys' failures. Kept in memory: `care serve` is one process (docs/CARE.md),
and a restart forgetting the counts costs an attacker a restart of ours, not a guess.

    throttle = LoginThrottle(LoginLimits())
    throttle.wait(keys("ana", "10.0.0.7"), now)      # None, or how long to wait
    throttle.failed(keys("ana", "10.0.0.7"), now)
"""
from __future__ import annotations

import threading
from datetime import datetime, timedelta

from ..config import LoginLimits

MAX_KEYS = 10_000     # names and addresses remembered at once; the oldest are forgotten first


def keys(name: str, address: str | None) -> tuple[str, ...]:
    """The keys a login attempt counts against: its name and its client address."""
    return (f"name:{name}",) + ((f"address:{address}",) if address else ())


class LoginThrottle:
    """Failures per key and the keys locked out, at the times the caller gives."""

    def __init__(self, limits: LoginLimits, max_keys: int = MAX_KEYS):
        self.limits = limits
        self.max_keys = max_keys
        self._failures: dict[str, list[datetime]] = {}
        self._locked: dict[str, datetime] = {}     # key -> refused until
        self._lock = threading.Lock()

    def wait(self, attempt: tuple[str, ...], now: datetime) -> timedelta | None:
        """How long this attempt must wait (the longest lock among its keys), or None."""
        with self._lock:
            until = [self._locked[key] for key in attempt if key in self._locked and self._locked[key] > now]
            return max(until) - now if until else None

    def failed(self, attempt: tuple[str, ...], now: datetime) -> None:
        """Count a failure against each key; lock the keys that reach the limit."""
        window = timedelta(seconds=self.limits.window_s)
        with self._lock:
            for key in attempt:
                recent = [at for at in self._failures.pop(key, []) if now - at < window] + [now]
                if len(recent) >= self.limits.max_failures:
                    self._locked[key] = now + timedelta(seconds=self.limits.lockout_s)
                else:
                    self._failures[key] = recent   # re-inserted: the dict's order is the keys' last failure
            self._forget(now)

    def succeeded(self, attempt: tuple[str, ...]) -> None:
        """The right password: the failures counted against its keys are forgotten."""
        with self._lock:
            for key in attempt:
                self._failures.pop(key, None)

    def _forget(self, now: datetime) -> None:
        """Drop ended locks, and the oldest keys past `max_keys` (memory stays bounded)."""
        for key in [key for key, until in self._locked.items() if until <= now]:
            del self._locked[key]
        while len(self._failures) > self.max_keys:
            del self._failures[next(iter(self._failures))]
        while len(self._locked) > self.max_keys:
            del self._locked[next(iter(self._locked))]
