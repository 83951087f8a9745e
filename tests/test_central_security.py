"""The reference central's security (issue 13): dossier documents sealed at rest with a key kept outside the
database, database and key files readable by their owner only, documents dropped after the hand-over and
the retention, and a staff page that takes accounts (argon2, lockout, a per-client limit), records the real
account as the actor and sends the station's security headers. SQLite and PostgreSQL where storage is
involved."""
import hashlib
import os
import re
import sqlite3
import stat
import tarfile
import threading
import uuid
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kiosk.core import tracking_code
from sync import central_migrations, protocol
from sync.central import DOCUMENTS_KEY, LoginRefused, create_central_app, open_central, start_purging
from sync.central_backup import backup_central, restore_central
from sync.central_cli import central as central_group
from sync.central_store import DocumentKeyError, SEALED_PREFIX
from sync.keys import public_b64

from .conftest import postgres_admin
from .test_central import document, put

ID_NUMBER = "079201001234"   # a căn cước number
PHONE = "0912345678"
NAME = "Nguyễn Thị Bảo Ngọc"
PASSWORD = "mật-khẩu-cán-bộ-1"
_numbers = iter(range(1, 100_000))


def personal(**changes):
    """A dossier document carrying an ID number, a phone number and a name."""
    return document(answers={"full_name": NAME, "id_number": ID_NUMBER, "phone": PHONE}, **changes)


# -- where a central's database lives: SQLite in its data folder, or a PostgreSQL schema of its own ---------

class Place:
    def __init__(self, dialect: str, data: Path, database: str | None = None):
        self.dialect, self.data, self.database = dialect, data, database

    @property
    def sqlite_file(self) -> Path:
        return self.data / "central.sqlite3"

    def config(self, **more) -> dict:
        return {"DATA_DIR": str(self.data), "DATABASE": self.database, "TESTING": True, **more}

    def connect(self):
        if self.dialect == "sqlite":
            return sqlite3.connect(self.sqlite_file, timeout=30, isolation_level=None)
        import psycopg

        return psycopg.connect(self.database, autocommit=True)

    def rows(self, sql: str, args=()) -> list[tuple]:
        with closing(self.connect()) as conn:
            if self.dialect == "postgres":
                sql = sql.replace("?", "%s")
            return [tuple(r) for r in conn.execute(sql, args).fetchall()]

    def run(self, sql: str, args=()) -> None:
        with closing(self.connect()) as conn:
            conn.execute(sql.replace("?", "%s") if self.dialect == "postgres" else sql, args)


@pytest.fixture(params=["sqlite", "postgres"])
def place(request, tmp_path):
    if request.param == "sqlite":
        yield Place("sqlite", tmp_path / "central")
        return
    server = request.getfixturevalue("postgres_server")
    admin = postgres_admin(server)
    schema = f"security_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in server else "?"
    try:
        yield Place("postgres", tmp_path / "central", f"{server}{separator}options=-csearch_path%3D{schema}")
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def enrolled(app):
    key = Ed25519PrivateKey.generate()
    app.extensions["dvc_central"].store.enrol("K01", public_b64(key), "Bưu điện Bến Thành")
    return key


def raw_database_bytes(database: Path) -> dict[str, bytes]:
    """Every file of a SQLite database as it is on disk (main, -wal, -shm), while the central holds it open."""
    return {suffix or "main": Path(f"{database}{suffix}").read_bytes()
            for suffix in ("", "-wal", "-shm") if Path(f"{database}{suffix}").exists()}


def secrets_in(blob: bytes) -> list[str]:
    return [s for s in (ID_NUMBER, PHONE, NAME) if s.encode() in blob]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def wide_umask():
    """Files made while the test runs would be 0644 without the central's own care."""
    old = os.umask(0o022)
    yield
    os.umask(old)


# -- 1. documents sealed at rest ------------------------------------------------------------------------

