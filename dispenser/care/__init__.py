"""The care service (`dispenser care`, contract section 7): beside the broker, never on the Pi.

It ingests every device's events, checks each device's log as it arrives, and tells
people (apprise) with a ladder: the patient's people first, the clinic after
`escalate_after_min` unacknowledged. Installed as the `care` extra
(`pip install 'dispenser[care]'`); nothing the daemon imports imports this package.

    config.py    care.toml: [mqtt], [database], [web], [alerts], [patterns], [[patient]]
    database.py  SQLite or PostgreSQL behind one small adapter, and the schema
    chain.py     pure: a device's seq order and hash chain against what is stored
    ingest.py    one MQTT message -> stored once, checked, alerts raised
    ladder.py    pure: who is told what, and when (now + alert state -> sends)
    message.py   pure: a notification's text (names the patient, never a drug)
    patterns.py  pure: runs of missed doses, repeated side effects, falling mood
    notify.py    apprise: a message to a rung's URLs
    serve.py     the workers (MQTT 5 shared subscription) and the ladder's timer
    cli.py       `dispenser care serve / status / ack / link`
"""
from __future__ import annotations

import importlib.util

EXTRA_MODULES = ("apprise", "psycopg", "starlette", "jinja2", "uvicorn", "argon2", "python_multipart")


def missing_extra() -> str | None:
    """The first library of the `care` extra that is not installed, or None."""
    for name in EXTRA_MODULES:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):
            return name
    return None
