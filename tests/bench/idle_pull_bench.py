"""``bench_idle_pull``: what an idle station's status pull costs the central, before (a plain pull: the
view reads the station, its head and changes from the database and signs an empty feed) and after (the
conditional pull: 304 from the fast path, sync/feed.py, no database read).

Two places are measured, each plain and conditional, over ``stations`` enrolled stations that each had a
change (every pull asks from the station's head: nothing new):

- in-process: the central's WSGI app called directly, ``time.process_time()`` over ``n`` pulls (the
  requests signed beforehand, not timed), so the number is the central's own CPU per pull;
- over HTTP: the central as its own process (``kiosk central serve``, waitress) on 127.0.0.1, ``n`` pulls
  on one kept-alive connection; the central's CPU from /proc (user + system, all its threads) and the
  latency the client saw (request to last byte). A last row sends the same conditional pulls to waitress
  with an app that answers 304 at once: the HTTP server's own cost, the floor under the other HTTP rows.

Rows: ``name``, ``n``, ``cpu_us_per_pull``, ``p50_ms``, ``p95_ms``, ``statuses`` (what the central
answered). A TEST AND BENCHMARK HELPER, not used in service.
"""
import http.client
import io
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kiosk.core import tracking_code
from sync import protocol
from sync.keys import public_b64

CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (/proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def _quantile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def _setup(data_dir: Path, stations: int):
    """A central data folder with ``stations`` enrolled stations, one received dossier each; returns
    (keys by station id, the store identity, the central's public signing key). The app is let go after."""
    from sync.central import create_central_app

    app = create_central_app({"DATA_DIR": str(data_dir)})
    central = app.extensions["dvc_central"]
    keys = {}
    for i in range(stations):
        station_id = f"B{i:04d}"
        key = keys[station_id] = Ed25519PrivateKey.generate()
        central.store.enrol(station_id, public_b64(key))
        doc = {"submission_id": str(uuid.uuid4()), "tracking_code": tracking_code.make(station_id, "261128", 1),
               "station_id": station_id, "channel": "counter",
               "procedure": {"code": "1.004884", "slug": "trich-luc", "version": "1"},
               "submitted_at": "2026-11-28T03:00:00+00:00", "answers": {"full_name": "Nguyễn Văn A"},
               "supersedes": None}
        body = protocol.canonical_json(doc)
        path = f"/api/v1/submissions/{doc['submission_id']}"
        resp = app.test_client().put(path, data=body, headers=protocol.sign_request(key, station_id, "PUT", path, body))
        assert resp.status_code == 201, resp.status_code
    identity = central.store.identity()
    public = central.signing_key.public_key()
    central.store.close()
    central.store.feed.close()
    return keys, identity, public


def _requests(keys: dict, identity: dict, n: int, conditional: bool) -> list[tuple[str, str, dict]]:
    """``n`` signed idle pulls, round robin over the stations: (path, query, headers)."""
    ids = sorted(keys)
    out = []
    for i in range(n):
        station_id = ids[i % len(ids)]
        path, query = f"/api/v1/stations/{station_id}/changes", "since=1&limit=500"
        headers = protocol.sign_request(keys[station_id], station_id, "GET", f"{path}?{query}", b"")
        if conditional:
            headers[protocol.H_IF_NONE_MATCH] = protocol.feed_tag(identity, 1)
        out.append((path, query, headers))
    return out


def _in_process(app, requests: list) -> tuple[float, list[float], dict]:
    """(CPU seconds, latencies in ms, statuses) of the requests through the app's WSGI callable."""
    statuses: dict[str, int] = {}
    seen = []

    def start_response(status, headers, exc_info=None):
        seen.append(status)

    environs = []
    for path, query, headers in requests:
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1",
                   "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
                   "wsgi.input": io.BytesIO(b""), "wsgi.errors": io.StringIO(), "wsgi.version": (1, 0),
                   "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
                   "REMOTE_ADDR": "127.0.0.1"}
        for name, value in headers.items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        environs.append(environ)
    latencies = []
    cpu = time.process_time()
    for environ in environs:
        started = time.perf_counter()
        body = app(environ, start_response)
        b"".join(body)
        if hasattr(body, "close"):
            body.close()
        latencies.append((time.perf_counter() - started) * 1000)
    cpu = time.process_time() - cpu
    for status in seen:
        statuses[status[:3]] = statuses.get(status[:3], 0) + 1
    return cpu, latencies, statuses


