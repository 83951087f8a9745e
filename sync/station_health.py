"""The central's view of its stations (docs/fleet.md): each station's latest heartbeat (sync/heartbeat.py)
and an hourly history, the problems they show, the staff page ``/staff/stations`` (problems first,
filtered by province and kind, a small plot per station) and alert emails.

Owns the tables ``station_health`` (latest heartbeat per station), ``station_health_history`` (one row
per station and hour, kept ``HEALTH_HISTORY_DAYS``) and ``station_alerts`` (open problem episodes);
reads ``stations`` and counts ``submissions`` per hour for the plot. Nothing here names a citizen.

Alerts: a pass (a thread of the serving process every ``ALERT_INTERVAL`` seconds, and at once after a
heartbeat) finds each station's problems; a problem not open yet opens an episode (a row) and the rows no
email went out for yet are claimed (an UPDATE only one process wins) and mailed, one email per station and
pass, through sync/notify.py's SMTP path to ``ALERT_EMAIL_TO``. A problem gone closes its episode (the
row goes): when it comes back, that is a new episode and a new email. A mail that fails is released and
tried again next pass.
"""
import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from markupsafe import escape
from flask import abort, current_app, render_template_string, request, session

from . import heartbeat as hb
from . import protocol
from .notify import NotifyError, email_from_config

log = logging.getLogger("sync.central")

HEALTH_HISTORY_DAYS = 30
PLOT_DAYS = 28
PRUNE_EVERY_S = 3600  # every station's history past the window is dropped this often (at a heartbeat)

# Problems, worst first (the page's order), with staff's words.
PROBLEMS = {
    "silent": {"vi": "Mất liên lạc", "en": "Silent"},
    "app_down": {"vi": "Ứng dụng trên máy không chạy", "en": "Station app not running"},
    "outbox_old": {"vi": "Hồ sơ chờ gửi quá lâu", "en": "Outbox too old"},
    "printer_down": {"vi": "Máy in không hoạt động", "en": "Printer down"},
    "paper_low": {"vi": "Sắp hết giấy in", "en": "Paper low"},
    "reader_missing": {"vi": "Không thấy đầu đọc thẻ", "en": "Card reader missing"},
    "clock_off": {"vi": "Đồng hồ lệch", "en": "Clock off"},
    "disk_low": {"vi": "Đĩa sắp đầy", "en": "Disk low"},
}
PRINTER_DOWN = ("paper_out", "cover_open", "offline", "config_error")
KIND_WORDS = {"kiosk": {"vi": "Ki-ốt", "en": "Kiosk"}, "counter": {"vi": "Quầy bưu điện", "en": "Counter"},
              "mobile": {"vi": "Tổ lưu động", "en": "Mobile team"}}
PRINTER_WORDS = {"ok": "Sẵn sàng / ready", "paper_low": "Sắp hết giấy / paper low", "paper_out": "Hết giấy / paper out",
                 "cover_open": "Mở nắp / cover open", "offline": "Mất kết nối / offline",
                 "unchecked": "Không báo trạng thái / unchecked", "no_printer": "Không có máy in / none",
                 "config_error": "Sai cấu hình / settings wrong"}


