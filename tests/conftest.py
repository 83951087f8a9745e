"""Fixtures: a fresh station (temporary data folder and database) per test, as in Flask's tutorial app,
plus a real `kiosk serve` process for browser, crash and benchmark tests."""
import os
import re
from pathlib import Path

import pytest
from hypothesis import settings

from kiosk.app import create_app
from tests.support.postgres import throwaway_postgres
from tests.support.live_station import LiveStation  # noqa: F401  (tests import it from here)
from tests.support.sane import sane_sees_nothing  # noqa: F401  (the fixture below uses it)
from kiosk.core.catalog import load_catalog

ROOT = Path(__file__).resolve().parent.parent

# On CI the property tests draw the same examples every run, so a run is red only for a change; on a
# developer's machine they keep exploring new ones (and a failure found there is kept as an example).
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session", autouse=True)
def no_system_scanners(sane_sees_nothing):
    """Every station app, and every `kiosk serve` the tests start, sees no scanner unless its test sets
    one up (tests/support/sane.py): the system's SANE backends probe the network for seconds."""
    return sane_sees_nothing


@pytest.fixture
def app(tmp_path):
    return create_app({"paths": {"data": str(tmp_path / "var")}})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture(scope="session")
def catalog():
    return load_catalog()


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page has no CSRF token"
    return match.group(1)




@pytest.fixture
def live_station(tmp_path):
    station = LiveStation(tmp_path / "live").start()
    yield station
    station.stop()


def postgres_admin(server: str | None):
    """An autocommit connection to the test PostgreSQL (``postgres_server``); skips when there is none and
    fails when it does not answer."""
    if server is None:
        pytest.skip("no PostgreSQL: set DVC_TEST_POSTGRES_URL or install Debian's postgresql (make test does)")
    import psycopg

    try:
        return psycopg.connect(server, autocommit=True, connect_timeout=2)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {server} does not answer: {exc}")


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL URL for the central's storage tests: $DVC_TEST_POSTGRES_URL if set, else a throwaway
    server started from Debian's postgresql package (installed by `make test`), else None."""
    with throwaway_postgres(fsync=False) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def central_database(request):
    """Each central storage test twice: None (SQLite in the data folder), then the URL of a fresh schema on
    the test PostgreSQL (``postgres_server``), dropped after the test."""
    if request.param == "sqlite":
        yield None
        return
    import uuid

    server = request.getfixturevalue("postgres_server")
    admin = postgres_admin(server)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in server else "?"
    try:
        yield f"{server}{separator}options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.fixture(scope="session")
def browser_type_launch_args():
    """Debian's Chromium, headless, with nothing that reaches outside this machine."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    return {
        "executable_path": CHROMIUM,
        "headless": True,
        "args": ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    }
