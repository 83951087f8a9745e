"""``bench_scale``: do the station's pages and the sync worker's queries stay flat as dossiers pile up?

One station (a counter, in this process) is loaded through the real submit path, ``kiosk.core.dossiers.submit``
(one process, no HTTP; the loading connection runs with ``synchronous=OFF``, the one shortcut: no fsync per
dossier), in the order and with the mix a busy commune counter makes over months: ``PER_DAY`` dossiers a
day, 70 % taken at the counter with the fee in the ledger (every 25th reprinted: a reprint line and a print
job), 30 % at the kiosk; most acknowledged by the central a day later (through ``sync.worker.record_ack``)
and purged 30 days after that (``dossiers.purge_payload``, as the worker does), 10 % never acknowledged (a
link that fails: they stay pending), 3 % refused by the central (``record_rejection``) and corrected at
the counter the day after (a new dossier that supersedes the refused one, the money carried), so the open
refusals are the last day's.

The station's clock is the loading's: dossier ``i`` is submitted ``86400 / PER_DAY`` seconds after dossier
``i - 1``, and the pages are measured at the time of the last one loaded (its day is "today"), so today's
list, the day's report and the worker's cuts are the same size at every checkpoint.

At each checkpoint (10k and ``scale_max``, default 100k) every staff page (home, search by a name's start,
by a full name, by tracking code, a dossier's page, the day's report, the rejected queue) and citizen page
(start, tracking) is requested ``repeat`` times through the Flask test client, and the worker's cycle
queries (due, purge selection, counts and the waiting banner) are called ``repeat`` times; the median of
each is printed with the growth from the first checkpoint to the last. ``trace_queries`` gives every SQL
statement the pages and the cycle run, for tests/test_flat_queries.py to check their plans.

A TEST AND BENCHMARK HELPER, not used in service.
"""
import random
import statistics
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

PER_DAY = 400
START = datetime(2024, 1, 1, 1, 0, tzinfo=timezone.utc)
ACK_AFTER = PER_DAY          # dossiers: acknowledged about a day later
PURGE_AFTER = 30 * PER_DAY   # ... and purged 30 days after that
PIN = "246810"
FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ",
          "Hồ", "Ngô", "Dương", "Lý"]
FAMILY_WEIGHTS = [38, 11, 9.5, 7, 5.1, 4.1, 4.5, 3.9, 2, 2.1, 2, 1.4, 1.3, 1.3, 1, 0.5]
MIDDLE = ["Văn", "Thị", "Minh", "Ngọc", "Quốc", "Thu", "Đức", "Bảo", "Thanh", "Hữu", "Xuân", "Kim"]
GIVEN = ["An", "Bình", "Cường", "Dũng", "Giang", "Hà", "Hải", "Hùng", "Lan", "Linh", "Mai", "Nam", "Phương",
         "Quân", "Sơn", "Tâm", "Thảo", "Trang", "Tuấn", "Vy", "Yến", "Khoa", "Long", "Nhung"]


def _name(rng: random.Random) -> str:
    return f"{rng.choices(FAMILY, FAMILY_WEIGHTS)[0]} {rng.choice(MIDDLE)} {rng.choice(GIVEN)}"


class Clock:
    """The loading's time: ``now()`` is what ``datetime.now`` says inside ``patched`` (dossiers, the staff
    pages, the receipts) and what the sync worker's ``utcnow`` says."""

    def __init__(self, at: datetime):
        self.at = at

    def now(self) -> datetime:
        return self.at

    @contextmanager
    def patched(self):
        import agent.views
        import kiosk.receipts
        import sync.worker
        from kiosk.core import dossiers

        clock = self

        class At(datetime):
            @classmethod
            def now(cls, tz=None):
                return clock.at.astimezone(tz) if tz else clock.at.replace(tzinfo=None)

        saved = [(m, "datetime", m.datetime) for m in (dossiers, agent.views, kiosk.receipts)]
        saved.append((sync.worker, "utcnow", sync.worker.utcnow))
        for module, _name_, _value in saved[:3]:
            module.datetime = At
        sync.worker.utcnow = lambda: clock.at
        try:
            yield self
        finally:
            for module, attr, value in saved:
                setattr(module, attr, value)


