"""Pure: the words of a notification. It names the patient, says what kind of alert,
how severe, when, and how to acknowledge; it never carries a drug's name.

A device's alert has a `message` that may name a medication ("Naltrexone was released
but not confirmed"), and its `kind` is whatever the device sent: so neither is ever
copied into a message. The text is composed here from a fixed table of kinds and
severities; a kind not in the table is "another alert", never its raw text.

    title, body = compose(patient, send, ack_url)
"""
from __future__ import annotations

from datetime import datetime

from ..vocabulary import AlertKind
from .config import Patient
from .ladder import CLINIC, Send

KINDS: dict[str, str] = {
    # from the device (contract sections 3, 5, 6)
    AlertKind.DOSE_MISSED: "a dose was missed",
    AlertKind.DOSES_MISSED_WHILE_UNAVAILABLE: "doses were missed while the dispenser was off or its clock wrong",
    AlertKind.DOSE_UNCONFIRMED: "a dose was released but not confirmed as taken",
    AlertKind.DOSE_HELD: "a dose was held back by the safety rules",
    AlertKind.DOSE_WITHDRAWN: "a dose was withdrawn by a schedule change",
    AlertKind.PRN_DENIED_REPEATEDLY: "as-needed doses were asked for again and again, and refused",
    AlertKind.STOCK_LOW: "a compartment is running low",
    AlertKind.STOCK_EMPTY: "a compartment is empty",
    AlertKind.SCHEDULE_APPLIED_LOCALLY: "a schedule was put in force at the dispenser itself",
    AlertKind.SCHEDULE_REJECTED: "a schedule sent to the dispenser was refused",
    AlertKind.RELEASE_FAILED: "the dispenser failed to release a dose",
    AlertKind.RELEASE_UNCERTAIN: "the dispenser cannot tell whether a dose was released",
    AlertKind.DEVICE_FAULT: "the dispenser reported a fault",
    AlertKind.CLOCK_UNSYNCHRONIZED: "the dispenser's clock is not set, so doses are held",
    AlertKind.SIDE_EFFECTS_REPORTED: "strong side effects were reported",
    AlertKind.LOW_MOOD_REPORTED: "a very low mood was reported",
    AlertKind.LID_OPENED: "the dispenser's lid was opened outside a dose",
    AlertKind.PILL_UNEXPECTED: "the dispenser saw a pill fall that no release gave",
    # from the care service
    "device_offline": "the dispenser is offline",
    "log_gap": "events are missing from the dispenser's log",
    "log_fork": "the dispenser's log was changed and sent again (two events for one place)",
    "log_rewritten": "the dispenser's log does not chain: it was rewritten",
    "log_device_mismatch": "an event claimed to be from another dispenser",
    "pattern_missed_run": "several doses of one medication were missed in a row",
    "pattern_side_effects": "side effects were reported again and again",
    "pattern_mood_falling": "mood has been falling",
}
SEVERITIES = ("info", "warning", "critical")
MAX_LISTED = 10   # alerts spelled out in one message; a rewritten log can raise hundreds at once


def noun(count: int, word: str, many: str | None = None) -> str:
    """The noun for `count` of it: `minute` for 1, `minutes` for any other count (0 too)."""
    return word if count == 1 else (many or word + "s")


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 minute`, `15 minutes`: a count and its noun agreeing, never left to the reader."""
    return f"{count} {noun(count, word, many)}"


def describe(kind: str) -> str:
    """The words for an alert kind; an unknown kind is never echoed (it could name anything)."""
    return KINDS.get(kind, "another alert (see the care service)")


def severity(value: str) -> str:
    return value if value in SEVERITIES else "unknown severity"


def when(moment: datetime, patient: Patient) -> str:
    """`Tue 24 Nov 09:00 (America/New_York)`: the patient's local time."""
    local = moment.astimezone(patient.tz)
    return f"{local:%a %d %b %H:%M} ({patient.timezone})"


def ack_link(public_url: str, alert_id: str, token: str) -> str:
    return f"{public_url}/ack/{alert_id}?token={token}"


def compose(patient: Patient, send: Send, public_url: str, tokens: dict[str, str]) -> tuple[str, str]:
    """(title, body) of one message; `tokens` maps each alert_id to its acknowledgement token."""
    alerts = send.alerts
    worst = max(alerts, key=lambda a: SEVERITIES.index(a.severity) if a.severity in SEVERITIES else -1)
    if len(alerts) == 1:
        title = f"{patient.name}: {describe(alerts[0].kind)} ({severity(alerts[0].severity)})"
    else:
        title = f"{patient.name}: {len(alerts)} alerts, the most severe {severity(worst.severity)}"
    lines = []
    if send.rung == CLINIC and any(a.rung == 1 for a in alerts):
        lines.append(f"Not acknowledged by {patient.name}'s people within "
                     f"{plural(patient.escalate_after_min, 'minute')}.")
    lines.append(f"{patient.name}'s dispenser ({send.device}):")
    for alert in alerts[:MAX_LISTED]:
        lines.append(f"- {describe(alert.kind)}: {severity(alert.severity)}, {when(alert.at, patient)}")
        lines.append(f"  acknowledge: {ack_link(public_url, alert.alert_id, tokens[alert.alert_id])}"
                     f" or `dispenser care ack {alert.alert_id}`")
    if len(alerts) > MAX_LISTED:
        lines.append(f"... and {len(alerts) - MAX_LISTED} more: `dispenser care status` lists every open alert")
    return title, "\n".join(lines)