@dataclass
class Thresholds:
    """When a station has a problem (docs/fleet.md, the central's ALERT_* settings)."""
    silent_hours: float = 6.0           # no heartbeat for this long (kiosks and counters) ...
    silent_hours_mobile: float = 72.0   # ... and for mobile teams, offline for days by design
    outbox_hours: float = 24.0          # the oldest dossier waiting to be sent
    clock_minutes: float = 5.0          # the station's clock off the central's
    disk_mb: float = 200.0              # free space in the station's data folder
    devices_minutes: float = 15.0       # the web app's device-state.json older than this at a heartbeat

    @classmethod
    def from_config(cls, config) -> "Thresholds":
        found = cls()
        for key, attr in (("ALERT_SILENT_HOURS", "silent_hours"), ("ALERT_SILENT_HOURS_MOBILE", "silent_hours_mobile"),
                          ("ALERT_OUTBOX_HOURS", "outbox_hours"), ("ALERT_CLOCK_MINUTES", "clock_minutes"),
                          ("ALERT_DISK_MB", "disk_mb"), ("ALERT_DEVICES_MINUTES", "devices_minutes")):
            if config.get(key) not in (None, ""):
                setattr(found, attr, float(config[key]))
        return found


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def _hour(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H")


def _whole(value) -> int | None:
    return None if value is None else int(round(value))


class StationHealth:
    """The tables above, over the central's store (its transactions, SQLite or PostgreSQL)."""

    def __init__(self, store, thresholds: Thresholds | None = None, history_days: float = HEALTH_HISTORY_DAYS):
        self.store = store
        self.thresholds = thresholds or Thresholds()
        self.history_days = history_days
        self._pruned_at = float("-inf")

    # -- heartbeats --------------------------------------------------------------------------------------
    def record(self, station_id: str, doc: dict, now: datetime | None = None) -> None:
        """Keep a checked heartbeat (sync/heartbeat.py ``problem`` said None): the latest, this hour's
        history row, and the station's history past the window dropped, in one transaction."""
        now = now or datetime.now(timezone.utc)
        with self.store._tx() as cur:
            cur.execute("INSERT INTO station_health (station_id, received_at, kind, province, heartbeat) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (station_id) DO UPDATE SET received_at = excluded.received_at, "
                        "kind = excluded.kind, province = excluded.province, heartbeat = excluded.heartbeat",
                        (station_id, _iso(now), doc["kind"], doc["province"], json.dumps(doc, ensure_ascii=False)))
            cur.execute("INSERT INTO station_health_history (station_id, hour, received_at, outbox_pending, "
                        "outbox_oldest_age_s, printer, card_reader, disk_free_mb, clock_offset_s) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (station_id, hour) DO UPDATE SET "
                        "received_at = excluded.received_at, outbox_pending = excluded.outbox_pending, "
                        "outbox_oldest_age_s = excluded.outbox_oldest_age_s, printer = excluded.printer, "
                        "card_reader = excluded.card_reader, disk_free_mb = excluded.disk_free_mb, "
                        "clock_offset_s = excluded.clock_offset_s",
                        (station_id, _hour(now), _iso(now), doc["outbox_pending"], doc["outbox_oldest_age_s"],
                         doc["printer"], None if doc["card_reader"] is None else int(doc["card_reader"]),
                         _whole(doc["disk_free_mb"]), _whole(doc["clock_offset_s"])))
            cur.execute("DELETE FROM station_health_history WHERE station_id = ? AND hour < ?",
                        (station_id, _hour(now - timedelta(days=self.history_days))))
        if time.monotonic() - self._pruned_at > PRUNE_EVERY_S:  # silent stations' old rows too, hourly
            self._pruned_at = time.monotonic()
            self.prune(now)

    def prune(self, now: datetime | None = None) -> int:
        """Drop every station's history older than the window (a silent station's too); how many rows."""
        now = now or datetime.now(timezone.utc)
        with self.store._tx() as cur:
            return cur.execute("DELETE FROM station_health_history WHERE hour < ?",
                               (_hour(now - timedelta(days=self.history_days)),))

    def history_rows(self, station_id: str) -> list[tuple[str, int, int | None]]:
        """(hour, outbox_pending, outbox_oldest_age_s) of one station, oldest first (tests, the page)."""
        with self.store._tx() as cur:
            return [tuple(r) for r in cur.all("SELECT hour, outbox_pending, outbox_oldest_age_s FROM "
                                              "station_health_history WHERE station_id = ? ORDER BY hour", (station_id,))]

    def latest(self) -> list[dict]:
        """Every enrolled, unrevoked station with its latest heartbeat (None when it never sent one)."""
        with self.store._tx() as cur:
            rows = cur.all("SELECT s.station_id, s.name, s.enrolled_at, h.received_at, h.heartbeat FROM stations s "
                           "LEFT JOIN station_health h ON h.station_id = s.station_id WHERE s.revoked_at IS NULL "
                           "ORDER BY s.station_id", ())
        return [{"station_id": r[0], "name": r[1], "enrolled_at": r[2], "received_at": r[3],
                 "heartbeat": json.loads(r[4]) if r[4] else None} for r in rows]

    def plots(self, since: datetime, station_ids: list[str] | None = None) -> dict[str, dict]:
        """Per station (every one, or those of ``station_ids``: one page's): dossiers received and the
        outbox's oldest age (the worst reported) per UTC hour since ``since``:
        {station: {"dossiers": {hour: n}, "outbox_age_s": {hour: s}}}."""
        found: dict[str, dict] = {}
        only, ids = "", ()
        if station_ids is not None:
            if not station_ids:
                return found
            only, ids = f" AND station_id IN ({', '.join('?' for _ in station_ids)})", tuple(station_ids)
        with self.store._tx() as cur:
            # Counted per hour in SQL (a province has many dossiers); the page adds hours into local days.
            for station_id, hour, number in cur.all(
                    "SELECT station_id, substr(received_at, 1, 13), COUNT(*) FROM submissions WHERE received_at >= ?"
                    f"{only} GROUP BY 1, 2", (_iso(since), *ids)):
                found.setdefault(station_id, {"dossiers": {}, "outbox_age_s": {}})["dossiers"][hour] = number
            for station_id, hour, age in cur.all(
                    f"SELECT station_id, hour, outbox_oldest_age_s FROM station_health_history WHERE hour >= ?{only}",
                    (_hour(since), *ids)):
                found.setdefault(station_id, {"dossiers": {}, "outbox_age_s": {}})["outbox_age_s"][hour] = age or 0
        return found

    # -- problems ----------------------------------------------------------------------------------------
    def problems(self, station: dict, now: datetime) -> list[str]:
        """The problem codes of one ``latest()`` row, worst first."""
        t, doc, found = self.thresholds, station["heartbeat"], []
        heard = datetime.fromisoformat(station["received_at"] or station["enrolled_at"])
        kind = doc["kind"] if doc else None
        limit = t.silent_hours_mobile if kind == "mobile" else t.silent_hours
        if now - heard > timedelta(hours=limit):
            found.append("silent")
        if doc is None:
            return found
        if not found and self._app_down(station, doc):
            found.append("app_down")
        if (doc["outbox_oldest_age_s"] or 0) > t.outbox_hours * 3600:
            found.append("outbox_old")
        if doc["printer"] in PRINTER_DOWN:
            found.append("printer_down")
        elif doc["printer"] == "paper_low":
            found.append("paper_low")
        if doc["card_reader_expected"] and doc["card_reader"] is False:
            found.append("reader_missing")
        if doc["clock_offset_s"] is not None and abs(doc["clock_offset_s"]) > t.clock_minutes * 60:
            found.append("clock_off")
        if doc["disk_free_mb"] is not None and doc["disk_free_mb"] < t.disk_mb:
            found.append("disk_low")
        return found

    def _app_down(self, station: dict, doc: dict) -> bool:
        """Heartbeats come (the sync worker runs) but the web app stopped writing device-state.json: its
        ``devices_at`` is older than ``devices_minutes`` at the heartbeat's own ``sent_at`` (both the
        station's clock), or it never wrote one and the station was enrolled longer ago than that."""
        limit = timedelta(minutes=self.thresholds.devices_minutes)
        try:
            if doc["devices_at"] is None:
                return datetime.fromisoformat(doc["sent_at"]) - datetime.fromisoformat(station["enrolled_at"]) > limit
            return datetime.fromisoformat(doc["sent_at"]) - datetime.fromisoformat(doc["devices_at"]) > limit
        except (TypeError, ValueError):
            return False

    def overview(self, now: datetime | None = None, province: str | None = None, kind: str | None = None) -> list[dict]:
        """The stations (of one province and kind), with their problems, problems first (worst first)."""
        now = now or datetime.now(timezone.utc)
        order = list(PROBLEMS)
        rows = []
        for station in self.latest():
            doc = station["heartbeat"]
            if province and (doc or {}).get("province") != province:
                continue
            if kind and (doc or {}).get("kind") != kind:
                continue
            station["problems"] = self.problems(station, now)
            rows.append(station)
        rows.sort(key=lambda s: (not s["problems"], [order.index(p) for p in s["problems"]] or [99], s["station_id"]))
        return rows

    # -- alert episodes ----------------------------------------------------------------------------------
    def open_alerts(self) -> dict[str, dict[str, str | None]]:
        with self.store._tx() as cur:
            rows = cur.all("SELECT station_id, problem, notified_at FROM station_alerts", ())
        found: dict[str, dict] = {}
        for station_id, problem, notified_at in rows:
            found.setdefault(station_id, {})[problem] = notified_at
        return found

    def reconcile(self, station_id: str, problems: list[str], now: datetime) -> None:
        """Open an episode for each new problem, close those that are gone."""
        with self.store._tx() as cur:
            for problem in problems:
                cur.execute("INSERT INTO station_alerts (station_id, problem, since) VALUES (?, ?, ?) "
                            "ON CONFLICT (station_id, problem) DO NOTHING", (station_id, problem, _iso(now)))
            marks = ", ".join("?" for _ in problems)
            if problems:
                cur.execute(f"DELETE FROM station_alerts WHERE station_id = ? AND problem NOT IN ({marks})",
                            (station_id, *problems))
            else:
                cur.execute("DELETE FROM station_alerts WHERE station_id = ?", (station_id,))

    def claim(self, station_id: str, problem: str, now: datetime) -> bool:
        """Take the episode's email for this process; False when another took it or it went out."""
        with self.store._tx() as cur:
            return cur.execute("UPDATE station_alerts SET notified_at = ? WHERE station_id = ? AND problem = ? "
                               "AND notified_at IS NULL", (_iso(now), station_id, problem)) > 0

    def release(self, station_id: str, problem: str) -> None:
        with self.store._tx() as cur:
            cur.execute("UPDATE station_alerts SET notified_at = NULL WHERE station_id = ? AND problem = ?",
                        (station_id, problem))


# -- alert emails ------------------------------------------------------------------------------------------

def alert_message(sender: str, to: list[str], station: dict, problems: list[str]) -> EmailMessage:
    """One station's new problems, Vietnamese first: codes, counts and times, nothing of a citizen."""
    doc = station["heartbeat"] or {}
    words = ", ".join(PROBLEMS[p]["vi"] for p in problems)
    message = EmailMessage()
    message["Subject"] = f"[DVC] Trạm {station['station_id']}: {words}"
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "dvc.local")
    message["Auto-Submitted"] = "auto-generated"
    lines = [f"Trạm {station['station_id']} ({station['name'] or '-'}; {doc.get('kind', '?')}, "
             f"{doc.get('province') or '-'}) có vấn đề mới / has new problems:", ""]
    lines += [f"- {PROBLEMS[p]['vi']} / {PROBLEMS[p]['en']}" for p in problems]
    lines += ["", f"Liên lạc lần cuối / last heard: {station['received_at'] or 'chưa bao giờ / never'}",
              f"Máy in / printer: {doc.get('printer')}; hồ sơ chờ gửi / outbox: {doc.get('outbox_pending')} "
              f"(lâu nhất / oldest {doc.get('outbox_oldest_age_s')} s); lệch giờ / clock offset: "
              f"{doc.get('clock_offset_s')} s; đĩa trống / disk free: {doc.get('disk_free_mb')} MB",
              "", "Xem trang /staff/stations của trung tâm. / See the central's /staff/stations page.",
              "Thư này được gửi một lần cho mỗi lần sự cố xảy ra. / Sent once per episode."]
    message.set_content("\n".join(lines) + "\n")
    return message