def test_no_id_or_phone_number_in_any_database_file_after_a_receipt(place, wide_umask):
    app = create_central_app(place.config())
    key = enrolled(app)
    central = app.extensions["dvc_central"]
    doc = personal()
    assert put(app.test_client(), key, doc).status_code == 201
    body = protocol.canonical_json(doc).decode()
    # Stored sealed, opened by the store for whoever reads it.
    ((stored,),) = place.rows("SELECT document FROM submissions WHERE submission_id = ?", (doc["submission_id"],))
    assert stored.startswith(SEALED_PREFIX) and secrets_in(stored.encode()) == []
    assert central.store.submission(doc["submission_id"])["document"] == body
    if place.dialect == "sqlite":
        files = raw_database_bytes(place.sqlite_file)  # the central is running: the row is in the WAL now
        assert {"main", "-wal", "-shm"} <= set(files)
        assert {name: secrets_in(data) for name, data in files.items()} == {name: [] for name in files}
        assert doc["tracking_code"].encode() in files["-wal"]  # the row is there, only its document is sealed
    # The key is beside the database, never in it.
    document_key = (place.data / DOCUMENTS_KEY).read_bytes()
    assert len(document_key) == 32
    dumped = "".join(str(r) for t in ("submissions", "store_meta", "changes") for r in place.rows(f"SELECT * FROM {t}"))
    assert document_key.hex() not in dumped and central.signing_key is not None


def test_a_sealed_document_moved_to_another_row_does_not_open(place):
    app = create_central_app(place.config())
    key = enrolled(app)
    store = app.extensions["dvc_central"].store
    first, second = personal(), personal()
    for doc in (first, second):
        put(app.test_client(), key, doc)
    place.run("UPDATE submissions SET document = (SELECT document FROM submissions WHERE submission_id = ?) "
              "WHERE submission_id = ?", (first["submission_id"], second["submission_id"]))
    with pytest.raises(DocumentKeyError):
        store.submission(second["submission_id"])


def test_key_and_database_files_are_owner_only(tmp_path, wide_umask):
    data = tmp_path / "central"
    app = create_central_app({"DATA_DIR": str(data)})
    put(app.test_client(), enrolled(app), personal())
    database = data / "central.sqlite3"
    assert Path(f"{database}-wal").exists() and Path(f"{database}-shm").exists()
    for path in (data / DOCUMENTS_KEY, database, Path(f"{database}-wal"), Path(f"{database}-shm"),
                 data / "central.ed25519", data / "central.x25519", data / "central-session.key"):
        assert mode(path) == 0o600, path


def test_database_files_made_world_readable_before_are_narrowed_at_start(tmp_path, wide_umask):
    data = tmp_path / "central"
    data.mkdir()
    database = data / "central.sqlite3"
    with closing(sqlite3.connect(database)) as conn:  # as the old central left it under umask 022: 0644
        conn.execute("PRAGMA journal_mode=WAL")
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").write_bytes(b"")
    assert {mode(Path(f"{database}{suffix}")) for suffix in ("", "-wal", "-shm")} == {0o644}
    central = open_central(data)
    central.store.count()
    for suffix in ("", "-wal", "-shm"):
        assert mode(Path(f"{database}{suffix}")) == 0o600, suffix
    central.store.close()


def _previous_release_database(place: Place, submission_id: str, body: str) -> None:
    """A database as the release before sealing left it: m001 only, the document in plain text."""
    place.data.mkdir(parents=True, exist_ok=True)
    with closing(place.connect()) as conn:
        if place.dialect == "sqlite":
            conn.execute("PRAGMA journal_mode=WAL")
        central_migrations.migrate(conn, place.dialect, central_migrations.MIGRATIONS[:1])
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    place.run("INSERT INTO stations (station_id, public_key, name, enrolled_at, last_change) VALUES (?, ?, ?, ?, 1)",
              ("K01", public_b64(Ed25519PrivateKey.generate()), "Xã Một", now))
    place.run("INSERT INTO submissions (submission_id, station_id, payload_sha256, central_code, tracking_code, "
              "procedure_code, document, received_at, status, status_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
              (submission_id, "K01", hashlib.sha256(body.encode()).hexdigest(), "000.00.00.H00-260105-00007",
               tracking_code.make("K01", "260105", 1), "1.004884", body, now, "processing", now))
    place.run("INSERT INTO changes (station_id, seq, submission_id, status, at, actor) VALUES (?, 1, ?, ?, ?, ?)",
              ("K01", submission_id, "processing", now, "staff"))


