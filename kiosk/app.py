"""The app factory: one Flask app for citizen kiosks, post-office counters and mobile teams, built from the
station file. The top of the layers (docs/architecture.md): it wires the core, devices, sync and the pages."""
import logging
import secrets
import sqlite3
import time
import traceback
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from flask import Flask, g, jsonify, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect

from agent import views as agent_views

from . import audio, capture, card_views, citizen, device_state, health, i18n, web
from .core import db, keyfile, sealing
from .core.db import storage_problem
from .core.config import data_dir, load_station
from .receipts import ReceiptPrinter
from .startup import check_station_id, live_catalog, start_checks, station_mismatch

# An installed wheel carries the templates inside the package (pyproject.toml maps templates/ there); a
# source checkout has them beside it.
_HERE = Path(__file__).resolve().parent
TEMPLATES = next(folder for folder in (_HERE / "templates", _HERE.parent / "templates") if folder.is_dir())
csrf = CSRFProtect()


def _secret_key(folder: Path) -> bytes:
    return keyfile.load_or_create(folder / "session.key", lambda: secrets.token_bytes(32))


def create_app(config: dict | None = None, station_file: str | None = None) -> Flask:
    """Build the app for one station: the station file (see kiosk.core.config.load_station), with ``config``
    laid over it (tests pass a dict)."""
    station = load_station(station_file, overrides=config)
    folder = data_dir(station)
    # The database, its WAL, the keys: its owner's only (kiosk/core/keyfile.py). New files are made so;
    # what an older release or a copy left readable by others is narrowed here, at every start.
    narrowed = keyfile.keep_private(folder)
    if narrowed:
        logging.getLogger("kiosk").warning("data folder %s: %d files or folders were readable by other users; "
                                           "now owner-only (0600 files, 0700 folders)", folder, narrowed)
    app = Flask(__name__, template_folder=str(TEMPLATES))
    # The catalogs (sync/catalog_release.py): the live catalog release in the data folder, else
    # paths.procedures; new applications use the live one, a draft keeps the release it started on.
    releases = app.extensions["catalog_releases"] = live_catalog(station)
    if releases.problem:
        logging.getLogger("kiosk").error("catalog: %s; serving paths.procedures", releases.problem)
    app.config.update(
        STATION=station,
        DATABASE=str(folder / "station.db"),
        SECRET_KEY=_secret_key(folder),
        PAYLOAD_KEY=sealing.load_or_create_key(folder / "payload.key"),
        CATALOG=releases.catalog,
        CATALOG_RELEASE=str(releases.info["release"]) if releases.info else None,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=station["server"]["secure_cookies"],  # behind TLS: never over plain http
        WTF_CSRF_TIME_LIMIT=None,  # the session's own idle limit ends old forms
        MAX_CONTENT_LENGTH=256 * 1024,
    )
    app.config.update(AUDIO_DIR=folder / "audio", AUDIO_PROMPTS=audio.all_prompts(app.config["CATALOG"]))
    app.config["AUDIO_ON"] = audio.available() or any(app.config["AUDIO_DIR"].glob("*.wav"))
    # The station's own health (kiosk/health.py, docs/operations.md): a read-only folder, a full disk or a
    # damaged database starts the station paused (no new application) instead of failing citizens later.
    monitor = app.extensions["health"] = health.Monitor(station, app.config["DATABASE"])
    try:
        if not {"folder_read_only", "database_damaged"} & set(monitor.refresh(force=True).codes):
            db.migrate(app.config["DATABASE"])
    except sqlite3.DatabaseError as exc:
        logging.getLogger("kiosk").error("station database not migrated at start: %s",
                                         health.database_message(app.config["DATABASE"], exc))
        monitor.refresh(force=True)
    # Every start check (kiosk/startup.py; `kiosk check` runs the same), so a typo in the station file
    # stops start-up, not a citizen.
    printer_connection = start_checks(station, app.config["CATALOG"]).printer.connection
    # A station re-identified with dossiers still queued: the central would refuse every one of them. A
    # warning, not a refusal (kiosk/startup.py); staff see it in their bar until it is dealt with.
    mismatch = check_station_id(station, app.config["DATABASE"])
    if mismatch is not None:
        logging.getLogger("kiosk").warning("%s", mismatch.log_line())
    app.extensions["receipts"] = ReceiptPrinter(app.config["DATABASE"], station, printer_connection != "none")
    # What the sync worker's heartbeat tells the central of the devices (kiosk/device_state.py, docs/fleet.md):
    # started by `kiosk serve`, so an app made in a test does not ask its printer unasked.
    app.extensions["device_state"] = device_state.DeviceWatch(
        folder, station, lambda: device_state.catalog_version(app.config["CATALOG"], app.config.get("CATALOG_RELEASE")),
        app.extensions["receipts"], float(station["health"]["device_check_seconds"]))
    web.init_db(app)
    capture.init_app(app)  # before the CSRF check: it raises the body limit of page uploads
    csrf.init_app(app)

    # The station's working days: every page's processing times and due dates, and the receipts.
    app.extensions["calendar"] = releases.calendar  # the station file's days and the live release's
    app.jinja_env.globals.update(t=i18n.t, pick=i18n.pick, lang=i18n.current_language,
                                 station=station, htmx_version="2.0.11", processing_time=web.processing_time,
                                 result_due_day=web.result_due_day,
                                 station_mismatch=lambda: station_mismatch(web.get_db(), station["station"]["id"]))
    app.jinja_env.filters["money"] = lambda n: f"{n:,}".replace(",", ".")
    zone = ZoneInfo(station["station"]["timezone"])
    app.jinja_env.filters["local_date"] = lambda iso: datetime.fromisoformat(iso).astimezone(zone).strftime("%d/%m/%Y")
    app.jinja_env.filters["local_time"] = lambda iso: datetime.fromisoformat(iso).astimezone(zone).strftime("%H:%M %d/%m/%Y")
    app.jinja_env.filters["age"] = lambda iso: i18n.age(datetime.fromisoformat(iso))

    @app.context_processor
    def layout():
        # The same template serves the whole page and, for htmx, only what goes inside <main>.
        partial = request.headers.get("HX-Request") == "true" and not request.headers.get("HX-History-Restore-Request")
        return {"layout": "_main_only.html" if partial else "base.html", "station_health": monitor.last}

    applied = [releases.catalog]  # the catalog app.config holds, as this app last set it

    @app.before_request
    def start_timer():
        g.started = time.perf_counter()
        releases.refresh()
        if releases.catalog is not applied[0]:  # the sync worker or a USB import installed a release
            applied[0] = releases.catalog
            app.config.update(CATALOG=releases.catalog, CATALOG_RELEASE=str(releases.info["release"]),
                              AUDIO_PROMPTS=audio.all_prompts(releases.catalog))
            app.extensions["calendar"] = releases.calendar
            logging.getLogger("kiosk").info("catalog release %s is live", releases.info["release"])
            app.extensions["device_state"].catalog_changed()  # the heartbeat names it at the next cycle
        monitor.refresh()  # at most every 30 s; a request never waits for another thread's check

    @web.passive
    def health_report():
        """`/-/health` for monitoring and the fleet heartbeat: states, codes and counts, no personal data."""
        body = monitor.report(web.get_db)
        return jsonify(body), 503 if body["state"] == "paused" else 200

    app.add_url_rule("/-/health", "health", health_report)

    @app.after_request
    def no_store(response):
        if "started" in g:  # how long the app took, for benchmarks and browser dev tools
            response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - g.started) * 1000:.2f}"
        # Pages may hold personal data: never cache them, on the station or in the browser.
        if not request.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
        return response

    @app.errorhandler(404)
    def not_found(_e):
        return render_template("error.html", title_key="not_found_title", text_key="not_found_text"), 404

    @app.errorhandler(CSRFError)
    def expired(_e):
        return render_template("error.html", title_key="expired_title", text_key="expired_text"), 400

    @app.errorhandler(413)
    def too_large(_e):
        return render_template("error.html", title_key="error_page_title", text_key="error_page_text"), 413

    @app.errorhandler(Exception)
    def server_error(exc):
        from werkzeug.exceptions import HTTPException
        if isinstance(exc, HTTPException):
            return render_template("error.html", title_key="error_page_title",
                                   text_key="error_page_text"), exc.code
        if isinstance(exc, sqlite3.DatabaseError):  # a full disk, a damaged file: look again now, say which
            logging.getLogger("kiosk").error("%s", health.database_message(app.config["DATABASE"], exc))
            monitor.refresh(force=True)
            if storage_problem(exc) is not None:  # said exactly above; the citizen gets where to go instead
                return health.paused_page()
        # Log the type and place, never the request's form (it holds personal data).
        # The traceback's frames say where; the exception's message may quote input, so it is left out.
        logging.getLogger("kiosk").error("unhandled %s at %s %s\n%s", type(exc).__name__, request.method,
                                         request.url_rule, "".join(traceback.format_tb(exc.__traceback__)))
        return render_template("error.html", title_key="error_page_title", text_key="error_page_text"), 500

    @app.errorhandler(403)
    def forbidden(_e):
        return render_template("error.html", title_key="forbidden_title", text_key="forbidden_text"), 403

    @app.errorhandler(429)
    def too_many(exc):
        response = app.make_response((render_template("error.html", title_key="too_many_title",
                                                      text_key="too_many_text"), 429))
        if getattr(exc, "retry_after", None):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    app.before_request(web.end_idle_session)
    app.register_blueprint(citizen.bp)
    app.register_blueprint(card_views.bp)
    if staff_pages_on(station):
        app.register_blueprint(agent_views.bp)
    web.init_limits(app, track=station["server"]["track_limit"])
    return app


def staff_pages_on(station: dict) -> bool:
    """The staff pages are served on counter and mobile stations; a citizen kiosk, whose screen anyone in
    the hall can touch, has none unless ``station.staff_pages = "on"``."""
    setting = station["station"]["staff_pages"]
    return setting == "on" or (setting == "auto" and station["station"]["kind"] != "kiosk")