class Alerter:
    """Finds problems and mails new ones (see the module's docstring)."""

    def __init__(self, health: StationHealth, email=None, to: list[str] | None = None):
        self.health, self.email, self.to = health, email, list(to or [])
        self.wake = threading.Event()
        self._pass = threading.Lock()
        self._stopped: threading.Event | None = None

    def run_once(self, now: datetime | None = None) -> dict:
        """One pass; counts of episodes opened now and emails sent."""
        now = now or datetime.now(timezone.utc)
        counts = {"problems": 0, "sent": 0, "failed": 0}
        with self._pass:
            for station in self.health.overview(now):
                self.health.reconcile(station["station_id"], station["problems"], now)
                counts["problems"] += len(station["problems"])
            if self.email is None or not self.to:
                return counts
            stations = {s["station_id"]: s for s in self.health.overview(now)}
            for station_id, problems in self.health.open_alerts().items():
                station = stations.get(station_id)
                if station is None:
                    continue
                claimed = [p for p, notified in problems.items() if notified is None and p in station["problems"]
                           and self.health.claim(station_id, p, now)]
                if not claimed:
                    continue
                claimed.sort(key=list(PROBLEMS).index)
                try:
                    self.email.deliver(alert_message(self.email.sender, self.to, station, claimed))
                except NotifyError as exc:
                    for problem in claimed:
                        self.health.release(station_id, problem)
                    counts["failed"] += 1
                    log.warning("fleet alert for station %s not sent: %s", station_id, exc)
                    continue
                counts["sent"] += 1
                log.info("fleet alert sent for station %s: %s", station_id, " ".join(claimed))
        return counts

    def start(self, interval: float) -> None:
        self._stopped = threading.Event()

        def run():
            while not self._stopped.is_set():
                try:
                    self.run_once()
                except Exception as exc:  # noqa: BLE001  (the next pass tries again)
                    log.error("fleet alerts: pass failed: %s", type(exc).__name__)
                self.wake.wait(interval)
                self.wake.clear()

        threading.Thread(target=run, name="central-fleet-alerts", daemon=True).start()

    def stop(self) -> None:
        if self._stopped is not None:
            self._stopped.set()
            self.wake.set()


