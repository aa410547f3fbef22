"""The web view's Starlette app: routes, the staff's login and the family's link.

- Staff log in (`care user add`); the session is a cookie signed with the key kept in the
  database (Starlette's SessionMiddleware). Every form carries the session's CSRF token.
  Too many failed logins for a name or from an address: 429 for a while (throttle.py).
- Family open `/family/{token}` (`care link`): that one patient, read-only, until revoked.
- The link in a notification, `/ack/{alert_id}?token=...`, shows the alert and a button;
  the acknowledgement is the POST (a GET changes nothing: link previews open links).

    app = create_app(config, Database(config.database_url))
"""
from __future__ import annotations

import math
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ..cli import acknowledge
from ..config import CareConfig, Patient
from ..database import Database
from ..message import describe
from ...timeutil import parse_utc
from . import accounts, pages, queries, throttle

HERE = Path(__file__).parent
SESSION_COOKIE = "care_session"
SESSION_MAX_AGE = 12 * 3600          # a shift; then log in again
LINK_ACKER = "the link in a message"
HEADERS = {
    # No script runs anywhere; styles and images come from this server only.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",   # the family's and the ack link's tokens stay in this site
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _local(at: str | None, patient: Patient) -> str:
    """An event time as the patient's local time, as people read it."""
    if not at:
        return "-"
    return f"{parse_utc(at).astimezone(patient.tz):%a %d %b %H:%M}"


def create_app(config: CareConfig, database: Database, now: Callable[[], datetime] = _utc_now) -> Starlette:
    """The app over one care database; `now` is the clock of every page (tests inject it)."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["local"] = _local
    templates.env.globals["describe"] = describe
    with database.connect() as conn:
        key = accounts.session_key(conn)
    throttled = throttle.LoginThrottle(config.login)   # failed logins per name and per address

    def db(work: Callable[..., Any], *args: Any) -> Any:
        def run() -> Any:
            with database.connect() as conn:
                return work(conn, *args)
        return run_in_threadpool(run)

    def csrf(request: Request) -> str:
        if "csrf" not in request.session:
            request.session["csrf"] = secrets.token_urlsafe(24)
        return str(request.session["csrf"])

    async def csrf_ok(request: Request) -> tuple[bool, Any]:
        form = await request.form()
        sent, expected = str(form.get("csrf", "")), str(request.session.get("csrf", ""))
        return bool(expected) and secrets.compare_digest(sent.encode(), expected.encode()), form

    def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        context = {"user": request.session.get("user"), "csrf": csrf(request), **context}
        return templates.TemplateResponse(request, name, context, status_code=status, headers=HEADERS)

    def refused(request: Request, status: int, text: str) -> Response:
        return page(request, "message.html", {"title": "Not available", "text": text}, status)

    def login_needed(request: Request) -> Response | None:
        if request.session.get("user"):
            return None
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303, headers=HEADERS)

    async def overview(request: Request) -> Response:
        if (redirect := login_needed(request)) is not None:
            return redirect
        rows = await db(pages.overview, config, now())
        return page(request, "overview.html", {"rows": rows, "now": now()})

    async def patient(request: Request) -> Response:
        if (redirect := login_needed(request)) is not None:
            return redirect
        found = config.patient(request.path_params["device"])
        if found is None:
            return refused(request, 404, "No such patient.")
        context = await db(pages.patient_page, config, found, now())
        return page(request, "patient.html", {**context, "read_only": False})

    async def family(request: Request) -> Response:
        device = await db(queries.linked_device, request.path_params["token"])
        found = config.patient(device) if device else None
        if found is None:
            return refused(request, 404, "This link does not open any page: it may have been revoked. "
                                         "Ask the care team for a new one.")
        context = await db(pages.patient_page, config, found, now())
        return page(request, "patient.html", {**context, "read_only": True})

    async def staff_ack(request: Request) -> Response:
        if (redirect := login_needed(request)) is not None:
            return redirect
        ok, _ = await csrf_ok(request)
        device, alert_id = request.path_params["device"], request.path_params["alert_id"]
        if not ok:
            return refused(request, 403, "The form had expired. Go back, reload the page and try again.")
        if config.patient(device) is None or await db(queries.alert_of, alert_id, device) is None:
            return refused(request, 404, "No such alert.")
        await db(acknowledge, alert_id, request.session["user"], now())
        return RedirectResponse(f"/patient/{quote(device)}#alerts", status_code=303, headers=HEADERS)

    async def link_ack(request: Request) -> Response:
        alert_id = request.path_params["alert_id"]
        if request.method == "POST":
            form = await request.form()
            token = str(form.get("token", ""))
        else:
            token = request.query_params.get("token", "")
        alert = await db(queries.alert_by_token, alert_id, token) if token else None
        found = config.patient(alert.device) if alert else None
        if alert is None or found is None:
            return refused(request, 404, "This acknowledgement link is not valid.")
        if request.method == "POST" and alert.acked_at is None:
            await db(acknowledge, alert_id, LINK_ACKER, now())
            alert = await db(queries.alert_by_token, alert_id, token)
        return page(request, "ack.html", {"alert": alert, "patient": found, "token": token})

    async def login(request: Request) -> Response:
        target = request.query_params.get("next", "/")
        target = target if target.startswith("/") and not target.startswith("//") else "/"
        if request.method == "GET":
            return page(request, "login.html", {"next": target, "error": None})
        ok, form = await csrf_ok(request)
        name, password = str(form.get("name", "")), str(form.get("password", ""))
        if not ok:
            return page(request, "login.html", {"next": target, "error": "The form had expired; try again."}, 401)
        attempt = throttle.keys(name, request.client.host if request.client else None)
        wait = throttled.wait(attempt, now())
        if wait is not None:   # no password is checked while locked, the right one neither
            minutes = max(1, math.ceil(wait.total_seconds() / 60))
            error = (f"Too many failed logins for this name or from this address: try again in {minutes} "
                     f"minute{'s' if minutes != 1 else ''}.")
            response = page(request, "login.html", {"next": target, "error": error}, 429)
            response.headers["Retry-After"] = str(math.ceil(wait.total_seconds()))
            return response
        if name and await db(accounts.check_password, name, password):
            throttled.succeeded(attempt)
            request.session.clear()
            request.session["user"] = name
            return RedirectResponse(target, status_code=303, headers=HEADERS)
        throttled.failed(attempt, now())
        return page(request, "login.html", {"next": target, "error": "Wrong name or password."}, 401)

    async def logout(request: Request) -> Response:
        ok, _ = await csrf_ok(request)
        if ok:
            request.session.clear()
        return RedirectResponse("/login", status_code=303, headers=HEADERS)

    routes = [
        Route("/", overview),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/patient/{device}", patient),
        Route("/patient/{device}/ack/{alert_id}", staff_ack, methods=["POST"]),
        Route("/family/{token}", family),
        Route("/ack/{alert_id}", link_ack, methods=["GET", "POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [Middleware(SessionMiddleware, secret_key=key, session_cookie=SESSION_COOKIE,
                             max_age=SESSION_MAX_AGE, same_site="lax",
                             https_only=config.public_url.startswith("https://"))]
    return Starlette(routes=routes, middleware=middleware)