def test_plain_rows_of_an_older_release_are_sealed_at_start_once(place, wide_umask):
    doc = personal()
    body = protocol.canonical_json(doc).decode()
    _previous_release_database(place, doc["submission_id"], body)
    if place.dialect == "sqlite":
        assert secrets_in(b"".join(raw_database_bytes(place.sqlite_file).values()))  # plain before

    central = open_central(place.data, place.database)
    assert central.store.sealed_at_start == 1
    ((stored,),) = place.rows("SELECT document FROM submissions")
    assert stored.startswith(SEALED_PREFIX) and secrets_in(stored.encode()) == []
    assert central.store.submission(doc["submission_id"])["document"] == body
    # The migration counted the change away from 'received' as the hand-over.
    assert central.store.submission(doc["submission_id"])["handed_over_at"] is not None
    if place.dialect == "sqlite":
        files = raw_database_bytes(place.sqlite_file)
        assert {name: secrets_in(data) for name, data in files.items()} == {name: [] for name in files}
        assert mode(place.sqlite_file) == 0o600
    central.store.close()

    again = open_central(place.data, place.database)  # idempotent: nothing sealed twice
    assert again.store.sealed_at_start == 0
    assert place.rows("SELECT document FROM submissions") == [(stored,)]
    assert again.store.submission(doc["submission_id"])["document"] == body
    again.store.close()


def test_a_central_started_with_another_documents_key_refuses(place):
    app = create_central_app(place.config())
    put(app.test_client(), enrolled(app), personal())
    app.extensions["dvc_central"].store.close()
    key_file = place.data / DOCUMENTS_KEY
    right = key_file.read_bytes()
    key_file.unlink()  # lost: the central must not make a new key and carry on
    with pytest.raises(DocumentKeyError, match="central-documents.key"):
        open_central(place.data, place.database)
    assert not key_file.exists()  # the key made at this start is not left where the right one goes
    key_file.write_bytes(os.urandom(32))
    with pytest.raises(DocumentKeyError):
        open_central(place.data, place.database)
    key_file.write_bytes(right)
    open_central(place.data, place.database).store.close()


def test_the_backup_carries_the_documents_key_and_its_database_no_document(tmp_path):
    data = tmp_path / "central"
    app = create_central_app({"DATA_DIR": str(data)})
    doc = personal()
    put(app.test_client(), enrolled(app), doc)
    app.extensions["dvc_central"].store.close()
    made = backup_central(data, None, tmp_path / "backup.tar.gz")
    with tarfile.open(made["path"]) as tar:
        assert DOCUMENTS_KEY in tar.getnames()
        assert secrets_in(tar.extractfile("central.sqlite3").read()) == []
    # Put back on a new machine (an empty data folder): the documents open with the key from the backup.
    elsewhere = tmp_path / "elsewhere"
    restore_central(elsewhere, None, made["path"])
    assert (elsewhere / DOCUMENTS_KEY).read_bytes() == (data / DOCUMENTS_KEY).read_bytes()
    reopened = open_central(elsewhere)
    assert reopened.store.submission(doc["submission_id"])["document"] == protocol.canonical_json(doc).decode()
    reopened.store.close()


# -- 2. retention ---------------------------------------------------------------------------------------

def _ago(days: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(days=days)).isoformat(timespec="milliseconds")


def test_retention_drops_only_documents_handed_over_past_the_retention_and_the_restore_window(place):
    app = create_central_app(place.config(RETENTION_DAYS=30, RESTORE_WINDOW=7 * 86400))
    key = enrolled(app)
    central = app.extensions["dvc_central"]
    client = app.test_client()
    docs = {name: personal() for name in ("due", "still_received", "handed_recently", "in_restore_window",
                                          "due_too")}
    for doc in docs.values():
        assert put(client, key, doc).status_code == 201
    sid = {name: doc["submission_id"] for name, doc in docs.items()}
    for name in ("due", "handed_recently", "in_restore_window", "due_too"):
        assert central.store.set_status(sid[name], "processing", "lan")
    assert central.store.set_status(sid["due_too"], "received", "lan")  # moved back: it was handed over
    times = {"due": (41, 40), "still_received": (60, None), "handed_recently": (41, 10),
             "in_restore_window": (3, 31), "due_too": (50, 45)}  # (received, handed over) days ago
    for name, (received, handed) in times.items():
        place.run("UPDATE submissions SET received_at = ?, handed_over_at = ? WHERE submission_id = ?",
                  (_ago(received), _ago(handed) if handed is not None else None, sid[name]))
    before = {name: central.store.submission(s) for name, s in sid.items()}

    assert central.purge() == 2
    after = {name: central.store.submission(s) for name, s in sid.items()}
    assert {name for name, row in after.items() if row["document"] is None} == {"due", "due_too"}
    for name in ("still_received", "handed_recently", "in_restore_window"):
        assert after[name]["document"] == protocol.canonical_json(docs[name]).decode()
    # The row stays: hash, codes and status, so acknowledgements, holds and tracking still work.
    for name in ("due", "due_too"):
        kept = {k: v for k, v in after[name].items() if k not in ("document", "document_purged_at")}
        assert kept == {k: v for k, v in before[name].items() if k not in ("document", "document_purged_at")}
        assert after[name]["document_purged_at"] is not None
    assert place.rows("SELECT document FROM submissions WHERE submission_id = ?", (sid["due"],)) == [("",)]
    assert central.store.holds("K01", [sid["due"]]) == {sid["due"]: before["due"]["payload_sha256"]}
    assert put(client, key, docs["due"]).status_code == 200  # sent again: the same acknowledgement
    assert central.store.submission(sid["due"])["document"] is None  # and not stored again
    assert central.purge() == 0
    assert central.store.count() == 5