def configure(app) -> None:
    """The fleet's health and alerts for a central app: ALERT_* thresholds, ALERT_EMAIL_TO (comma-separated;
    none: no mail), ALERT_INTERVAL seconds between passes (60; 0: no thread, ``run_once()`` by hand),
    HEALTH_HISTORY_DAYS; mail goes through the NOTIFY_SMTP_* server (no thread without ALERT_EMAIL_TO and
    NOTIFY_SMTP_HOST)."""
    central = app.extensions["dvc_central"]
    health = StationHealth(central.store, Thresholds.from_config(app.config),
                           float(app.config.get("HEALTH_HISTORY_DAYS") or HEALTH_HISTORY_DAYS))
    to = [a.strip() for a in str(app.config.get("ALERT_EMAIL_TO") or "").split(",") if a.strip()]
    alerter = Alerter(health, email_from_config(app.config) if to else None, to)
    app.extensions["station_health"], app.extensions["fleet_alerts"] = health, alerter
    interval = float(app.config.get("ALERT_INTERVAL", 60) or 0)
    if interval > 0 and alerter.email is not None:  # without a mail path the page finds problems on its own
        alerter.start(interval)


# -- the routes --------------------------------------------------------------------------------------------

def post_heartbeat(station_id):
    """A station's heartbeat (sync/heartbeat.py): checked key by key, kept, answered with a signed
    dvc-central-heartbeat/1 naming the body's sha256."""
    from .central import _central, _error, _json_body, _signed, _station_id
    from .central_store import now_iso

    if station_id != _station_id():
        return _error(403, "other_station", "a station sends only its own heartbeat")
    body = request.get_data()
    doc, refused = _json_body(body, hb.MAX_HEARTBEAT_BYTES, "the heartbeat", "4 KB")
    if refused is not None:
        return refused
    why = hb.problem(doc, station_id)
    if why is not None:
        return _error(422, why.split(":", 1)[0], why)
    current_app.extensions["station_health"].record(station_id, doc)
    current_app.extensions["fleet_alerts"].wake.set()
    central = _central()
    return _signed(200, central.sign({"type": hb.HEARTBEAT_ACK, "station_id": station_id,
                                      "heartbeat_sha256": protocol.sha256_hex(body), "at": now_iso()}))


