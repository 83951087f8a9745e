"""``kiosk central serve --workers N``: the reference central as N worker processes on one listening
socket (gunicorn, ``gthread`` workers: threads in each), for a province's PostgreSQL behind a reverse proxy
(deploy/nginx-central.conf, docs/deploy-central.md).

Why gunicorn: its arbiter binds the socket once, forks the workers and starts a new one at once when one
dies (even by SIGKILL: the socket stays open in the arbiter, so the kernel hands new connections to the
living workers meanwhile); it stops them gracefully on SIGTERM and reloads them on SIGHUP. Waitress per
process on SO_REUSEPORT would need a supervisor of our own for all of that. The app is *not* preloaded:
each worker builds its own after the fork (``create_central_app``), so each opens its own database
connections, reads the key files and runs its own notification sender. ``kiosk central serve`` builds the
app once in the arbiter before forking (keys made on a first start, migrations, documents and old plain
blobs sealed), then closes its connection, so N workers starting at once never race to create a key and
a worker started again after a crash does not scan the blob folder.

What is shared between the workers, and how (docs/deploy-central.md, "Several processes"):

- submissions, official codes, change numbers, staff accounts and lockouts: the database (row locks; a
  code block reserved in ``code-watermark.json`` under an flock, merged, never lowered);
- blobs and resumable uploads: the blob folder, under flocks (``BlobStore``'s ``ProcessLock``s), so two
  workers never append to one upload at once; a receipt that checks its blobs and the retention dropping
  them exclude each other through ``NamingLock``;
- idle conditional pulls: the feed board (sync/feed.py), a memory-mapped file every process on the host
  shares; each worker keeps the station keys it checked in its own memory;
- notifications: each row is claimed in the database (a lease) before it is sent: several senders never
  send one row twice;
- the retention purge: one process at a time (``PurgeRunner``: a PostgreSQL advisory lock, or an flock on
  ``<data>/central-purge.lock`` on SQLite); the others try again every minute, so a killed holder is
  replaced;
- per process, not shared: the tracking questions' token bucket and the staff login limiter (a station
  may ask up to N times ``TRACK_BURST`` at once across N workers; the per-account lockout is in the
  database and holds for all).
"""
import fcntl
import os
import threading
import time

PURGE_LOCK_FILE = "central-purge.lock"
PURGE_ADVISORY_KEY = 0x4456_4350  # "DVCP": the purge runner's PostgreSQL advisory lock
PURGE_RETRY_S = 60.0              # a process that does not hold the purge tries to take it this often


class PurgeRunner:
    """The retention purge (``Central.purge``) in one process of many: the holder of a PostgreSQL session
    advisory lock (on a connection of its own, so it holds across hosts sharing the database) or, on
    SQLite, of an flock on ``<data>/central-purge.lock``. The OS or PostgreSQL frees it when the holder
    dies; the others try every ``retry`` seconds."""

    def __init__(self, central, database: str | None, retry: float = PURGE_RETRY_S):
        self.central, self.database, self.retry = central, database, retry
        self.postgres = bool(database) and database.startswith(("postgresql://", "postgres://"))
        self._conn = None   # PostgreSQL: the connection holding the advisory lock
        self._fd = None     # SQLite: the descriptor holding the flock
        self.holding = False

    def _take(self) -> bool:
        """True when this process holds the purge now (taking it if free)."""
        if self.postgres:
            if self._conn is not None:
                try:
                    self._conn.execute("SELECT 1")
                    return True
                except Exception:  # noqa: BLE001  (the connection, and with it the lock, is gone)
                    self._drop()
            import psycopg

            try:
                conn = psycopg.connect(self.database, autocommit=True, connect_timeout=10)
            except psycopg.Error:
                return False
            (taken,) = conn.execute("SELECT pg_try_advisory_lock(%s)", (PURGE_ADVISORY_KEY,)).fetchone()
            if taken:
                self._conn = conn
                return True
            conn.close()
            return False
        if self._fd is not None:
            return True
        fd = os.open(self.central.data_dir / PURGE_LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001
                pass
            self._conn = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def start(self, interval: float, announce=print) -> threading.Event:
        """Purge every ``interval`` seconds while holding the purge (at once when taking it), in a daemon
        thread, until the event returned is set."""
        stop = threading.Event()

        def run():
            due = 0.0
            try:
                while True:
                    held = self._take()
                    if held and not self.holding:
                        announce(f"retention: this process (pid {os.getpid()}) runs the purge")
                        due = 0.0
                    self.holding = held
                    if held and time.monotonic() >= due:
                        due = time.monotonic() + interval
                        try:
                            dropped = self.central.purge()
                            if dropped:
                                announce(f"retention: dropped the documents of {dropped} handed-over dossiers "
                                         f"and {self.central.last_purge['blobs']} blobs no other held dossier names")
                        except Exception as exc:  # noqa: BLE001  (the next round tries again)
                            announce(f"retention: purge failed: {type(exc).__name__}")
                    wait = min(self.retry, max(due - time.monotonic(), 0.5)) if held else self.retry
                    if stop.wait(wait):
                        return
            finally:
                self._drop()

        threading.Thread(target=run, name="central-purge", daemon=True).start()
        return stop


def behind_proxy(app, hops: int):
    """The app told that ``hops`` reverse proxies stand in front (``X-Forwarded-For`` and ``-Proto``, the last
    ``hops`` of each trusted), so the login limiter counts real clients; 0 leaves it as it is."""
    if hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)
    return app


