"""Real stations for the fleet tests (docs/fleet.md, docs/catalog-releases.md): each one a `kiosk serve`
process and a `kiosk sync run` process on one data folder, enrolled at a central (tests.support.harness's
CentralThread). A TEST HELPER, not used in service."""
import socket
import subprocess
import time
from pathlib import Path

from kiosk.core.config import load_station
from kiosk.core.db import migrate
from sync.worker import station_paths
from tests.support.harness import enrol, submit_many, worker_command
from tests.support.live_station import LiveStation

STATION_FILE = "fleet-station.toml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def until(check, timeout: float = 30.0, every: float = 0.1):
    """``check()``'s first true value, asked every ``every`` seconds; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s")


def station_folder(folder, central_url: str, station_id: str, province: str, kind: str = "kiosk",
                   devices: str = 'card_reader = "none"\nprinter = "none"\n', printer: str = "", port: int = 0,
                   device_check_seconds: float = 0.3) -> dict:
    """A station data folder (``fleet-station.toml``, migrated database) that syncs every 0.2 s idle and sends
    a heartbeat every cycle; returns its config."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    (folder / STATION_FILE).write_text(
        f'[station]\nid = "{station_id}"\nkind = "{kind}"\nprovince = "{province}"\npublic_url = "http://127.0.0.1:{port}"\n'
        f'[server]\nport = {port}\n[paths]\ndata = "{folder / "var"}"\n[central]\nurl = "{central_url}"\n'
        f'[devices]\n{devices}{printer}'
        '[sync]\nidle_interval = 0.2\nbase_delay = 0.05\nmax_delay = 0.5\nheartbeat_seconds = 0\n'
        f'[health]\ndevice_check_seconds = {device_check_seconds}\n', "utf-8")
    config = load_station(folder / STATION_FILE)
    migrate(station_paths(config)["database"])
    return config


class FleetStation:
    """One real station enrolled at ``central`` (a CentralThread): ``start()`` runs its web app (LiveStation,
    on its own port) and then its sync worker; ``stop()`` ends both. ``submitted`` dossiers are put in its
    outbox before it starts (submit_many, seeded with ``seed``)."""

    def __init__(self, folder, central, station_id: str, kind: str, province: str, *, devices: str | None = None,
                 printer: str = "", device_check_seconds: float = 0.3, submitted: int = 0, seed: int = 0):
        self.folder, self.station_id, self.kind = Path(folder), station_id, kind
        port = free_port()
        extra = {} if devices is None else {"devices": devices}
        self.config = station_folder(self.folder, central.url, station_id, province, kind, printer=printer, port=port,
                                     device_check_seconds=device_check_seconds, **extra)
        enrol(central.central, self.config)
        if submitted:
            submit_many(self.config, submitted, seed=seed)
        self.web = LiveStation(self.folder, port=port, kind=kind, station_id=station_id)
        self.web.station_file = self.folder / STATION_FILE  # ours (central, devices), not its own
        self.worker: subprocess.Popen | None = None
        self._log = None

    @property
    def port(self) -> int:
        return self.web.port

    @property
    def station_file(self) -> Path:
        return self.folder / STATION_FILE

    @property
    def data(self) -> Path:
        return station_paths(self.config)["database"].parent

    def start(self) -> "FleetStation":
        self.web.start()
        self._log = open(self.folder / "sync.log", "ab")
        self.worker = subprocess.Popen(worker_command(self.config), stdout=subprocess.DEVNULL, stderr=self._log)
        return self

    def stop(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.terminate()
            try:
                self.worker.wait(10)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()
        self.web.stop()
        if self._log is not None:
            self._log.close()
            self._log = None
