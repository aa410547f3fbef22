"""Pure: the check-in trend as an SVG drawn on the server (no JavaScript, no CDN).

Mood (1 very low .. 5 very good) is a line over the days; each check-in that reported
side effects is a mark under it, red for strong ones. Every point has a <title>, which a
browser shows on hover and a screen reader reads.

    svg = mood_chart(checkins, start, end, tz)

Its dates and times are the patient's local ones (`tz`), as on the rest of their page.
"""
from __future__ import annotations

from datetime import datetime
from html import escape
from zoneinfo import ZoneInfo

from .history import Checkin

WIDTH, HEIGHT = 480, 200
LEFT, RIGHT, TOP, BOTTOM = 36, 10, 10, 40      # margins; the band under the plot holds side effects


def _x(at: datetime, start: datetime, end: datetime) -> float:
    span = (end - start).total_seconds() or 1.0
    return LEFT + (WIDTH - LEFT - RIGHT) * min(1.0, max(0.0, (at - start).total_seconds() / span))


def _y(mood: int) -> float:
    return TOP + (HEIGHT - TOP - BOTTOM) * (5 - mood) / 4


def mood_chart(checkins: list[Checkin], start: datetime, end: datetime, tz: ZoneInfo) -> str:
    """An <svg> of mood and side effects between start and end, its times read on `tz`."""
    first, last = start.astimezone(tz), end.astimezone(tz)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
             f'height="{HEIGHT}" role="img" aria-label="Mood and side effects, {first:%d %b} to {last:%d %b}" '
             'class="trend">']
    for mood in range(1, 6):
        y = _y(mood)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">{mood}</text>')
    band = HEIGHT - BOTTOM + 22
    parts.append(f'<text x="{LEFT - 6}" y="{band + 4}" text-anchor="end" class="axis">SE</text>')
    parts.append(f'<text x="{LEFT}" y="{HEIGHT - 2}" class="axis">{first:%d %b}</text>'
                 f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 2}" text-anchor="end" class="axis">{last:%d %b}</text>')
    moods = [(c, _x(c.at, start, end), _y(c.mood)) for c in checkins if c.mood is not None and 1 <= c.mood <= 5]
    if len(moods) > 1:
        points = " ".join(f"{x:.1f},{y:.1f}" for _, x, y in moods)
        parts.append(f'<polyline points="{points}" class="mood-line"/>')
    for checkin, x, y in moods:
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" class="mood-point">'
                     f'<title>{checkin.at.astimezone(tz):%d %b %H:%M}: mood {checkin.mood}</title></circle>')
    for checkin in checkins:
        if checkin.side_effects and checkin.side_effects != "none":
            x = _x(checkin.at, start, end)
            kind = "strong" if checkin.side_effects == "strong" else "mild"
            parts.append(f'<rect x="{x - 3:.1f}" y="{band - 6}" width="6" height="12" class="se-{kind}">'
                         f'<title>{checkin.at.astimezone(tz):%d %b %H:%M}: side effects {escape(str(checkin.side_effects))}'
                         '</title></rect>')
    if not checkins:
        parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" class="axis">no check-ins</text>')
    parts.append("</svg>")
    return "".join(parts)
