"""Station configuration: one TOML file says what kind of station this is and where things live.

The file is laid over ``DEFAULTS`` (the defaults live there and only there) and the result is checked
against one JSON Schema, ``station_schema.json`` beside this module: every section and key the code reads,
its type and range, and no other key. What a schema cannot say (a folder that must exist, a time zone
that must be known to zoneinfo) is checked by hand in ``check_station``.
"""
import difflib
import json
import math
import os
import tomllib
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import jsonschema

from .keyfile import private_folder

SCHEMA = json.loads((Path(__file__).with_name("station_schema.json")).read_text("utf-8"))
STATION_KINDS = tuple(SCHEMA["properties"]["station"]["properties"]["kind"]["enum"])

DEFAULTS = {
    "station": {
        "id": "K01",
        "kind": "kiosk",
        "name": "Trạm dịch vụ công (thử nghiệm)",
        "agency": "Trung tâm Phục vụ hành chính công",
        # On the receipt: where results are collected in person (empty: "where you applied"), and the
        # hotline citizens may call (empty: no hotline line).
        "result_address": "",
        "hotline": "",
        "timezone": "Asia/Ho_Chi_Minh",
        # Where the QR on a receipt points. The station serves /track itself; a province may point it at
        # its own public tracking page instead.
        "public_url": "http://127.0.0.1:8080",
        # The staff pages (/agent): on counter and mobile stations, off on a citizen kiosk unless "on".
        "staff_pages": "auto",
        # The province (or city) the station serves, as the central's fleet page filters by it (docs/fleet.md);
        # empty: not said.
        "province": "",
    },
    # secure_cookies: behind TLS (a reverse proxy with https), cookies are sent over https only.
    # track_limit: tracking lookups per client address, so codes cannot be tried by the thousand.
    "server": {"host": "127.0.0.1", "port": 8080, "secure_cookies": False, "track_limit": "20/minute;300/day"},
    "paths": {"data": "var"},
    "central": {"url": "http://127.0.0.1:8090"},
    "session": {"idle_seconds": 120, "warning_seconds": 30, "draft_idle_minutes": 20, "staff_idle_minutes": 15,
                "staff_max_hours": 12},
    # card_reader: "auto" (any PC/SC reader), "none" (no card step), or the start of one reader's name.
    # scanner: "auto" (the first scanner SANE finds), "none", or the start of one SANE device name;
    # scanner_config_dir: a SANE configuration folder instead of the system's (the simulated scanner's).
    "devices": {"card_reader": "auto", "printer": "auto", "csca_dir": "", "card_wait_seconds": 30,
                "scanner": "auto", "scanner_config_dir": ""},
    # The papers a dossier carries (kiosk/core/documents.py, docs/documents.md). sources: how pages are
    # captured here, "auto" by the station's kind (kiosk: the scanner; counter: the scanner and files from
    # a USB stick; mobile: the camera and files), or a list of "scanner", "camera", "file". A source that
    # is not there (no scanner found) is not offered; with none, no paper is captured and none blocks submit.
    # mode: "bilevel" (black and white, about 37 KB per A4 text page: five pages cross a 64 kbit/s link in
    # under a minute) or "gray" (tones kept, up to 150 KB per page: over two minutes for five).
    "documents": {"sources": "auto", "mode": "bilevel", "dpi": 300, "scan_timeout_seconds": 90},
    "sync": {"export_dir": "/media/usb", "blob_chunk_bytes": 65536},
    # Working days and office hours (kiosk/core/calendar.py): public holidays come from the `holidays`
    # package; the station adds the days the government announces each year (dates "yyyy-mm-dd").
    "calendar": {"office_closes": "17:00", "same_day_until": "15:00", "days_off": [], "working_days": [],
                 "culture_day": True},
    # The station's self-check (kiosk/health.py, docs/operations.md): below reserve_mb free in the data
    # folder no new application starts (measured: answering an application writes about 85 KB to the WAL,
    # its submit with the receipt record about 70 KB; 50 MB lets every draft in progress finish).
    "health": {"reserve_mb": 50, "device_check_seconds": 60},
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
        except OSError as exc:  # a folder, a file this user may not read
            raise ConfigError(f"{source}: station file cannot be read: {exc.strerror}") from None
    config = _merge(DEFAULTS, data)
    if overrides:
        config = _merge(config, overrides)
    config["source"] = source
    check_station(config)
    return config


def _is_integer(_checker, instance) -> bool:
    # TOML tells 20 from 20.0 and from true; jsonschema would take 20.0 (and Python takes true) for a whole number.
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)
_VALIDATOR = _Validator(SCHEMA)

# What each JSON type is called in a message: Vietnamese, English.
_TYPE_WORDS = {
    "integer": ("số nguyên", "a whole number"),
    "number": ("số", "a number"),
    "boolean": ("true hoặc false", "true or false"),
    "string": ("chuỗi trong ngoặc kép", "text in quotes"),
    "object": ("một mục [bảng]", "a [table]"),
}


