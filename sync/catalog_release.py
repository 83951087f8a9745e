"""Catalog releases: the procedure catalog as the central publishes it, and how a station takes it on
(docs/catalog-releases.md).

A release is one file, ``catalog-<n>.dvccatalog``: a signed envelope as the central's other answers are
(sync/protocol.py), ``{"document": {...}, "signature": base64(Ed25519(canonical_json(document)))}``, made
with the central's *catalog* key (``central-catalog.ed25519``; a station trusts its public half as
``catalog_key`` in the central keys file that ``kiosk sync trust`` installs). The document
(``DOCUMENT_SCHEMA``, unknown keys refused):

- ``type`` ``dvc-catalog-release/1``; ``release``, its number (1, 2, ...: a station never goes back);
  ``created_at`` (UTC);
- ``procedures``: the definition files by slug (the file name without ``.toml``), as TOML text, each
  checked exactly as a file of ``paths.procedures`` is (kiosk/core/catalog.py);
- ``calendar``: ``days_off`` and ``working_days`` added to the station file's own (kiosk/core/calendar.py);
- ``units_version``: the administrative-unit data the definitions were written against
  (kiosk.core.units.data_version()): a station with other data refuses the release.

A station takes a release (online: ``fetch``, or from a USB stick: ``StationCatalog.install``) only after
the signature, the number (higher than the live one) and the same checks ``kiosk check`` runs on a catalog
(``check_release``); then the file goes into ``<data>/catalog/releases/`` and ``<data>/catalog/current.json``
names it (both written durably, the pointer last). A refused release is logged with its reason (numbers,
codes and the definition file's field, never personal data), kept in ``refused.json`` for staff, and the
live one stays. The web app (``LiveCatalog``) starts new applications on the live release at once; a draft
keeps the release it started on (kiosk/core/drafts.py records it) until it is submitted or ends, and its
dossier records that release.
"""
import base64
import dataclasses
import hashlib
import json
import logging
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import jsonschema
from cryptography.exceptions import InvalidSignature

from kiosk.core import audit, units
from kiosk.core.calendar import WorkCalendar
from kiosk.core.catalog import CatalogError, Procedure, load_catalog
from kiosk.core.db import write_transaction
from kiosk.core.dossiers import canonical_json
from kiosk.core.keyfile import private_folder, write_durably

from . import protocol

log = logging.getLogger("dvc.catalog")

FORMAT = "dvc-catalog-release/1"
SUFFIX = ".dvccatalog"
MAX_RELEASE_BYTES = 4 << 20       # a release file (the six shipped definitions make about 60 KB)
MAX_PROCEDURE_BYTES = 256 * 1024  # one definition's TOML
KEEP_RELEASES = 5                 # release files kept at a station: the live one and the ones before it
CHUNK_BYTES = 64 * 1024           # a download is asked for in ranges this big, and resumes where it stopped

_DATE = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
DOCUMENT_SCHEMA = {
    "type": "object",
    "required": ["type", "release", "created_at", "units_version", "calendar", "procedures"],
    "additionalProperties": False,
    "properties": {
        "type": {"const": FORMAT},
        "release": {"type": "integer", "minimum": 1, "maximum": 2**53},
        "created_at": {"type": "string", "minLength": 10, "maxLength": 40},
        "units_version": {"type": "string", "minLength": 1, "maxLength": 200},
        "calendar": {
            "type": "object",
            "required": ["days_off", "working_days"],
            "additionalProperties": False,
            "properties": {"days_off": {"type": "array", "items": _DATE, "maxItems": 1000, "uniqueItems": True},
                           "working_days": {"type": "array", "items": _DATE, "maxItems": 1000, "uniqueItems": True}},
        },
        "procedures": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 1000,
            "propertyNames": {"pattern": r"^[a-z][a-z0-9_-]{0,99}$"},
            "additionalProperties": {"type": "string", "maxLength": MAX_PROCEDURE_BYTES},
        },
    },
}
# The file: the envelope around the document (the signature is checked before the document's schema).
ENVELOPE_SCHEMA = {
    "type": "object",
    "required": ["document", "signature"],
    "additionalProperties": False,
    "properties": {"document": {"type": "object"}, "signature": {"type": "string", "maxLength": 200}},
}
_VALIDATORS = {id(s): jsonschema.Draft202012Validator(s) for s in (DOCUMENT_SCHEMA, ENVELOPE_SCHEMA)}
RELEASE_NAME = re.compile(r"^catalog-(\d{1,16})\.dvccatalog$")


