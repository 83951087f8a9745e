"""A station as its own process (`kiosk serve`) on a free port with its own data folder: what the
benchmarks measure and the browser, crash and counter tests drive."""
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.fake_printer import unused_port


class LiveStation:
    def __init__(self, data_dir: Path, port: int | None = None, kind: str = "kiosk", extra: str = "",
                 station_id: str = "T01", command: list[str] | None = None):
        self.data_dir = Path(data_dir)
        self.command = command or [sys.executable, "-m", "kiosk"]  # or an installed `kiosk` script
        self.port = port or unused_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.station_file = self.data_dir / "station.toml"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.station_file.write_text(
            f'[station]\nid = "{station_id}"\nkind = "{kind}"\npublic_url = "{self.url}"\n'
            f'[server]\nport = {self.port}\n[paths]\ndata = "{self.data_dir / "var"}"\n{extra}'
        )
        self.process = None

    @property
    def database(self) -> Path:
        return self.data_dir / "var" / "station.db"

    def start(self, timeout: float = 20.0) -> "LiveStation":
        # The server's own messages go to a file: a pipe nobody reads would stall it once full.
        log = self.data_dir / "serve.log"
        with open(log, "ab") as out:
            self.process = subprocess.Popen([*self.command, "serve", "--station", str(self.station_file)],
                                            stdout=subprocess.DEVNULL, stderr=out, cwd=self.data_dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kiosk serve exited: {log.read_text(errors='replace')[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("kiosk serve did not start in time")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
