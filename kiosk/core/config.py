"""Station configuration: one TOML file says what kind of station this is and where things live."""
import os
import re
import tomllib
from pathlib import Path

STATION_KINDS = ("kiosk", "counter", "mobile")

DEFAULTS = {
    "station": {
        "id": "K01",
        "kind": "kiosk",
        "name": "Trạm dịch vụ công (thử nghiệm)",
        "agency": "Trung tâm Phục vụ hành chính công",
        "timezone": "Asia/Ho_Chi_Minh",
        # Where the QR on a receipt points. The station serves /track itself; a province may point it at
        # its own public tracking page instead.
        "public_url": "http://127.0.0.1:8080",
    },
    "server": {"host": "127.0.0.1", "port": 8080},
    "paths": {"data": "var"},
    "central": {"url": "http://127.0.0.1:8090"},
    "session": {"idle_seconds": 120, "warning_seconds": 30, "draft_idle_minutes": 20, "staff_idle_minutes": 15},
    # card_reader: "auto" (any PC/SC reader), "none" (no card step), or the start of one reader's name.
    "devices": {"card_reader": "auto", "printer": "auto", "csca_dir": "", "card_wait_seconds": 30},
    "sync": {"export_dir": "/media/usb"},
}


class ConfigError(ValueError):
    """A station file that cannot be used, with a message that names the file and the key."""


def _merge(base: dict, override: dict) -> dict:
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_station(path: str | os.PathLike | None = None, overrides: dict | None = None) -> dict:
    """Read the station file (if any) over the defaults, then check it.

    With no path, ``$KIOSK_STATION`` is used, then ``./station.toml`` if it exists, else the defaults
    alone: a fresh checkout runs without any file.
    """
    source = "<defaults>"
    data: dict = {}
    if path is None:
        path = os.environ.get("KIOSK_STATION") or ("station.toml" if Path("station.toml").exists() else None)
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"{source}: station file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    config = _merge(DEFAULTS, data)
    if overrides:
        config = _merge(config, overrides)
    config["source"] = source
    check_station(config)
    return config


def check_station(config: dict) -> None:
    source = config.get("source", "<config>")
    station = config["station"]
    if not re.fullmatch(r"[A-Z0-9]{2,6}", str(station.get("id", ""))):
        raise ConfigError(f"{source}: station.id must be 2-6 capital letters or digits (it starts every tracking code)")
    if station.get("kind") not in STATION_KINDS:
        raise ConfigError(f"{source}: station.kind must be one of {', '.join(STATION_KINDS)}")
    session = config["session"]
    if not isinstance(session.get("warning_seconds"), int) or session["warning_seconds"] < 20:
        raise ConfigError(f"{source}: session.warning_seconds must be at least 20 (time to answer the warning)")
    if not isinstance(session.get("idle_seconds"), int) or session["idle_seconds"] < 10:
        raise ConfigError(f"{source}: session.idle_seconds must be at least 10")
    devices = config["devices"]
    wait = devices.get("card_wait_seconds")
    if not isinstance(wait, int) or isinstance(wait, bool) or not 1 <= wait <= 300:
        raise ConfigError(f"{source}: devices.card_wait_seconds must be a whole number of seconds, 1 to 300")
    csca_dir = devices.get("csca_dir")
    if not isinstance(csca_dir, str) or (csca_dir and not Path(csca_dir).is_dir()):
        raise ConfigError(f"{source}: devices.csca_dir must name a folder of CSCA certificates (or be empty)")
    port = config["server"].get("port")
    if not isinstance(port, int) or not 0 <= port < 65536:
        raise ConfigError(f"{source}: server.port must be a port number")


def data_dir(config: dict) -> Path:
    path = Path(config["paths"]["data"])
    path.mkdir(parents=True, exist_ok=True)
    return path