def _local_days(zone, now: datetime) -> list[date]:
    today = now.astimezone(zone).date()
    return [today - timedelta(days=n) for n in range(PLOT_DAYS - 1, -1, -1)]


def _per_day(hours: dict, zone, days: list[date], combine) -> list:
    found: dict[date, list] = {}
    for hour, value in hours.items():
        try:
            day = datetime.fromisoformat(f"{hour}:00:00+00:00").astimezone(zone).date()
        except ValueError:
            continue
        found.setdefault(day, []).append(value)
    return [combine(found[d]) if d in found else None for d in days]


def plot_svg(dossiers: list, ages_h: list, outbox_limit_h: float, station_id: str) -> str:
    """A small chart, drawn here (no script, no library): bars of dossiers received per day, a line of the
    outbox's oldest age in hours per day (the worst reported that day), the alert threshold dashed."""
    width, height, pad = 10 * len(dossiers), 60, 2
    most = max([d or 0 for d in dossiers] + [1])
    top_age = max([a or 0 for a in ages_h] + [outbox_limit_h * 1.25, 1])
    parts = []
    for i, n in enumerate(dossiers):
        if n:
            h = max(1, round((height - pad) * n / most))
            parts.append(f'<rect x="{i * 10 + 1}" y="{height - h}" width="8" height="{h}" fill="#1d70b8">'
                         f'<title>{n}</title></rect>')
    points = [(i * 10 + 5, round(height - (height - pad) * a / top_age, 1)) for i, a in enumerate(ages_h)
              if a is not None]
    if points:
        parts.append('<polyline fill="none" stroke="#d4351c" stroke-width="2" points="'
                     + " ".join(f"{x},{y}" for x, y in points) + '"/>')
    limit_y = round(height - (height - pad) * outbox_limit_h / top_age, 1)
    parts.append(f'<line x1="0" x2="{width}" y1="{limit_y}" y2="{limit_y}" stroke="#505a5f" stroke-dasharray="3 3"/>')
    total = sum(d or 0 for d in dossiers)
    worst = max([a or 0 for a in ages_h] + [0])
    station_id = escape(station_id)  # an enrolled id, but the chart is inserted as markup
    label = (f"Trạm {station_id}: {total} hồ sơ trong {len(dossiers)} ngày; hồ sơ chờ lâu nhất {worst:.1f} giờ. "
             f"Station {station_id}: {total} dossiers in {len(dossiers)} days; oldest waiting {worst:.1f} h.")
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{label}" data-plot="{station_id}"><title>{label}</title>'
            f'<rect x="0" y="0" width="{width}" height="{height}" fill="#f3f2f1"/>{"".join(parts)}</svg>')


