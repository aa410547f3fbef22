"""Free TCP ports for the servers the tests start, outside the kernel's ephemeral range.

A port from `bind(("127.0.0.1", 0))` comes from the ephemeral range
(/proc/sys/net/ipv4/ip_local_port_range, 32768-60999 on Debian), the same range every
outgoing connection on the machine draws its local port from. A broker that a test
stops and starts again on "its" port then sometimes finds it taken by some client's
connection: "address already in use". Below the range the kernel never hands a port
out on its own, so a port found free there stays free unless another test takes it.

Parallel workers (pytest-xdist, other checkouts' suites on the same machine) pick at
random, each xdist worker from its own slice, and every port is bind-tested first.

    port = free_port()
"""
from __future__ import annotations

import os
import random
import socket

HOST = "127.0.0.1"
FLOOR = 20000          # well above the registered services that may run on a developer's machine
RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"

_given: set[int] = set()      # never the same port twice in one process
_random = random.Random(os.urandom(16))


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for automatically assigned local ports (Linux default if unreadable)."""
    try:
        with open(RANGE_FILE) as file:
            low, high = (int(part) for part in file.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def candidate_range() -> range:
    """The ports to pick from: below the ephemeral range, else above it."""
    low, high = ephemeral_range()
    if low - FLOOR >= 1000:
        return range(FLOOR, low)
    if 65535 - high >= 1000:
        return range(high + 1, 65536)
    return range(1024, low)  # a machine configured oddly: the little room there is


def _worker_slice(ports: range) -> range:
    """This xdist worker's share of `ports` (all of them outside xdist)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")          # "gw0", "gw1", ...
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or count < 2:
        return ports
    index = int(worker[2:]) % count
    size = len(ports) // count
    return ports[index * size:(index + 1) * size]


def is_free(port: int, host: str = HOST) -> bool:
    """True when a listener could bind `port` now (no SO_REUSEADDR: TIME_WAIT counts as taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    """A port below the ephemeral range that nothing listens on, never given out before here."""
    ports = _worker_slice(candidate_range())
    for _ in range(200):
        port = _random.choice(ports)
        if port not in _given and is_free(port, host):
            _given.add(port)
            return port
    raise RuntimeError(f"no free port found in {ports.start}-{ports.stop - 1}")
