"""Shared pytest fixtures."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# ---------------------------------------------------------------------------
# MQTT broker fixtures (owner: the MQTT/sync slice). Each test gets its own
# Mosquitto on a free 127.0.0.1 port, never the system broker on 1883.
# ---------------------------------------------------------------------------
sys.path.insert(0, str(Path(__file__).parent))
from broker import Broker, BrokerError, TlsFiles, find_mosquitto, make_tls_files  # noqa: E402
from depth import ENV as DEEP_ENV, HYPOTHESIS_EXAMPLES, deep  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--deep", action="store_true",
                     help="the randomized tests at their full size (tests/depth.py); slower")


def pytest_configure(config):
    # Before the test modules are imported (their hypothesis settings read it), and inherited
    # by xdist's workers, which are given the same options.
    if config.getoption("--deep"):
        os.environ[DEEP_ENV] = "1"
    # Hypothesis: every @given without a size of its own runs HYPOTHESIS_EXAMPLES examples
    # (100, 300 with --deep); loaded before the test modules make their settings, which
    # inherit it. An explicit --hypothesis-profile wins.
    from hypothesis import settings
    settings.register_profile("quick", max_examples=HYPOTHESIS_EXAMPLES[0])
    settings.register_profile("deep", max_examples=HYPOTHESIS_EXAMPLES[1])
    if not config.getoption("hypothesis_profile", None):
        settings.load_profile("deep" if deep() else "quick")


def _require_mosquitto() -> None:
    try:
        find_mosquitto()
    except BrokerError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def broker_factory(tmp_path):
    """make(**options) -> a started Broker (options as in tests/broker.py); all stopped after the test."""
    _require_mosquitto()
    started: list[Broker] = []

    def make(**options) -> Broker:
        broker = Broker(tmp_path / f"broker{len(started)}", **options)
        started.append(broker)
        return broker.start()

    try:
        yield make
    finally:
        for broker in started:
            broker.stop()


@pytest.fixture
def broker(broker_factory) -> Broker:
    """An anonymous broker without persistence."""
    return broker_factory()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory) -> TlsFiles:
    """A CA and a localhost server certificate, made once per test session."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))

# --- end of MQTT broker fixtures --------------------------------------------


@pytest.fixture(scope="session")
def postgres_worker():
    """One private PostgreSQL per xdist worker (per session), started when a test first asks
    (care_support.postgres_cluster); every test makes a database of its own in it."""
    from postgres import Postgres
    cluster = Postgres().start()
    try:
        yield cluster
    finally:
        cluster.stop()
