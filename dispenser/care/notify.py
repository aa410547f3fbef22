"""Deliver one message to a rung's URLs through apprise (SMS gateways, e-mail, ntfy,
Telegram, Signal, a JSON webhook...). Imported only by the care service.

    deliver(("json://127.0.0.1:9000/hook",), "Sam: a dose was missed (warning)", body)  # -> True
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def check_urls(urls: list[str]) -> str | None:
    """The first URL apprise cannot use, or None: checked before the service starts."""
    import apprise
    for url in urls:
        if not apprise.Apprise().add(url):
            return url
    return None


def deliver(urls: tuple[str, ...], title: str, body: str) -> bool:
    """True when every URL took the message; a failure is logged (never its text)."""
    import apprise
    sender = apprise.Apprise()
    for url in urls:
        sender.add(url)
    ok = bool(sender.notify(title=title, body=body, body_format=apprise.NotifyFormat.TEXT))  # lines kept in e-mail
    if not ok:
        log.warning("a notification to %d recipient(s) was not delivered; it will be tried again", len(urls))
    return ok