class ReleaseRefused(Exception):
    """A release a station does not take: ``code`` (too_large, not_json, not_release, bad_signature,
    no_catalog_key, older, same_number, bad_procedures, bad_calendar, units_mismatch) and the reason in
    words, without personal data; ``release`` when the file said its number."""

    def __init__(self, code: str, reason: str, release: int | None = None):
        super().__init__(f"{code}: {reason}")
        self.code, self.reason, self.release = code, reason, release


def release_file_name(release: int) -> str:
    return f"catalog-{release}{SUFFIX}"


def _schema_problem(schema: dict, data) -> str | None:
    error = jsonschema.exceptions.best_match(_VALIDATORS[id(schema)].iter_errors(data))
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
    return f"{where}: {error.message}"[:300]


# -- making a release (the central) ------------------------------------------------------------------------

def build_release(folder: str | Path, release: int, key, *, units_version: str | None = None,
                  days_off=(), working_days=(), now: datetime | None = None) -> bytes:
    """The bytes of release ``release`` of the definitions in ``folder``, signed with ``key`` (the central's
    catalog key). The folder is checked first with the loader stations use: CatalogError names the file and
    the field of a definition that would be refused; ValueError a day that is not a date."""
    folder = Path(folder)
    load_catalog(folder)  # CatalogError: nothing is published
    for day in (*days_off, *working_days):
        date.fromisoformat(day)  # ValueError: not a date
    document = {
        "type": FORMAT, "release": int(release),
        "created_at": (now or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat(timespec="seconds"),
        "units_version": units_version or units.data_version(),
        "calendar": {"days_off": sorted(set(days_off)), "working_days": sorted(set(working_days))},
        "procedures": {path.stem: path.read_text("utf-8") for path in sorted(folder.glob("*.toml"))},
    }
    problem = _schema_problem(DOCUMENT_SCHEMA, document)
    if problem:
        raise CatalogError(f"{folder}: {problem}")
    data = json.dumps(protocol.sign_document(key, document), ensure_ascii=False, sort_keys=True, indent=1).encode()
    if len(data) > MAX_RELEASE_BYTES:
        raise CatalogError(f"{folder}: the release would be {len(data)} bytes, more than {MAX_RELEASE_BYTES}")
    return data


# -- reading and checking a release (a station; `kiosk check` for the live one) ----------------------------

def open_release(data: bytes, public_key) -> dict:
    """The document of a release file whose signature is the central catalog key's, or ReleaseRefused."""
    if public_key is None:
        raise ReleaseRefused("no_catalog_key", "no central catalog key is trusted here: install the central's "
                                               "keys file again (kiosk central keys, then kiosk sync trust FILE)")
    try:
        envelope = protocol.parse_json(data, MAX_RELEASE_BYTES)
    except protocol.TooLarge:
        raise ReleaseRefused("too_large", f"a release file of more than {MAX_RELEASE_BYTES} bytes") from None
    except protocol.BadJSON as exc:
        raise ReleaseRefused("not_json", f"not a catalog release ({exc})") from None
    problem = _schema_problem(ENVELOPE_SCHEMA, envelope)
    if problem:
        raise ReleaseRefused("not_release", f"not a signed catalog release: {problem}")
    document = envelope["document"]
    number = document.get("release") if type(document.get("release")) is int else None
    try:
        public_key.verify(base64.b64decode(envelope["signature"], validate=True), canonical_json(document))
    except (InvalidSignature, ValueError, TypeError, UnicodeEncodeError):
        raise ReleaseRefused("bad_signature", "the signature is not the central catalog key's (altered, or "
                                              "signed by another key)", number) from None
    problem = _schema_problem(DOCUMENT_SCHEMA, document)
    if problem:
        raise ReleaseRefused("not_release", f"not a catalog release: {problem}", number)
    return document


@dataclass(frozen=True)
class CheckedRelease:
    """A release that passed every check: its catalog (each Procedure carries the release number), the
    days it adds to the station's calendar, and what staff are shown of it."""

    release: int
    created_at: str
    units_version: str
    catalog: dict
    days_off: frozenset
    working_days: frozenset
    sha256: str

    def info(self) -> dict:
        return {"release": self.release, "created_at": self.created_at, "units_version": self.units_version,
                "sha256": self.sha256, "procedures": len(self.catalog)}


def check_release(document: dict, sha256: str = "") -> CheckedRelease:
    """The checks ``kiosk check`` runs on a catalog, on a release's contents: every definition through
    kiosk/core/catalog.py's loader (unpacked into a private temporary folder, so the loader and its messages
    are exactly those of paths.procedures), the calendar's days, and the units data version."""
    number = document["release"]
    try:
        created = datetime.fromisoformat(document["created_at"])
    except ValueError:
        raise ReleaseRefused("not_release", "created_at is not a time", number) from None
    with tempfile.TemporaryDirectory(prefix="dvc-catalog-") as folder:
        for slug, text in document["procedures"].items():
            (Path(folder) / f"{slug}.toml").write_text(text, "utf-8")
        try:
            catalog = load_catalog(folder)
        except CatalogError as exc:
            raise ReleaseRefused("bad_procedures", str(exc).replace(folder + "/", "")[:500], number) from None
    days = {}
    for kind in ("days_off", "working_days"):
        try:
            days[kind] = frozenset(date.fromisoformat(day) for day in document["calendar"][kind])
        except ValueError:
            raise ReleaseRefused("bad_calendar", f"calendar.{kind}: a day that is not a date", number) from None
    have = units.data_version()
    if document["units_version"] != have:
        raise ReleaseRefused("units_mismatch", f"the release expects administrative-unit data "
                                               f"'{document['units_version']}', this station has '{have}': "
                                               "update the station's software first", number)
    catalog = {slug: dataclasses.replace(proc, release=number) for slug, proc in catalog.items()}
    return CheckedRelease(number, created.astimezone(timezone.utc).isoformat(timespec="seconds"),
                          document["units_version"], catalog, days["days_off"], days["working_days"], sha256)


def read_checked(data: bytes, public_key=None) -> CheckedRelease:
    """A release file's bytes, opened (signature checked when ``public_key`` is given: a file the station
    stored itself after checking it is read without) and checked."""
    if public_key is None:
        try:
            document = protocol.parse_json(data, MAX_RELEASE_BYTES)["document"]
        except (ValueError, KeyError, TypeError):
            raise ReleaseRefused("not_json", "a stored release file that cannot be read") from None
        problem = _schema_problem(DOCUMENT_SCHEMA, document)
        if problem:
            raise ReleaseRefused("not_release", problem)
    else:
        document = open_release(data, public_key)
    return check_release(document, hashlib.sha256(data).hexdigest())


# -- a station's releases in its data folder -------------------------------------------------------------

def _utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class StationCatalog:
    """``<data>/catalog/``: ``releases/catalog-<n>.dvccatalog`` (the accepted files as received),
    ``current.json`` (which one new applications use), ``refused.json`` (the last refusal, for staff) and
    a download in progress (``download-<n>.partial``)."""

    def __init__(self, data_folder: str | Path):
        self.folder = Path(data_folder) / "catalog"
        self.releases = self.folder / "releases"

    def _read_json(self, name: str) -> dict | None:
        try:
            value = json.loads((self.folder / name).read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def current(self) -> dict | None:
        """What current.json says: release, created_at, installed_at, via, sha256; None before any release."""
        info = self._read_json("current.json")
        return info if info and type(info.get("release")) is int else None

    def live_number(self) -> int:
        info = self.current()
        return info["release"] if info else 0

    def refused(self) -> dict | None:
        """The last refusal (at, via, code, reason, release) when it came after the live release was
        installed, else None."""
        refusal = self._read_json("refused.json")
        current = self.current()
        if refusal is None or (current and str(refusal.get("at", "")) < str(current.get("installed_at", ""))):
            return None
        return refusal

    def release_data(self, number: int) -> bytes | None:
        try:
            return (self.releases / release_file_name(number)).read_bytes()
        except OSError:
            return None

    def known_tags(self) -> list[str]:
        """Entity tags the central need not send again: the live release's and the last refused one's."""
        numbers = {self.live_number()}
        refusal = self._read_json("refused.json")
        if refusal and type(refusal.get("release")) is int:
            numbers.add(refusal["release"])
        return [f'"{n}"' for n in sorted(numbers) if n]

    def refuse(self, refused: ReleaseRefused, via: str, conn=None, actor: str = "sync") -> None:
        """Log and keep the refusal (no personal data: codes, numbers, a definition's file and field)."""
        log.warning("catalog release %s refused (%s): %s: %s; the live release %s stays",
                    refused.release if refused.release is not None else "?", via, refused.code, refused.reason,
                    self.live_number() or "(built-in)")
        private_folder(self.folder)
        write_durably(self.folder / "refused.json", json.dumps(
            {"at": _utcnow(), "via": via, "code": refused.code, "reason": refused.reason,
             "release": refused.release}, ensure_ascii=False).encode())
        if conn is not None:
            with write_transaction(conn):
                audit.append(conn, actor, "catalog.refused", None, {"release": refused.release, "code": refused.code})

    def install(self, data: bytes, public_key, via: str, conn=None, actor: str = "sync") -> CheckedRelease | None:
        """Check ``data`` and make it the live release; None when it is the live one already. Raises
        ReleaseRefused after recording the refusal (``refuse``)."""
        try:
            if len(data) > MAX_RELEASE_BYTES:
                raise ReleaseRefused("too_large", f"a release file of more than {MAX_RELEASE_BYTES} bytes")
            document = open_release(data, public_key)
            live = self.current()
            number = document["release"]
            sha256 = hashlib.sha256(data).hexdigest()
            if live and number == live["release"]:
                if live.get("sha256") == sha256:
                    return None
                raise ReleaseRefused("same_number", f"release {number} is live here with other content", number)
            if live and number < live["release"]:
                raise ReleaseRefused("older", f"release {number} is older than the live release "
                                              f"{live['release']}: a station never goes back", number)
            checked = check_release(document, sha256)
        except ReleaseRefused as refused:
            self.refuse(refused, via, conn, actor)
            raise
        private_folder(self.releases)
        write_durably(self.releases / release_file_name(number), data)
        write_durably(self.folder / "current.json", json.dumps(
            {**checked.info(), "installed_at": _utcnow(), "via": via}, ensure_ascii=False).encode())
        log.info("catalog release %d (%s, %d procedures) installed (%s)", number, checked.created_at,
                 len(checked.catalog), via)
        if conn is not None:
            with write_transaction(conn):
                audit.append(conn, actor, "catalog.installed", None, {"release": number, "via": via})
        self._prune(number)
        return checked

    def _prune(self, live: int) -> None:
        """Keep the live release and the KEEP_RELEASES - 1 before it (drafts started on them finish on them)."""
        numbers = sorted((int(m.group(1)) for p in self.releases.glob(f"*{SUFFIX}")
                          if (m := RELEASE_NAME.match(p.name))), reverse=True)
        for number in [n for n in numbers if n <= live][KEEP_RELEASES:]:
            (self.releases / release_file_name(number)).unlink(missing_ok=True)
        for partial in self.folder.glob("download-*.partial"):
            partial.unlink(missing_ok=True)


# -- fetching from the central (the sync worker) ------------------------------------------------------------

def _content_range(value: str | None) -> tuple[int, int, int] | None:
    match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", (value or "").strip())
    return tuple(int(g) for g in match.groups()) if match else None


def fetch(client, store: StationCatalog, public_key, conn=None, chunk: int = CHUNK_BYTES) -> CheckedRelease | None:
    """Ask the central for its latest release (``GET /api/v1/catalog``) and install it when it is new.

    Conditional: ``If-None-Match`` names the live release and the last refused one, so the central answers
    304 while it has nothing else. Resumable: the file comes in ranges of ``chunk`` bytes, each kept in
    ``download-<n>.partial`` as it arrives; a cut link resumes there next cycle (``If-Range``: a newer
    release published meanwhile starts over). Returns the release installed, or None (nothing new, none
    published, a central without releases). Raises LinkError on the link; ReleaseRefused for a bad one."""
    from .client import LinkError

    partial = next(iter(sorted(store.folder.glob("download-*.partial"))), None)
    tag = f'"{partial.name[len("download-"):-len(".partial")]}"' if partial else None
    have = partial.read_bytes() if partial else b""
    for _ in range(MAX_RELEASE_BYTES // max(chunk, 1) + 3):
        headers = {"Range": f"bytes={len(have)}-{len(have) + chunk - 1}", "Accept": "application/json"}
        if tag:
            headers["If-Range"] = tag
        elif store.known_tags():
            headers["If-None-Match"] = ", ".join(store.known_tags())
        resp = client.request("GET", "/api/v1/catalog", headers=headers)
        if resp.status == 304 or resp.status in (404, 405):
            if partial:
                partial.unlink(missing_ok=True)
            return None  # nothing new, or nothing published (an older central has no catalog at all)
        etag = resp.headers.get("etag", "")
        if not re.fullmatch(r'"\d{1,16}"', etag):
            raise LinkError(f"catalog: HTTP {resp.status} without a release tag")
        if resp.status == 200:  # the whole file: the central ignored the range, or the release changed
            have, tag = resp.body, etag
            break
        told = _content_range(resp.headers.get("content-range"))
        if resp.status != 206 or told is None or told[0] != len(have) or told[2] > MAX_RELEASE_BYTES:
            if partial:
                partial.unlink(missing_ok=True)
            raise LinkError(f"catalog: HTTP {resp.status} that does not continue the download")
        if tag and etag != tag:  # a newer release than the partial one: start over
            have, tag = b"", None
            continue
        tag = etag
        have += resp.body
        partial = store.folder / f"download-{tag.strip(chr(34))}.partial"
        private_folder(store.folder)
        for other in store.folder.glob("download-*.partial"):
            if other != partial:
                other.unlink(missing_ok=True)
        with open(partial, "ab" if partial.exists() and len(have) > len(resp.body) else "wb") as out:
            out.write(resp.body)
        if len(have) >= told[2]:
            break
    else:
        raise LinkError("catalog: the download did not finish")
    try:
        return store.install(have, public_key, "online", conn)
    finally:
        for leftover in store.folder.glob("download-*.partial"):
            leftover.unlink(missing_ok=True)


class CatalogUpdates:
    """The sync worker's part (sync/worker.py): each cycle, after the dossiers, ``fetch`` a newer release.
    Its troubles are its own: a cut link, a central without releases or a refused release is logged (and a
    refusal kept for staff), never counted against the link the dossiers use."""

    def __init__(self, data_folder: str | Path, public_key, chunk: int = CHUNK_BYTES):
        self.store, self.public_key, self.chunk = StationCatalog(data_folder), public_key, chunk
        self._said_no_key = False

    def update(self, worker) -> int:
        """1 when a release was installed this cycle, else 0."""
        from .client import LinkError

        if self.public_key is None:
            if not self._said_no_key:
                log.warning("catalog releases: the central keys file has no catalog_key; get it again "
                            "(kiosk central keys) and install it (kiosk sync trust FILE)")
                self._said_no_key = True
            return 0
        try:
            return 1 if fetch(worker.client, self.store, self.public_key, worker.conn, self.chunk) else 0
        except ReleaseRefused:
            return 0  # logged and kept by StationCatalog.refuse; the live release stays
        except (LinkError, protocol.NotGenuine) as exc:
            log.info("catalog releases: not fetched this cycle (%s)", exc)
            return 0


# -- the web app's view of the releases -------------------------------------------------------------------

class LiveCatalog:
    """The catalogs a running web app uses: the live release (or the built-in catalog from paths.procedures
    before any release), and any earlier release a draft still names, loaded from its kept file on demand.
    ``refresh()`` (every request, at most once a ``check_every`` seconds) switches to a release the sync
    worker or a USB import installed meanwhile; the switch is one assignment, so a request sees the old or
    the new catalog whole. A stored release that no longer passes the checks (software changed under it) is
    not used: the built-in catalog is, and the refusal is shown to staff."""

    def __init__(self, station: dict, data_folder: str | Path, check_every: float = 2.0):
        self.store = StationCatalog(data_folder)
        self.builtin = load_catalog(station["paths"].get("procedures"))
        self.base_calendar = WorkCalendar.from_station(station)
        self.check_every = check_every
        self._lock = threading.Lock()
        self._older: dict[int, dict] = {}
        self._seen = None
        self._checked_at = float("-inf")
        self.info: dict | None = None
        self.catalog = self.builtin
        self.calendar = self.base_calendar
        self.problem: str | None = None  # a stored release that could not be used, in words
        self._load()

    def _stamp(self):
        try:
            stat = (self.store.folder / "current.json").stat()
            return stat.st_mtime_ns, stat.st_size, stat.st_ino
        except OSError:
            return None

    def _load(self) -> bool:
        self._seen = self._stamp()
        current = self.store.current()
        if current is None or (self.info and current["release"] == self.info["release"]):
            return False
        data = self.store.release_data(current["release"])
        try:
            if data is None:
                raise ReleaseRefused("missing", f"the file of release {current['release']} is not in "
                                                f"{self.store.releases}", current["release"])
            checked = read_checked(data)
        except ReleaseRefused as exc:
            self.problem = f"release {current['release']}: {exc.code}: {exc.reason}"
            log.error("catalog: %s; using %s", self.problem,
                      f"release {self.info['release']}" if self.info else "the built-in catalog")
            return False
        if self.info is not None:
            self._older[self.info["release"]] = self.catalog
        self.catalog, self.info, self.problem = checked.catalog, {**checked.info(), **current}, None
        self.calendar = dataclasses.replace(
            self.base_calendar, days_off=self.base_calendar.days_off | checked.days_off,
            working_days=self.base_calendar.working_days | checked.working_days)
        return True

    def refresh(self, now: float | None = None, force: bool = False) -> bool:
        """Look for a newly installed release (cheap: one stat, at most once a ``check_every`` seconds unless
        ``force``); True when this switched to it (``catalog``, ``calendar`` and ``info`` are the new ones)."""
        now = time.monotonic() if now is None else now
        if now - self._checked_at < self.check_every and not force:
            return False
        with self._lock:
            self._checked_at = now
            if self._stamp() == self._seen:
                return False
            return self._load()

    def catalog_of(self, release: int | None) -> dict | None:
        """The catalog of ``release`` (None: the built-in one), or None when its file is no longer kept."""
        if release is None:
            return self.builtin
        if self.info and release == self.info["release"]:
            return self.catalog
        with self._lock:
            if release not in self._older:
                data = self.store.release_data(release)
                try:
                    self._older[release] = read_checked(data).catalog if data else None
                except ReleaseRefused:
                    self._older[release] = None
            return self._older[release]

    def procedure(self, slug: str, release: int | None) -> Procedure | None:
        """The definition ``slug`` of ``release`` (a draft's), or None."""
        catalog = self.catalog_of(release)
        return catalog.get(slug) if catalog else None
