"""The central as a province runs it: several worker processes (`kiosk central serve --workers N`) on
PostgreSQL, for the multi-process tests and the load benchmark (its PostgreSQL: tests/support/postgres.py),
and CPU time read from /proc. A TEST AND BENCHMARK HELPER, not used in service.
"""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.nginx import children


CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def fresh_database(server_url: str, name: str) -> str:
    """A new, empty database ``name`` on the server (dropped first if there), as a URL."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + "/" + name


def postgres_pids(server_url: str) -> list[int]:
    """The pids of the server's processes that pg_stat_activity lists (backends and background workers)."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as conn:
        return [pid for (pid,) in conn.execute("SELECT pid FROM pg_stat_activity")]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads), or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK  # utime, stime (fields 14 and 15 of stat)


class CpuMeter:
    """CPU seconds spent by a set of processes between ``start()`` and ``stop()``; processes are found by a
    function called at both ends (a process that appears counts from 0; one gone at the end is lost)."""

    def __init__(self, find_pids):
        self.find_pids = find_pids
        self._start: dict[int, float] = {}

    def start(self) -> None:
        self._start = {pid: cpu for pid in self.find_pids() if (cpu := cpu_seconds(pid)) is not None}

    def stop(self) -> float:
        total = 0.0
        for pid in set(self.find_pids()) | set(self._start):
            now = cpu_seconds(pid)
            if now is not None:
                total += now - self._start.get(pid, 0.0)
        return total


class CentralWorkers:
    """``python -m sync.central_cli serve --workers N`` on a database, on a free port, its output read by a
    thread (kept in ``lines``) so it never blocks on a full pipe."""

    def __init__(self, data_dir: Path, database: str, workers: int = 3, threads: int = 8, *options: str):
        self.data_dir, self.database = Path(data_dir), database
        self.workers, self.threads, self.options = workers, threads, options
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.lines: list[str] = []
        self.log = self.data_dir.parent / f"{self.data_dir.name}-gunicorn.log"

    def start(self, timeout: float = 60) -> "CentralWorkers":
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sync.central_cli", "serve", "--data", str(self.data_dir), "--db", self.database,
             "--port", "0", "--workers", str(self.workers), "--threads", str(self.threads), "--behind-proxy", "1",
             *self.options],
            stdout=subprocess.PIPE, stderr=self._log_file, text=True, start_new_session=True)
        ready = threading.Event()

        def read():
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                if "listening on" in line:
                    self.port = int(line.rsplit(":", 1)[1])
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=read, name="central-output", daemon=True)
        self._reader.start()
        if not ready.wait(timeout) or not self.port:
            self.stop()
            raise RuntimeError(f"the central did not start: {self.log.read_text()[-3000:]}")
        self.wait_for_workers(self.workers, timeout)
        return self

    def worker_pids(self) -> list[int]:
        return children(self.proc.pid) if self.proc is not None else []

    def pids(self) -> list[int]:
        """The arbiter's pid and its workers'."""
        return ([self.proc.pid] + self.worker_pids()) if self.proc is not None else []

    def wait_for_workers(self, n: int, timeout: float = 30) -> list[int]:
        """Until ``n`` workers answer (each built its app: it announced nothing, so its health is asked)."""
        import http.client

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.worker_pids()
            if len(pids) >= n:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                    conn.request("GET", "/api/v1/health")
                    if conn.getresponse().status == 200:
                        conn.close()
                        return pids
                except OSError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"{n} workers did not start: {self.log.read_text()[-3000:]}")

    def kill_worker(self, pid: int | None = None) -> int:
        """SIGKILL one worker (the first, or ``pid``); the arbiter starts another."""
        pid = pid or self.worker_pids()[0]
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # graceful: the arbiter stops its workers
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stdout:
            self._reader.join(timeout=5)  # it reads to the end of the output, then stops
            self.proc.stdout.close()
        if getattr(self, "_log_file", None):
            self._log_file.close()
            self._log_file = None
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