class ScaleStation:
    """A counter station in ``folder`` and what was loaded into it; ``load_to(n)`` adds dossiers up to n."""

    def __init__(self, folder: Path, seed: int = 18):
        from agent import staff
        from kiosk.app import create_app
        from kiosk.core import db

        self.app = create_app({"station": {"id": "B18", "kind": "counter"}, "paths": {"data": str(folder / "var")}})
        self.app.config["TESTING"] = True
        self.app.extensions["limiter"].enabled = False  # the tracking pages' per-client budget
        self.key = self.app.config["PAYLOAD_KEY"]
        self.station = self.app.config["STATION"]["station"]
        procs = self.app.config["CATALOG"]
        self.procs = []
        for proc in procs.values():
            field = next((f["name"] for f in proc.fields() if f.get("prefill") == "card.full_name"), None)
            if field:
                self.procs.append((proc, field))
        self.conn = db.connect(self.app.config["DATABASE"])
        self.conn.execute("PRAGMA synchronous=OFF")  # the loading's one shortcut: no fsync per dossier
        self.staff_id = staff.add(self.conn, "lan", "Nguyễn Thị Lan", "supervisor", PIN)
        self.rng = random.Random(seed)
        self.clock = Clock(START)
        self.loaded = 0
        self.load_seconds = 0.0
        self.submitted: list[tuple[str, str]] = []  # (submission id, tracking code), in order
        self.never_sent: set[int] = set()
        self.refused: list[int] = []
        self.refused_set: set[int] = set()
        self.corrected: set[int] = set()
        self.names: list[str] = []
        self._acked = 0
        self._purged = 0

    def close(self) -> None:
        self.conn.close()

    def _submit(self, i: int, supersedes: str | None = None):
        from agent import report
        from kiosk.core import dossiers

        proc, field = self.procs[i % len(self.procs)]
        name = _name(self.rng)
        answers = {field: name, "phone": "09" + "".join(self.rng.choice("0123456789") for _ in range(8))}
        counter = supersedes is not None or self.rng.random() < 0.7

        def also(conn, submitted):
            if supersedes is not None:
                report.record_correction(conn, submitted, self.staff_id, supersedes, "lan")
            else:
                report.record_fee(conn, submitted, self.staff_id, submitted.fee.amount_vnd if submitted.fee
                                  else 0, "lan")
        done = dossiers.submit(self.conn, key=self.key, station=self.station,
                               channel="counter" if counter else "kiosk", procedure=proc, answers=answers,
                               supersedes=supersedes, actor="lan" if counter else "citizen",
                               staff_id=self.staff_id if counter else None,
                               counter={"delivery": "counter", "documents_checked": []} if counter else None,
                               also_write=also if counter else None)
        self.submitted.append((done.submission_id, done.tracking_code))
        self.names.append(name)
        return done

    def _reprint(self, sid: str, day: str) -> None:
        from agent import report
        from kiosk.core import audit
        from kiosk.core.db import write_transaction
        from kiosk.receipts import record_request

        with write_transaction(self.conn):
            record_request(self.conn, sid, "lan", printing=False)
            report.record_reprint(self.conn, self.clock.at.isoformat(), day, self.staff_id, sid)
            audit.append(self.conn, "lan", "receipt.reprint", sid)

    def load_to(self, n: int) -> None:
        """Submit (and acknowledge, refuse, correct, purge) until ``n`` dossiers are loaded."""
        import sync.worker as worker
        from kiosk.core import audit, dossiers
        from kiosk.core.db import write_transaction

        step = timedelta(seconds=86400 / PER_DAY)
        started = time.perf_counter()
        with self.clock.patched():
            while self.loaded < n:
                i = len(self.submitted)
                self.clock.at = START + i * step
                done = self._submit(i)
                self.loaded += 1
                roll = self.rng.random()
                if roll < 0.03:
                    worker.record_rejection(self.conn, done.submission_id, "missing_field",
                                            "Thiếu thông tin bắt buộc / a required field is missing")
                    self.refused.append(i)
                    self.refused_set.add(i)
                elif roll < 0.13:
                    self.never_sent.add(i)
                if i % 25 == 0:
                    self._reprint(done.submission_id, done.local_day)
                # The central acknowledges a day later, the worker purges 30 days after that.
                while self._acked < len(self.submitted) - ACK_AFTER:
                    j = self._acked
                    self._acked += 1
                    if j in self.refused_set:  # staff correct a refusal the day after
                        self._submit(j, supersedes=self.submitted[j][0])  # j: the same procedure
                        self.loaded += 1
                        self.corrected.add(j)
                        continue
                    if j in self.never_sent:
                        continue
                    sid, _code = self.submitted[j]
                    received = (self.clock.at - step * (ACK_AFTER // 2)).isoformat(timespec="seconds")
                    document = {"submission_id": sid, "central_code": f"000.00.{j:08d}", "received_at": received}
                    worker.record_ack(self.conn, document, {"document": document}, "online")
                while self._purged < len(self.submitted) - ACK_AFTER - PURGE_AFTER:
                    j = self._purged
                    self._purged += 1
                    if j in self.never_sent or j in self.refused_set:
                        continue
                    with write_transaction(self.conn):
                        dossiers.purge_payload(self.conn, self.submitted[j][0])
                        audit.append(self.conn, "sync", "dossier.purged", self.submitted[j][0], {})
        self.load_seconds += time.perf_counter() - started

    # -- what is measured ----------------------------------------------------------------------------
    def logged_in_client(self):
        from tests.conftest import csrf_token

        client = self.app.test_client()
        with self.clock.patched():
            page = client.get("/agent/login")
            response = client.post("/agent/login", data={"csrf_token": csrf_token(page.text), "username": "lan",
                                                         "secret": PIN})
        assert response.status_code == 303, response.status_code
        return client

    def targets(self) -> dict[str, str]:
        """The pages measured: name -> URL. The dossier, name and code are picked among the last 10 %
        loaded (a dossier a clerk looks at is recent), a corrected one for the dossier page."""
        from kiosk.core.masking import mask_name

        recent = self.submitted[-max(1, len(self.submitted) // 10):]
        code = recent[len(recent) // 2][1]
        corrected = next((self.submitted[i][1] for i in reversed(self.refused) if i in self.corrected), code)
        name = self.names[-len(recent) // 2]
        return {
            "staff: home": "/agent/",
            "staff: search, name start": "/agent/search?q=" + name.split()[0] + " " + name.split()[1][0],
            "staff: search, full name": "/agent/search?q=" + name,
            "staff: search, masked name": "/agent/search?q=" + mask_name(name),
            "staff: search, tracking code": "/agent/search?q=" + code,
            "staff: dossier page": "/agent/d/" + code,
            "staff: dossier page, corrected": "/agent/d/" + corrected,
            "staff: day's report": "/agent/report",
            "staff: rejected queue": "/agent/rejected",
            "citizen: start page": "/",
            "citizen: track, form": "/track?code=" + code,
            "citizen: track, dossier": "/track/" + code,
        }

    def worker_queries(self) -> dict:
        """The sync worker's cycle, query by query (the ones that read the outbox and dossiers)."""
        from kiosk.core import outbox
        from sync.worker import purge_candidates

        conn = self.conn
        now = self.clock.at
        iso = now.isoformat()
        cut = (now - timedelta(days=30)).isoformat()
        return {
            "worker: due (100)": lambda: outbox.due(conn, iso, (now + timedelta(hours=2)).isoformat(), 100),
            "worker: purge selection": lambda: purge_candidates(conn, cut, cut, 500),
            "worker: next due": lambda: outbox.next_due(conn),
            "worker: pending count": lambda: outbox.pending_count(conn),
            "worker: counts by state": lambda: outbox.counts(conn),
            "staff bar: waiting banner": lambda: outbox.waiting(conn),
            "staff bar: open refusals": lambda: outbox.rejected_open_count(conn),
        }


def _median_ms(call, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(station: ScaleStation, repeat: int = 20) -> dict[str, float]:
    """Median ms of each page (after one request to warm it) and of each worker query."""
    client = station.logged_in_client()
    found = {}
    with station.clock.patched():
        for name, url in station.targets().items():
            first = client.get(url)
            assert first.status_code in (200, 303), (name, url, first.status_code)
            found[name] = _median_ms(lambda: client.get(url), repeat)
        for name, call in station.worker_queries().items():
            call()
            found[name] = _median_ms(call, repeat)
    return found


@contextmanager
def trace_queries(station: ScaleStation):
    """Every SQL statement the pages (on the app's connection for this thread, the test client's) and the
    worker's queries (on the loading connection) run while inside, in a list."""
    from kiosk.web import get_db

    seen: list[str] = []
    with station.app.app_context():
        page_conn = get_db()
    page_conn.set_trace_callback(seen.append)
    station.conn.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        page_conn.set_trace_callback(None)
        station.conn.set_trace_callback(None)


def bench_scale(scale_max: int = 100_000, first: int | None = None, repeat: int = 20,
                folder: Path | None = None) -> dict:
    """Load to ``first`` (10k, or half of ``scale_max`` below 20k) then to ``scale_max`` dossiers, measuring
    at each: {"checkpoints": [n, ...], "rows": {name: [ms at each]}, "load_s": [seconds to load up to
    each], "mix": {...}}."""
    first = first or (10_000 if scale_max >= 20_000 else scale_max // 2)
    with tempfile.TemporaryDirectory(prefix="kiosk-scale-") as tmp:
        station = ScaleStation(Path(folder or tmp))
        try:
            checkpoints, rows, load_s = [], {}, []
            for n in sorted({min(first, scale_max), scale_max}):
                station.load_to(n)
                load_s.append(station.load_seconds)
                checkpoints.append(n)
                for name, ms in measure(station, repeat).items():
                    rows.setdefault(name, []).append(ms)
            from kiosk.core import outbox
            mix = {"dossiers": station.loaded, **outbox.counts(station.conn),
                   "purged": station.conn.execute("SELECT COUNT(*) FROM dossiers WHERE payload_sealed IS NULL"
                                                  ).fetchone()[0],
                   "ledger lines": station.conn.execute("SELECT COUNT(*) FROM ledger").fetchone()[0]}
        finally:
            station.close()
    return {"checkpoints": checkpoints, "rows": rows, "load_s": load_s, "mix": mix}


def print_scale_rows(result: dict) -> None:
    checkpoints = result["checkpoints"]
    heads = " | ".join(f"{n // 1000}k ms" for n in checkpoints)
    print("| page or query | " + heads + " | growth |")
    print("|---|" + "---:|" * (len(checkpoints) + 1))
    for name, values in result["rows"].items():
        growth = f"×{values[-1] / values[0]:.2f}" if values[0] > 0 and len(values) > 1 else ""
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {growth} |")
    loads = " and ".join(f"{s:.0f} s to {n // 1000}k" for n, s in zip(checkpoints, result["load_s"]))
    per = result["load_s"][-1] / checkpoints[-1] * 1000
    print()
    print(f"loading through dossiers.submit: {loads} ({per:.2f} ms a dossier, acknowledgements, refusals, "
          f"corrections and purges included); at the end: "
          + ", ".join(f"{k} {v:,}" for k, v in result["mix"].items()))