def test_a_document_is_never_dropped_within_the_restore_window_whatever_the_retention(place):
    app = create_central_app(place.config(RETENTION_DAYS=0, RESTORE_WINDOW=7 * 86400))
    key = enrolled(app)
    central = app.extensions["dvc_central"]
    young, old = personal(), personal()
    for doc in (young, old):
        put(app.test_client(), key, doc)
        central.store.set_status(doc["submission_id"], "done", "lan")
    place.run("UPDATE submissions SET received_at = ? WHERE submission_id = ?", (_ago(6.9), young["submission_id"]))
    place.run("UPDATE submissions SET received_at = ? WHERE submission_id = ?", (_ago(7.1), old["submission_id"]))
    assert central.purge() == 1
    assert central.store.submission(young["submission_id"])["document"] is not None
    assert central.store.submission(old["submission_id"])["document"] is None


def test_the_purge_command_and_the_serving_process_purge(tmp_path):
    data = tmp_path / "central"
    app = create_central_app({"DATA_DIR": str(data)})
    key = enrolled(app)
    central = app.extensions["dvc_central"]
    docs = [personal() for _ in range(2)]
    for doc in docs:
        put(app.test_client(), key, doc)
        central.store.set_status(doc["submission_id"], "processing", "lan")
    central.store.close()
    with closing(sqlite3.connect(data / "central.sqlite3")) as conn, conn:
        conn.execute("UPDATE submissions SET received_at = ?, handed_over_at = ? WHERE submission_id = ?",
                     (_ago(40), _ago(31), docs[0]["submission_id"]))
        conn.execute("UPDATE submissions SET received_at = ?, handed_over_at = ? WHERE submission_id = ?",
                     (_ago(40), _ago(20), docs[1]["submission_id"]))
    result = CliRunner().invoke(central_group, ["purge", "--data", str(data)])
    assert result.exit_code == 0 and "Dropped the documents of 1 " in result.output, result.output
    # The serving process: at start, then every interval.
    reopened = open_central(data, retention_days=10)
    stop = start_purging(reopened, interval=0.05, announce=lambda line: None)
    try:
        for _ in range(100):
            if reopened.store.submission(docs[1]["submission_id"])["document"] is None:
                break
            threading.Event().wait(0.05)
    finally:
        stop.set()
    assert reopened.store.submission(docs[1]["submission_id"])["document"] is None


# -- 3. the staff page ----------------------------------------------------------------------------------

def csrf(client, path="/staff/login") -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True)).group(1)


def login(client, username="lan", password=PASSWORD):
    return client.post("/staff/login", data={"username": username, "password": password,
                                             "csrf_token": csrf(client)})


def test_the_staff_page_refuses_without_an_account(tmp_path):
    app = create_central_app({"DATA_DIR": str(tmp_path / "central")})
    key = enrolled(app)
    doc = personal()
    put(app.test_client(), key, doc)
    client = app.test_client()
    page = client.get("/staff/")
    assert page.status_code == 303 and page.headers["Location"].endswith("/staff/login")
    assert doc["tracking_code"] not in page.get_data(as_text=True)
    assert login(client, "canbo", "anything-at-all").status_code == 401  # no account at all: no way in
    resp = client.post(f"/staff/{doc['submission_id']}/status", data={"status": "done", "csrf_token": csrf(client)})
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/staff/login")
    assert app.extensions["dvc_central"].store.submission(doc["submission_id"])["status"] == "received"
    # Basic auth, the old way in, opens nothing.
    import base64
    basic = {"Authorization": "Basic " + base64.b64encode(b"canbo:anything").decode()}
    assert client.get("/staff/", headers=basic).status_code == 303