STATIONS_PAGE = """
<body><header><h1>Tình trạng các trạm <span class="en">Stations</span></h1>
<form method="post" action="{{ url_for('central_staff.logout') }}"><input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
{{ account }} <button type="submit">Đăng xuất <span lang="en">Log out</span></button></form></header>
<nav><a href="{{ url_for('central_staff.index') }}">Danh sách hồ sơ <span class="en">All dossiers</span></a>
<a href="{{ url_for('central_staff.ratings') }}">Đánh giá hài lòng <span class="en">Satisfaction</span></a></nav>
<form method="get" action="{{ url_for('central_staff.stations') }}">
<label for="province">Tỉnh, thành phố <span class="en">Province</span></label> <select id="province" name="province">
<option value="">Tất cả / All</option>{% for p in provinces %}<option{% if p == province %} selected{% endif %}>{{ p }}</option>{% endfor %}</select>
<label for="kind">Loại trạm <span class="en">Kind</span></label> <select id="kind" name="kind">
<option value="">Tất cả / All</option>{% for k, w in kinds.items() %}<option value="{{ k }}"{% if k == kind %} selected{% endif %}>{{ w.vi }} / {{ w.en }}</option>{% endfor %}</select>
<button type="submit">Xem <span lang="en">Show</span></button></form>
<p data-summary>{{ troubled }} trạm có vấn đề trên {{ total }} trạm. <span class="en">{{ troubled }} of {{ total }} stations need attention.</span>
Ngưỡng <span class="en">Thresholds</span>: mất liên lạc &gt; {{ t.silent_hours }} giờ (lưu động {{ t.silent_hours_mobile }} giờ), hồ sơ chờ &gt; {{ t.outbox_hours }} giờ,
lệch giờ &gt; {{ t.clock_minutes }} phút, đĩa trống &lt; {{ t.disk_mb }} MB, ứng dụng không ghi trạng thái thiết bị &gt; {{ t.devices_minutes }} phút.</p>
{% macro pager() %}{% if pages > 1 %}<nav data-pages="{{ pages }}" aria-label="Trang / Pages">Trang <span class="en">Page</span> {{ page }} / {{ pages }}:
{% for n in range(1, pages + 1) %}{% if n == page %}<strong aria-current="page">{{ n }}</strong>{% else %}<a href="{{ url_for('central_staff.stations', province=province, kind=kind, page=n) }}" data-page-link="{{ n }}">{{ n }}</a>{% endif %} {% endfor %}</nav>{% endif %}{% endmacro %}
{{ pager() }}
<p class="en">Biểu đồ {{ days }} ngày: cột xanh = hồ sơ tiếp nhận mỗi ngày; đường đỏ = hồ sơ chờ gửi lâu nhất (giờ); nét đứt = ngưỡng.
Last {{ days }} days: blue bars = dossiers received per day; red line = oldest waiting dossier (hours); dashed = threshold.</p>
<table data-stations><thead><tr><th>Trạm <span class="en">Station</span></th><th>Vấn đề <span class="en">Problems</span></th>
<th>Liên lạc cuối <span class="en">Last heard</span></th><th>Máy in <span class="en">Printer</span></th>
<th>Đầu đọc thẻ <span class="en">Card reader</span></th><th>Hồ sơ chờ gửi <span class="en">Outbox</span></th>
<th>Đĩa, đồng hồ <span class="en">Disk, clock</span></th><th>Phiên bản <span class="en">Versions</span></th>
<th>{{ days }} ngày <span class="en">days</span></th></tr></thead><tbody>
{% for s in rows %}{% set h = s.heartbeat or {} %}<tr data-station="{{ s.station_id }}" data-problems="{{ s.problems|join(' ') }}" data-catalog="{{ h.catalog or '' }}">
<td><strong>{{ s.station_id }}</strong> {{ s.name }}<br><span class="en">{% if h %}{{ kinds[h.kind].vi }}, {{ h.province or '—' }}{% endif %}</span></td>
<td>{% for p in s.problems %}<span class="error">{{ problems[p].vi }}</span> <span class="en">{{ problems[p].en }}</span><br>{% else %}Bình thường <span class="en">OK</span>{% endfor %}</td>
<td class="code">{% if s.received_at %}{{ s.received_at | local_time }}{% else %}Chưa bao giờ <span class="en">never</span>{% endif %}</td>
<td>{{ printer_words.get(h.printer, '—') if h else '—' }}</td>
<td>{% if not h or not h.card_reader_expected %}—{% elif h.card_reader %}Có <span class="en">present</span>{% elif h.card_reader is none %}? {% else %}Không thấy <span class="en">missing</span>{% endif %}</td>
<td>{% if h %}{{ h.outbox_pending }}{% if h.outbox_oldest_age_s %} ({{ '%.1f' % (h.outbox_oldest_age_s / 3600) }} giờ / h){% endif %}{% else %}—{% endif %}</td>
<td>{% if h %}{{ h.disk_free_mb if h.disk_free_mb is not none else '?' }} MB; {{ h.clock_offset_s if h.clock_offset_s is not none else '?' }} s{% else %}—{% endif %}</td>
<td>{% if h %}{{ h.software }}<br>{% if h.catalog and h.catalog.isdigit() %}Danh mục số {{ h.catalog }} <span class="en">catalog release {{ h.catalog }}</span>{% else %}<span class="en">{{ h.catalog or '?' }}</span>{% endif %}{% else %}—{% endif %}</td>
<td>{{ plots[s.station_id] | safe }}</td></tr>
{% else %}<tr><td colspan="9">Không có trạm nào. <span class="en">No stations.</span></td></tr>{% endfor %}
</tbody></table>{{ pager() }}</body></html>"""


