"""Failed staff logins are limited per account and per client address: after N failures
within the window, that name or address gets 429 and a clear message for a while, the
right password too; the rules on their own (time given), then through the real app
served by uvicorn on a free port, its clock injected. The client address is varied by
X-Forwarded-For, which uvicorn believes from 127.0.0.1 only (a local reverse proxy)."""
from __future__ import annotations

import re
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from email.message import Message
from http.cookiejar import CookieJar

import pytest

from dispenser.care.config import CareConfigError, LoginLimits, parse_care_config
from dispenser.care.database import Database
from care_web_site import add_user, web_server
from dispenser.care.web.throttle import LoginThrottle, keys
from care_support import quick_password_hashes  # noqa: F401 - fixture
from ports import free_port

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)
LIMITS = LoginLimits(max_failures=3, window_s=600, lockout_s=900)
STAFF, PASSWORD = "ana", "correct horse battery"


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def test_n_failures_within_the_window_lock_the_key_for_the_lockout():
    throttle = LoginThrottle(LIMITS)
    ana = keys("ana", "10.0.0.1")
    for n in range(3):
        assert throttle.wait(ana, T0 + seconds(n)) is None
        throttle.failed(ana, T0 + seconds(n))
    assert throttle.wait(ana, T0 + seconds(3)) == seconds(900 + 2 - 3)
    assert throttle.wait(keys("ana", "10.9.9.9"), T0 + seconds(3)) is not None, "the name is locked anywhere"
    assert throttle.wait(keys("bob", "10.0.0.1"), T0 + seconds(3)) is not None, "the address is locked for any name"
    assert throttle.wait(keys("bob", "10.0.0.2"), T0 + seconds(3)) is None
    assert throttle.wait(ana, T0 + seconds(902)) is None, "the lock ends"
    throttle.failed(ana, T0 + seconds(903))
    assert throttle.wait(ana, T0 + seconds(904)) is None, "counting starts again after a lock"


def test_failures_spread_wider_than_the_window_never_lock_and_a_success_forgets_them():
    throttle = LoginThrottle(LIMITS)
    ana = keys("ana", "10.0.0.1")
    for n in range(6):
        throttle.failed(ana, T0 + seconds(301 * n))       # at most two in any 600 s
    assert throttle.wait(ana, T0 + seconds(301 * 6)) is None
    throttle.failed(ana, T0 + seconds(2000))
    throttle.succeeded(ana)
    throttle.failed(ana, T0 + seconds(2001))
    assert throttle.wait(ana, T0 + seconds(2002)) is None, "the failures before the success are forgotten"


def test_memory_stays_bounded_when_many_names_are_tried():
    throttle = LoginThrottle(LIMITS, max_keys=100)
    for n in range(1000):
        throttle.failed(keys(f"name{n}", None), T0 + seconds(n / 1000))
    assert len(throttle._failures) <= 100


@pytest.mark.parametrize("key, value", [("login_max_failures", 0), ("login_window_s", "10"),
                                        ("login_lockout_s", 100_000)])
def test_the_limits_come_from_the_web_table_and_bad_ones_are_one_line(key, value):
    assert parse_care_config({}).login == LoginLimits()
    assert parse_care_config({"web": {"login_max_failures": 10}}).login.max_failures == 10
    with pytest.raises(CareConfigError, match=f"web.{key}: must be a whole number"):
        parse_care_config({"web": {key: value}})


class Browser:
    """One client of the app: its cookies, its address (X-Forwarded-For), redirects not followed."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object) -> None:
            return None

    def __init__(self, base: str, address: str):
        self.base, self.address = base, address
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()), self.NoRedirect())

    def request(self, path: str, form: dict | None = None) -> tuple[int, str, Message]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(self.base + path, data=data, headers={"X-Forwarded-For": self.address})
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, response.read().decode(), response.headers
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(), error.headers

    def log_in(self, name: str, password: str) -> tuple[int, str, Message]:
        _, page, _ = self.request("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        return self.request("/login", {"csrf": csrf, "name": name, "password": password})


@pytest.fixture
def served(tmp_path, quick_password_hashes):
    clock = {"now": T0}
    port = free_port()
    config = parse_care_config({"database": {"url": f"sqlite:///{tmp_path / 'care.db'}"},
                                "web": {"listen": f"127.0.0.1:{port}", "login_max_failures": 3,
                                        "login_window_s": 600, "login_lockout_s": 900}})
    database = Database(config.database_url)
    with database.connect() as conn:
        add_user(conn, STAFF, PASSWORD, T0)
    server = web_server(config, database, port, now=lambda: clock["now"])
    server.start()
    assert server.wait_ready(60)
    try:
        yield f"http://127.0.0.1:{port}", clock
    finally:
        server.stop()


def refused(result: tuple[int, str, Message], minutes: int) -> None:
    status, page, headers = result
    assert status == 429, status
    assert f"Too many failed logins for this name or from this address: try again in {minutes} minutes." in page
    assert 0 < int(headers["Retry-After"]) <= minutes * 60


def test_the_app_refuses_a_name_after_n_failures_even_with_the_right_password_until_the_lock_ends(served):
    base, clock = served
    client = Browser(base, "10.0.0.1")
    for _ in range(3):
        status, page, _ = client.log_in(STAFF, "not the password")
        assert status == 401 and "Wrong name or password." in page
    refused(client.log_in(STAFF, PASSWORD), 15)
    refused(Browser(base, "10.0.0.2").log_in(STAFF, PASSWORD), 15)     # the account, from anywhere
    clock["now"] = T0 + timedelta(minutes=10)
    refused(client.log_in(STAFF, PASSWORD), 5)
    clock["now"] = T0 + timedelta(minutes=15, seconds=1)
    status, _, headers = client.log_in(STAFF, PASSWORD)
    assert status == 303 and headers["location"] == "/"


def test_the_app_refuses_an_address_after_n_failures_whatever_the_name(served):
    base, clock = served
    guesser = Browser(base, "10.0.0.9")
    for name in ("root", "admin", "clinic"):
        assert guesser.log_in(name, "password123")[0] == 401
    refused(guesser.log_in(STAFF, PASSWORD), 15)
    status, _, _ = Browser(base, "10.0.0.10").log_in(STAFF, PASSWORD)
    assert status == 303, "the staff elsewhere still log in"