def test_an_account_logs_in_and_its_name_is_the_actor_of_a_status_change(place):
    app = create_central_app(place.config())
    key = enrolled(app)
    central = app.extensions["dvc_central"]
    central.add_staff("lan", PASSWORD)
    doc = personal()
    put(app.test_client(), key, doc)
    client = app.test_client()
    assert login(client, "lan", "wrong-password-1").status_code == 401
    assert login(client).status_code == 303
    page = client.get("/staff/").get_data(as_text=True)
    assert doc["tracking_code"] in page and "lan" in page and ID_NUMBER not in page
    import base64
    resp = client.post(f"/staff/{doc['submission_id']}/status",
                       data={"status": "processing", "actor": "mallory", "csrf_token": csrf(client, "/staff/")},
                       headers={"Authorization": "Basic " + base64.b64encode(b"mallory:x").decode()})
    assert resp.status_code == 303
    assert place.rows("SELECT status, actor FROM changes WHERE submission_id = ? ORDER BY seq",
                      (doc["submission_id"],)) == [("received", "central"), ("processing", "lan")]
    assert client.post("/staff/logout", data={"csrf_token": csrf(client, "/staff/")}).status_code == 303
    assert client.get("/staff/").status_code == 303


def test_a_deactivated_account_is_logged_out_and_cannot_log_in(tmp_path):
    data = tmp_path / "central"
    app = create_central_app({"DATA_DIR": str(data)})
    app.extensions["dvc_central"].add_staff("lan", PASSWORD)
    client = app.test_client()
    assert login(client).status_code == 303 and client.get("/staff/").status_code == 200
    app.extensions["dvc_central"].store.staff_set_active("lan", False)
    assert client.get("/staff/").status_code == 303
    assert login(client).status_code == 401


def _attempt(central, password, results):
    try:
        central.login("lan", password)
        results.append("ok")
    except LoginRefused as refused:
        results.append(refused.reason)


def _at_once(central, passwords):
    results, barrier = [], threading.Barrier(len(passwords))

    def go(password):
        barrier.wait(timeout=10)
        _attempt(central, password, results)

    threads = [threading.Thread(target=go, args=(p,)) for p in passwords]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_lockout_engages_at_the_fifth_wrong_password_even_at_once(place):
    central = open_central(place.data, place.database)
    central.add_staff("lan", PASSWORD)
    # Four wrong at once: counted, each of them, but no lock; the right one still works and resets the count.
    assert sorted(_at_once(central, ["wrong-password-%d" % i for i in range(4)])) == ["wrong"] * 4
    assert central.store.staff_account("lan")["failed_logins"] == 4
    assert central.login("lan", PASSWORD) == "lan"
    assert central.store.staff_account("lan")["failed_logins"] == 0
    # Nine wrong at once: the fifth locks the account; none after it is counted, none gets through.
    results = _at_once(central, ["wrong-password-%d" % i for i in range(9)])
    assert sorted(results) == ["locked"] * 5 + ["wrong"] * 4
    account = central.store.staff_account("lan")
    until = datetime.fromisoformat(account["locked_until"]) - datetime.now(timezone.utc)
    assert timedelta(minutes=14) < until <= timedelta(minutes=15)
    with pytest.raises(LoginRefused) as refused:
        central.login("lan", PASSWORD)  # locked: the right password waits too
    assert refused.value.reason == "locked"
    # Fifteen minutes later it opens again.
    place.run("UPDATE central_staff SET locked_until = ? WHERE username = 'lan'", (_ago(0.0001),))
    assert central.login("lan", PASSWORD) == "lan"
    central.store.close()


def test_the_login_form_says_the_account_is_locked_after_five_wrong_passwords(tmp_path):
    app = create_central_app({"DATA_DIR": str(tmp_path / "central")})
    app.extensions["dvc_central"].add_staff("lan", PASSWORD)
    client = app.test_client()
    for _ in range(4):
        assert "Wrong user name or password" in login(client, "lan", "wrong-password").get_data(as_text=True)
    fifth = login(client, "lan", "wrong-password")
    assert fifth.status_code == 401 and "locked" in fifth.get_data(as_text=True)
    assert "locked" in login(client).get_data(as_text=True)
    assert client.get("/staff/").status_code == 303