PAGE_SIZE = 100  # stations per page of /staff/stations (each row draws a chart)


def stations_page():
    """``/staff/stations``: every station, problems first, filtered by ``?province=`` and ``?kind=``, in
    pages of ``PAGE_SIZE`` (``?page=``, plain links: no script), so a province's thousands of stations do
    not draw thousands of charts; only the page's stations are charted."""
    from .central import _HEAD, SESSION_KEY, _central

    province = request.args.get("province", "").strip()[:100] or None
    kind = request.args.get("kind", "").strip() or None
    if kind is not None and kind not in KIND_WORDS:
        abort(400)
    health = current_app.extensions["station_health"]
    now = datetime.now(timezone.utc)
    try:
        page = int(request.args.get("page", "1"))
    except ValueError:
        abort(400)
    if page < 1:
        abort(400)
    everyone = health.overview(now, province, kind)
    pages = max(1, -(-len(everyone) // PAGE_SIZE))
    page = min(page, pages)  # past the end (stations revoked meanwhile): the last page
    rows = everyone[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]
    zone = _central().store.zone
    days = _local_days(zone, now)
    since = datetime.combine(days[0], datetime.min.time(), zone)
    per_hour = health.plots(since, [s["station_id"] for s in rows])
    limit = health.thresholds.outbox_hours
    plots = {}
    for s in rows:
        found = per_hour.get(s["station_id"], {"dossiers": {}, "outbox_age_s": {}})
        ages = _per_day(found["outbox_age_s"], zone, days, max)
        plots[s["station_id"]] = plot_svg(_per_day(found["dossiers"], zone, days, sum),
                                          [None if a is None else a / 3600 for a in ages], limit, s["station_id"])
    provinces = sorted({(s["heartbeat"] or {}).get("province") for s in health.latest()} - {None, ""})
    return render_template_string(_HEAD + STATIONS_PAGE, title="Tình trạng các trạm", rows=rows, plots=plots,
                                  province=province, kind=kind, provinces=provinces, kinds=KIND_WORDS,
                                  problems=PROBLEMS, printer_words=PRINTER_WORDS, t=health.thresholds,
                                  troubled=sum(1 for s in everyone if s["problems"]), total=len(everyone),
                                  page=page, pages=pages, days=PLOT_DAYS,
                                  account=session[SESSION_KEY])


def add_routes(api, staff) -> None:
    """The heartbeat endpoint on the signed API, the page on the staff blueprint (its login, CSRF and
    same-origin rules apply)."""
    api.add_url_rule("/stations/<station_id>/heartbeat", "heartbeat", post_heartbeat, methods=["POST"])
    staff.add_url_rule("/stations", "stations", stations_page, methods=["GET"])