def gunicorn_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("gunicorn") is not None


def serve_workers(config: dict, workers: int, threads: int = 8, host: str = "127.0.0.1", port: int = 8090,
                  announce=print, purge_interval: float | None = None, timeout: int = 60) -> None:
    """Serve ``create_central_app(config)`` from ``workers`` gunicorn processes of ``threads`` threads on
    one socket; port 0 takes a free port, and the address is announced once listening (``central listening
    on http://HOST:PORT``). Blocks until the arbiter stops (SIGTERM, SIGINT: gracefully). The caller has
    built the app once already with this config (as ``kiosk central serve`` does): the data folder and the
    database are ready."""
    from gunicorn.app.base import BaseApplication

    from .central import PURGE_INTERVAL_S, create_central_app

    interval = PURGE_INTERVAL_S if purge_interval is None else purge_interval

    def when_ready(server):
        address = server.LISTENERS[0].sock.getsockname()
        announce(f"central listening on http://{address[0]}:{address[1]}")
        announce(f"{workers} worker processes of {threads} threads (gunicorn, arbiter pid {os.getpid()})")

    class CentralApplication(BaseApplication):
        def load_config(self):
            settings = {
                "bind": [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"],
                "workers": workers, "threads": threads, "worker_class": "gthread",
                "preload_app": False, "proc_name": "dvc-central",
                "timeout": timeout, "graceful_timeout": 30,
                # Longer than the proxy keeps an idle upstream connection (keepalive_timeout 30s in
                # deploy/nginx-central.conf), so the proxy, not the worker, closes it: no request is sent
                # on a connection the worker is closing.
                "keepalive": 75,
                "accesslog": None, "errorlog": "-", "loglevel": "info",
                "when_ready": when_ready,
                "control_socket_disable": True,  # gunicorn >= 24's control socket: not used
            }
            if os.path.isdir("/dev/shm"):
                settings["worker_tmp_dir"] = "/dev/shm"  # the heartbeat file: never on a slow disk
            for key, value in settings.items():
                if key in self.cfg.settings:
                    self.cfg.set(key, value)

        def load(self):
            # In the worker, after the fork: its own app, connections, sender; and a try at the purge.
            # The arbiter sealed old plain blobs before forking (serve_command's app): not again per worker.
            app = behind_proxy(create_central_app({**config, "SEAL_BLOBS_AT_START": False}),
                               int(config.get("PROXY_HOPS") or 0))
            central = app.extensions["dvc_central"]
            if interval > 0:
                PurgeRunner(central, config.get("DATABASE")).start(interval, announce)
            return app

    CentralApplication().run()
