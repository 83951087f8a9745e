"""The central's catalog releases (docs/catalog-releases.md): ``kiosk central catalog publish FOLDER`` makes
the next release of the definitions in FOLDER, and ``GET /api/v1/catalog`` serves the latest to stations.

Releases are files in the central's data folder, ``catalog-releases/catalog-<n>.dvccatalog``, never changed
once written (sync/catalog_release.py has the format). The number only goes up: the next is one more than
the highest here, or ``--release N`` after a restore that lost releases stations already have.

The answer is the file's bytes with ``ETag: "<n>"``: a station that has release n (or refused it) sends
``If-None-Match`` and gets 304; a station resuming a cut download sends ``Range`` and ``If-Range`` and gets
206 with the rest (werkzeug's conditional responses). The file is signed on its own, so the answer needs
no signature of its own.
"""
from datetime import datetime
from pathlib import Path

from flask import Response, current_app, request

from kiosk.core.keyfile import private_folder, write_durably

from .catalog_release import RELEASE_NAME, SUFFIX, build_release, release_file_name
from .keys import load_or_create_signing_key

CATALOG_KEY = "central-catalog.ed25519"
FOLDER = "catalog-releases"


def catalog_key(data_dir: str | Path):
    """The central's catalog signing key, made on first use."""
    return load_or_create_signing_key(Path(data_dir) / CATALOG_KEY)


def releases(data_dir: str | Path) -> list[int]:
    """The release numbers published here, in order."""
    folder = Path(data_dir) / FOLDER
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.glob(f"*{SUFFIX}") if (m := RELEASE_NAME.match(p.name)))


def latest(data_dir: str | Path) -> tuple[int, Path] | None:
    numbers = releases(data_dir)
    return (numbers[-1], Path(data_dir) / FOLDER / release_file_name(numbers[-1])) if numbers else None


def publish(data_dir: str | Path, folder: str | Path, *, release: int | None = None, units_version: str | None = None,
            days_off=(), working_days=(), now: datetime | None = None) -> tuple[int, Path]:
    """Check FOLDER's definitions, sign them as the next release and write it; (number, path). Raises
    CatalogError (a definition stations would refuse), ValueError (a number not above the latest, a day
    that is not a date)."""
    numbers = releases(data_dir)
    number = release if release is not None else (numbers[-1] + 1 if numbers else 1)
    if numbers and number <= numbers[-1]:
        raise ValueError(f"release {number} is not above the latest published here ({numbers[-1]}): stations "
                         "never go back")
    if number < 1:
        raise ValueError("release numbers start at 1")
    data = build_release(folder, number, catalog_key(data_dir), units_version=units_version, days_off=days_off,
                         working_days=working_days, now=now)
    target = private_folder(Path(data_dir) / FOLDER) / release_file_name(number)
    write_durably(target, data)
    return number, target


def serve_latest():
    """``GET /api/v1/catalog``: the latest release (authenticated as every API call), conditional and by range."""
    found = latest(current_app.extensions["dvc_central"].data_dir)
    if found is None:
        return Response('{"error": "no_release", "message": "no catalog release is published"}', 404,
                        mimetype="application/json")
    number, path = found
    data = path.read_bytes()
    response = Response(data, 200, mimetype="application/json")
    response.set_etag(str(number))
    return response.make_conditional(request, accept_ranges=True, complete_length=len(data))
