"""`python -m tests.bench` options (`make bench ARGS=...`): --list, --only, --port-base, and the sync rows
measured by time (--min-seconds) and repeated (--repeat). Cheap groups only: the card group needs pcscd,
the others take minutes."""
import errno
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.bench import run
from tests.bench.sync_bench import bench_sync

ROOT = Path(__file__).resolve().parent.parent


def _bound(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port: a bind with SO_REUSEADDR fails only then (no
    connection is made to the server under test)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def _free_block(count: int = 4) -> int:
    """A base port with ``count`` free ports from it."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 60_000)
        if not any(_bound(base + offset) for offset in range(count)):
            return base
    raise RuntimeError("no free block of ports")


class Watch:
    """Notes, while a bench runs, which of ``ports`` something listened on."""

    def __init__(self, *ports: int):
        self.ports = ports
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.seen.update(port for port in self.ports if port not in self.seen and _bound(port))
            time.sleep(0.02)

    def __enter__(self):
        assert not any(_bound(port) for port in self.ports), "the ports were taken before the bench ran"
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=2)


def test_list_prints_every_group(capsys):
    assert run.main(["--list"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines()]
    assert names == list(run.GROUPS)
    assert {"wizard", "page-load", "receipt", "card", "pages", "sync", "documents"} <= set(names)


def test_an_unknown_group_is_an_error_that_lists_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exit_:
        run.main(["--only", "sync,nope"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unknown bench group 'nope'" in err
    for name in run.GROUPS:
        assert name in err


def test_only_takes_a_comma_list_or_repeats_and_runs_those_alone_in_table_order(monkeypatch, capsys):
    ran = []

    def fake(name):
        def group(options):
            ran.append(name)
            return run.Section([{"name": f"{name} row", "n": 1, "p50_ms": 1.0}], f"{name}: measured",
                               [lambda: print(f"{name} table")])
        return group
    monkeypatch.setattr(run, "GROUPS", {name: ("", fake(name)) for name in ("a", "b", "c", "d")})
    assert run.main(["--only", "c,a", "--only", "d"]) == 0
    assert ran == ["a", "c", "d"]
    out = capsys.readouterr().out
    assert "a: measured; c: measured; d: measured" in out
    assert "| a row |" in out and "| b row |" not in out and "b table" not in out
    assert out.index("| d row |") < out.index("a table") < out.index("c table") < out.index("d table")


def test_only_receipt_runs_that_group_alone_with_its_printer_on_the_fixed_port():
    base = _free_block()
    with Watch(base + 3) as watch:
        done = subprocess.run([sys.executable, "-m", "tests.bench", "--only", "receipt", "--port-base", str(base)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"fixed ports: station {base}, central {base + 1}, weak-link proxy {base + 2}, printer {base + 3}" in out
    assert "| receipt compose+print, fake network printer 80 mm | 30 |" in out
    assert "| receipt compose+print, fake network printer 58 mm | 30 |" in out
    assert "wizard" not in out and "sync benchmark" not in out and "Chromium" not in out and "card_read" not in out
    assert watch.seen == {base + 3}


def test_the_station_listens_on_the_fixed_port():
    base = _free_block()
    with Watch(base) as watch:
        rows = run.bench_wizard(clients=1, rounds=1, port=base)
    assert rows and watch.seen == {base}


def test_the_central_and_the_weak_link_proxy_listen_on_the_fixed_ports():
    base = _free_block()
    with Watch(base + 1, base + 2) as watch:
        rows = bench_sync(n_loopback=10, n_weak_batch=2, min_seconds=0, repeat=2,
                          rows=("loopback-batch", "weak-batch"), central_port=base + 1, proxy_port=base + 2)
    assert [row["repeat"] for row in rows] == [2, 2]
    assert {run_["central_port"] for row in rows for run_ in row["runs"]} == {base + 1}  # reused run after run
    assert [run_["proxy_port"] for run_ in rows[1]["runs"]] == [base + 2, base + 2]
    assert watch.seen == {base + 1, base + 2}


def test_sync_rows_run_for_min_seconds_and_report_the_median_of_the_runs():
    rows = bench_sync(n_loopback=20, min_seconds=1.0, repeat=3, rows=("loopback-batch",))
    [row] = rows
    assert row["repeat"] == 3 and len(row["runs"]) == 3
    for run_ in row["runs"]:
        assert run_["seconds"] >= 1.0
        assert run_["chunks"] >= 2  # 20 dossiers take far less than a second: the outbox was filled again
        assert run_["sent"] == run_["n"] > 20
        assert run_["dossiers_per_s"] == pytest.approx(run_["sent"] / run_["seconds"], rel=0.01)
    rates = sorted(run_["dossiers_per_s"] for run_ in row["runs"])
    assert (row["min_per_s"], row["dossiers_per_s"], row["max_per_s"]) == (rates[0], rates[1], rates[2])
    assert row["sent"] == row["n"] == sum(run_["n"] for run_ in row["runs"])
    with pytest.raises(ValueError, match="valid: loopback-batch"):
        bench_sync(rows=("nope",))


def test_min_seconds_repeat_and_ports_reach_the_sync_bench(monkeypatch, capsys):
    import tests.bench.sync_bench as sync_bench

    given = {}

    def fake_bench_sync(**kwargs):
        given.update(kwargs)
        return [{"name": "sync loopback, batches", "repeat": 2, "seconds_per_run": 0.5, "dossiers_per_run": 10,
                 "dossiers_per_s": 20.0, "min_per_s": 19.0, "max_per_s": 21.0, "bytes_per_dossier": 450}]
    monkeypatch.setattr(sync_bench, "bench_sync", fake_bench_sync)
    assert run.main(["--only", "sync", "--min-seconds", "0.5", "--repeat", "2", "--port-base", "41000"]) == 0
    assert given == {"min_seconds": 0.5, "repeat": 2, "central_port": 41001, "proxy_port": 41002}
    out = capsys.readouterr().out
    assert "at least 0.5 s" in out and "2 runs a row" in out
    assert "| sync loopback, batches | 2 | 0.5 | 10 | 20.0 | 19.0–21.0 | 450 |" in out


@pytest.mark.parametrize("argv, message", [
    (["--port-base", "65534"], "--port-base must be between"),
    (["--repeat", "0"], "--repeat must be at least 1"),
    (["--min-seconds", "-1"], "--min-seconds cannot be negative"),
])
def test_bad_values_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        run.main(argv)
    assert message in capsys.readouterr().err
