"""Stations and centrals for tests and benchmarks: a station data folder with dossiers in its outbox, the
central in a thread or as its own (killable) process. A TEST AND BENCHMARK HELPER, not used in service.
"""
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from kiosk.core.catalog import Procedure

PROCEDURE = Procedure(
    slug="cap-ban-sao-trich-luc-khai-sinh", code="1.004884", version="2026.1", category="ho-tich",
    name={"vi": "Cấp bản sao trích lục khai sinh", "en": "Copy of a birth record extract"},
    summary={"vi": "Xin bản sao trích lục khai sinh.", "en": "Ask for a copy of a birth record extract."},
    agency={"vi": "Ủy ban nhân dân cấp xã", "en": "Commune People's Committee"},
    fee={"amount_vnd": 8000, "reductions": [], "exemptions": []}, processing_days=1, documents=[],
    pages=[{"id": "nguoi-yeu-cau", "fields": [
        {"name": "full_name", "type": "text", "label": {"vi": "Họ và tên", "en": "Full name"}},
        {"name": "id_number", "type": "id_number", "label": {"vi": "Số CCCD", "en": "ID number"}},
    ]}],
)

FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng"]
GIVEN = ["Thị Mai", "Văn Hùng", "Minh Anh", "Thu Hà", "Quốc Bảo", "Ngọc Lan", "Đức Thắng", "Bảo Ngọc"]


def sample_answers(rng: random.Random) -> dict:
    """Made-up answers of a realistic size (about 600 bytes of Vietnamese text)."""
    return {
        "full_name": f"{rng.choice(FAMILY)} {rng.choice(GIVEN)}",
        "id_number": "0" + "".join(rng.choice("0123456789") for _ in range(11)),
        "birth_date": f"19{rng.randint(50, 99)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "phone": "09" + "".join(rng.choice("0123456789") for _ in range(8)),
        "residence": f"Số {rng.randint(1, 300)}, đường Trần Hưng Đạo, phường Bến Thành, Quận 1, TP Hồ Chí Minh",
        "subject_name": f"{rng.choice(FAMILY)} {rng.choice(GIVEN)}",
        "relationship": rng.choice(["cha", "mẹ", "bản thân", "con"]),
        "registration_place": "Ủy ban nhân dân phường Bến Thành, Quận 1, Thành phố Hồ Chí Minh",
        "copies": rng.randint(1, 5),
        "purpose": "Bổ sung hồ sơ nhập học cho con, nộp tại trường tiểu học gần nơi cư trú",
    }


def make_station(folder: Path, central_url: str, station_id: str = "K01", sync: dict | None = None) -> dict:
    """A station data folder with its station.toml, migrated database and station key; returns its config."""
    from kiosk.core.config import load_station
    from kiosk.core.db import migrate
    from sync.worker import station_paths

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f'[station]\nid = "{station_id}"\n', f'[paths]\ndata = "{folder / "var"}"\n',
             f'[central]\nurl = "{central_url}"\n']
    if sync:
        lines.append("[sync]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in sync.items()))
    (folder / "station.toml").write_text("".join(lines))
    config = load_station(folder / "station.toml")
    paths = station_paths(config)
    migrate(paths["database"])
    return config


def enrol(central, config: dict) -> None:
    """Enrol the station at the central and give the station the central's keys (both sides of it)."""
    from sync.keys import load_or_create_signing_key, public_b64
    from sync.worker import station_paths

    paths = station_paths(config)
    central.store.enrol(config["station"]["id"], public_b64(load_or_create_signing_key(paths["station_key"])))
    paths["central_keys"].write_text(json.dumps(central.public_keys()))


def submit_many(config: dict, n: int, seed: int = 0, procedure: Procedure = PROCEDURE) -> list[str]:
    from kiosk.core.db import connect
    from kiosk.core.dossiers import submit
    from kiosk.core.sealing import load_or_create_key

    from sync.worker import station_paths

    paths = station_paths(config)
    key = load_or_create_key(paths["payload_key"])
    rng = random.Random(seed)
    conn = connect(paths["database"])
    try:
        return [submit(conn, key=key, station=config["station"], channel="kiosk", procedure=procedure,
                       answers=sample_answers(rng)).submission_id for _ in range(n)]
    finally:
        conn.close()


class CentralThread:
    """The central's app under waitress in a thread of this process, on a free port (or on ``port``)."""

    def __init__(self, data_dir: Path, port: int = 0, **config):
        import waitress

        from sync.central import create_central_app

        self.app = create_central_app({"DATA_DIR": str(data_dir), **config})
        self.central = self.app.extensions["dvc_central"]
        self.server = waitress.create_server(self.app, host="127.0.0.1", port=port, threads=4,
                                             asyncore_loop_timeout=0.2)
        self.port = self.server.effective_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self._run, name="central", daemon=True)
        self._stopping = False

    def _run(self) -> None:
        try:
            self.server.run()
        except OSError:
            if not self._stopping:
                raise

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        from waitress import wasyncore

        self._stopping = True
        # Close every socket from inside the server's own loop (the trigger runs the thunk there), so the
        # loop ends with an empty map instead of polling a closed descriptor.
        self.server.trigger.pull_trigger(lambda: wasyncore.close_all(self.server._map))
        self.thread.join(timeout=5)
        self.server.task_dispatcher.shutdown()


class CentralProcess:
    """The central as its own process (``python -m sync.central_cli serve``), to kill and restart."""

    def __init__(self, data_dir: Path, *options: str):
        self.data_dir = Path(data_dir)
        self.options = options  # more `kiosk central serve` options, e.g. --restore-window-days 0
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self, timeout: float = 20) -> "CentralProcess":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sync.central_cli", "serve", "--data", str(self.data_dir), "--port", "0",
             *self.options],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline and "listening on" not in line:
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError("the central did not start")
        if "listening on" not in line:
            self.kill()
            raise RuntimeError("the central did not announce its port")
        self.port = int(line.rsplit(":", 1)[1])
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None


def worker_command(config: dict, *args: str) -> list[str]:
    return [sys.executable, "-m", "sync.sync_cli", "--station", str(Path(config["source"])), "run", *args]