def _shown(value) -> str:
    """A value as the station file would spell it, for a message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "[table]"
    if isinstance(value, list):
        return "[...]"
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _hint(word: str, allowed) -> tuple[str, str]:
    close = difflib.get_close_matches(word, list(allowed), n=1)
    return (f", có phải `{close[0]}`?", f"; did you mean `{close[0]}`?") if close else ("", "")


def _problem(error: jsonschema.ValidationError) -> tuple[str, str, str]:
    """(key path, Vietnamese, English) for one schema error, in plain words."""
    path = [str(part) for part in error.absolute_path]
    where = ".".join(path)
    value, rule = error.instance, error.schema
    kind = error.validator
    if kind == "additionalProperties":
        allowed = rule.get("properties", {})
        unknown = sorted(key for key in value if key not in allowed)[0]
        vi_hint, en_hint = _hint(unknown, allowed)
        what = ("không có mục này", "no such section") if not path else ("không có khóa này", "no such key")
        return ".".join(path + [unknown]), what[0] + vi_hint, what[1] + en_hint
    key = f"{where} = {_shown(value)}" if where else "(file)"
    if kind == "type":
        names = [rule["type"]] if isinstance(rule["type"], str) else rule["type"]
        words = [_TYPE_WORDS.get(name, (name, name)) for name in names]
        quoted = isinstance(value, str) and bool({"integer", "number", "boolean"} & set(names))  # "20", "no"
        tail = (", không đặt trong ngoặc kép", ", without quotes") if quoted else ("", "")
        return (key, "phải là " + " hoặc ".join(w[0] for w in words) + tail[0],
                "must be " + " or ".join(w[1] for w in words) + tail[1])
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        low = rule.get("minimum", rule.get("exclusiveMinimum"))
        high = rule.get("maximum", rule.get("exclusiveMaximum"))
        if low is not None and high is not None:
            if "exclusiveMinimum" in rule:
                return key, f"phải lớn hơn {low} và không quá {high}", f"must be more than {low} and at most {high}"
            return key, f"phải từ {low} đến {high}", f"must be from {low} to {high}"
        if low is not None:
            if "exclusiveMinimum" in rule:
                return key, f"phải lớn hơn {low}", f"must be more than {low}"
            return key, f"phải ít nhất là {low}", f"must be at least {low}"
        return key, f"phải nhiều nhất là {high}", f"must be at most {high}"
    if kind == "enum":
        options = ", ".join(_shown(option) for option in rule["enum"])
        return key, f"phải là một trong: {options}", f"must be one of: {options}"
    if kind == "pattern":
        return key, "sai dạng", "must be " + rule.get("description", f"of the form {rule['pattern']}")
    if kind == "minLength":
        return key, "không được để trống", "must not be empty"
    if kind == "maxLength":
        return key, f"dài quá {rule['maxLength']} ký tự", f"must be at most {rule['maxLength']} characters"
    if kind == "dependentRequired":
        missing = next(need for given, needs in rule["dependentRequired"].items() if given in value
                       for need in needs if need not in value)
        return where, f"thiếu {where}.{missing}", f"needs {where}.{missing} too"
    return key, "không hợp lệ", error.message


def _first_error(config: dict) -> jsonschema.ValidationError | None:
    errors = list(_VALIDATOR.iter_errors(config))
    # An unknown key first (a typo is the likeliest mistake, and its hint the most useful), then by key.
    errors.sort(key=lambda e: (e.validator != "additionalProperties", [str(p) for p in e.absolute_path]))
    return errors[0] if errors else None


def _not_a_number(config: dict, path: tuple = ()) -> str | None:
    """The key of a float that is nan (TOML allows it; it passes every range), or None."""
    for key, value in config.items():
        if isinstance(value, dict):
            found = _not_a_number(value, path + (key,))
            if found:
                return found
        elif isinstance(value, float) and math.isnan(value):
            return ".".join(path + (key,))
    return None


def check_station(config: dict) -> None:
    """Check a station (the file laid over DEFAULTS): the schema, then what it cannot say. Raises
    ConfigError with one line: the file, the key, what is wrong in Vietnamese then English."""
    source = config.get("source", "<config>")
    data = {key: value for key, value in config.items() if key != "source"}
    error = _first_error(data)
    if error is not None:
        where, vi, en = _problem(error)
        raise ConfigError(f"{source}: {where}: {vi} / {en}")
    nan = _not_a_number(data)
    if nan:
        raise ConfigError(f"{source}: {nan} = nan: phải là một số / must be a number")
    zone = data["station"]["timezone"]
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        vi_hint, en_hint = _hint(zone, available_timezones())
        raise ConfigError(f"{source}: station.timezone = {_shown(zone)}: không phải tên múi giờ{vi_hint} / "
                          f"is not a time zone name (e.g. \"Asia/Ho_Chi_Minh\"){en_hint}") from None
    csca_dir = data["devices"]["csca_dir"]
    if csca_dir and not Path(csca_dir).is_dir():
        raise ConfigError(f"{source}: devices.csca_dir = {_shown(csca_dir)}: không phải thư mục / must name a folder "
                          "of CSCA certificates (or be empty)")


def data_dir(config: dict) -> Path:
    """The station's data folder (database, keys), made 0700 when missing (kiosk/core/keyfile.py)."""
    return private_folder(Path(config["paths"]["data"]))