def _over_http(port: int, pid: int, requests: list) -> tuple[float, list[float], dict]:
    """(the central's CPU seconds, latencies in ms, statuses) of the requests on one kept-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    statuses: dict[str, int] = {}
    latencies = []
    try:
        cpu = _process_cpu(pid)
        for path, query, headers in requests:
            started = time.perf_counter()
            conn.request("GET", f"{path}?{query}", headers={"Accept": "application/json", **headers})
            resp = conn.getresponse()
            resp.read()
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[str(resp.status)] = statuses.get(str(resp.status), 0) + 1
        time.sleep(0.05)  # the last answer's bookkeeping in the server's threads
        cpu = _process_cpu(pid) - cpu
    finally:
        conn.close()
    return cpu, latencies, statuses


_FLOOR = """
import waitress
def app(environ, start_response):
    start_response("304 Not Modified", [("ETag", '"x"')])
    return []
server = waitress.create_server(app, host="127.0.0.1", port=0, threads=8)
print(server.effective_port, flush=True)
server.run()
"""


def _server_floor(requests: list) -> tuple[float, list[float], dict]:
    """The same requests to waitress (as ``kiosk central serve`` runs it) with an app that answers 304 at
    once: what the HTTP server alone costs per request, below which no fast path can go."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", _FLOOR], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        port = int(proc.stdout.readline())
        _over_http(port, proc.pid, requests[:200])
        return _over_http(port, proc.pid, requests)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def _row(name: str, n: int, cpu: float, latencies: list[float], statuses: dict) -> dict:
    return {"name": name, "n": n, "cpu_us_per_pull": round(cpu / n * 1e6, 1),
            "p50_ms": round(_quantile(latencies, 50), 3), "p95_ms": round(_quantile(latencies, 95), 3),
            "statuses": statuses}


def bench_idle_pull(n: int = 5000, stations: int = 200, http_n: int | None = None,
                    over_http: bool = True) -> list[dict]:
    """Rows for idle pulls, plain (before) and conditional (after), in-process and over HTTP (see the module's
    docstring). ``http_n`` pulls over HTTP (default ``n``)."""
    from sync.central import create_central_app
    from tests.support.harness import CentralProcess

    http_n = n if http_n is None else http_n
    rows = []
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-") as tmp:
        data = Path(tmp) / "central"
        keys, identity, _public = _setup(data, stations)
        app = create_central_app({"DATA_DIR": str(data)})
        try:
            for conditional in (False, True):
                _in_process(app, _requests(keys, identity, len(keys), conditional))  # warm: keys read, code paths hot
                cpu, latencies, statuses = _in_process(app, _requests(keys, identity, n, conditional))
                rows.append(_row(f"idle pull, in-process WSGI, {'conditional (304)' if conditional else 'plain (200)'}",
                                 n, cpu, latencies, statuses))
        finally:
            app.extensions["dvc_central"].store.close()
            app.extensions["dvc_central"].store.feed.close()
        if over_http and http_n:
            process = CentralProcess(data).start()
            try:
                for conditional in (False, True):
                    _over_http(process.port, process.proc.pid, _requests(keys, identity, len(keys), conditional))
                    cpu, latencies, statuses = _over_http(process.port, process.proc.pid,
                                                          _requests(keys, identity, http_n, conditional))
                    rows.append(_row(f"idle pull, HTTP to one central process, "
                                     f"{'conditional (304)' if conditional else 'plain (200)'}",
                                     http_n, cpu, latencies, statuses))
            finally:
                process.kill()
            cpu, latencies, statuses = _server_floor(_requests(keys, identity, http_n, True))
            rows.append(_row("HTTP server alone: waitress, an app answering 304 at once", http_n, cpu, latencies,
                             statuses))
    return rows


def print_idle_pull_rows(rows: list[dict]) -> None:
    print("| idle status pull | pulls | central CPU µs per pull | p50 ms | p95 ms | answers |")
    print("|---|---:|---:|---:|---:|---|")
    for row in rows:
        answers = ", ".join(f"{status}: {count}" for status, count in sorted(row["statuses"].items()))
        print(f"| {row['name']} | {row['n']} | {row['cpu_us_per_pull']:.1f} | {row['p50_ms']:.3f} | "
              f"{row['p95_ms']:.3f} | {answers} |")


if __name__ == "__main__":  # python -m tests.bench.idle_pull_bench: a short run
    print_idle_pull_rows(bench_idle_pull(n=2000, stations=100))