def test_login_attempts_are_limited_per_client(tmp_path):
    app = create_central_app({"DATA_DIR": str(tmp_path / "central")})
    app.extensions["dvc_central"].add_staff("lan", PASSWORD)
    guesser = app.test_client()
    guesser.environ_base["REMOTE_ADDR"] = "203.0.113.7"
    for n in range(10):  # names that do not exist: no account gets locked, only the client is slowed
        assert login(guesser, f"user{n}", "guess-guess-guess").status_code == 401
    refused = login(guesser, "lan", PASSWORD)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert guesser.get("/staff/").status_code == 303
    colleague = app.test_client()
    colleague.environ_base["REMOTE_ADDR"] = "198.51.100.2"
    assert login(colleague).status_code == 303


@pytest.mark.parametrize("path", ["/staff/login", "/staff/", "/api/v1/health"])
def test_security_headers_and_no_framing(tmp_path, path):
    app = create_central_app({"DATA_DIR": str(tmp_path / "central")})
    app.extensions["dvc_central"].add_staff("lan", PASSWORD)
    client = app.test_client()
    if path != "/staff/login":
        assert login(client).status_code == 303
    resp = client.get(path)
    assert resp.status_code == 200
    csp = resp.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp and "style-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["Cache-Control"] == "no-store"
    if path.startswith("/staff"):
        html = resp.get_data(as_text=True)
        assert "<style" not in html and "<script" not in html and " style=" not in html  # nothing the CSP blocks
        assert client.get("/staff/central.css").status_code == 200


def test_a_post_from_another_site_is_refused(tmp_path):
    app = create_central_app({"DATA_DIR": str(tmp_path / "central")})
    key = enrolled(app)
    app.extensions["dvc_central"].add_staff("lan", PASSWORD)
    doc = personal()
    put(app.test_client(), key, doc)
    client = app.test_client()
    login(client)
    token = csrf(client, "/staff/")
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}):
        resp = client.post(f"/staff/{doc['submission_id']}/status", data={"status": "done", "csrf_token": token},
                           headers=headers)
        assert resp.status_code == 403, headers
    assert client.post(f"/staff/{doc['submission_id']}/status", data={"status": "done"}).status_code == 400
    assert app.extensions["dvc_central"].store.submission(doc["submission_id"])["status"] == "received"
    ok = client.post(f"/staff/{doc['submission_id']}/status", data={"status": "done", "csrf_token": token},
                     headers={"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"})
    assert ok.status_code == 303


def test_staff_commands_add_list_and_deactivate(place):
    runner = CliRunner()
    where = ["--data", str(place.data)] + (["--db", place.database] if place.database else [])
    added = runner.invoke(central_group, ["staff", "add", "lan", "--password-stdin", *where], input=PASSWORD + "\n")
    assert added.exit_code == 0, added.output
    short = runner.invoke(central_group, ["staff", "add", "hoa", "--password-stdin", *where], input="123456\n")
    assert short.exit_code != 0 and "10 characters" in short.output
    taken = runner.invoke(central_group, ["staff", "add", "lan", "--password-stdin", *where], input=PASSWORD + "\n")
    assert taken.exit_code != 0 and "taken" in taken.output
    listed = runner.invoke(central_group, ["staff", "list", *where])
    assert "lan\tactive" in listed.output and "hoa" not in listed.output
    (secret_hash,) = place.rows("SELECT secret_hash FROM central_staff WHERE username = 'lan'")[0]
    assert secret_hash.startswith("$argon2") and PASSWORD not in secret_hash
    assert runner.invoke(central_group, ["staff", "deactivate", "lan", *where]).exit_code == 0
    assert "lan\tdeactivated" in runner.invoke(central_group, ["staff", "list", *where]).output
    assert runner.invoke(central_group, ["staff", "deactivate", "nobody", *where]).exit_code != 0
    central = open_central(place.data, place.database)
    with pytest.raises(LoginRefused):
        central.login("lan", PASSWORD)
    # Activated again, then locked by wrong passwords and unlocked by an operator: logs in at once.
    assert runner.invoke(central_group, ["staff", "activate", "lan", *where]).exit_code == 0
    for _ in range(5):
        with pytest.raises(LoginRefused):
            central.login("lan", "not the password")
    assert ", locked until" in runner.invoke(central_group, ["staff", "list", *where]).output
    with pytest.raises(LoginRefused):
        central.login("lan", PASSWORD)
    assert runner.invoke(central_group, ["staff", "unlock", "lan", *where]).output == "lan unlocked\n"
    assert "lan\tactive\t" in runner.invoke(central_group, ["staff", "list", *where]).output
    assert central.login("lan", PASSWORD)
    assert runner.invoke(central_group, ["staff", "unlock", "nobody", *where]).exit_code != 0
    central.store.close()
