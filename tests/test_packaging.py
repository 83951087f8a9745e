"""What is shipped: the wheel built from this tree, installed (not editable) into a clean environment, runs
`kiosk check` and `kiosk serve` and serves every page; it holds every module of the shipped packages and
the templates, and no test helper; every library the shipped code imports is declared."""
import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from kiosk.core.catalog import load_catalog
from tests.support.http_citizen import HttpCitizen
from tests.support.live_station import LiveStation

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("kiosk", "agent", "devices", "sync")
PIN = "246810"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of this working tree, built from a copy (a build leaves build/ and egg-info behind)."""
    source = tmp_path_factory.mktemp("source")
    for name in (*PACKAGES, "templates"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    # The build backend (setuptools, a test dependency) is taken from this environment, not downloaded.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(out), str(source)], check=True, capture_output=True)
    (found,) = out.glob("dvc_kiosk-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A clean venv with the wheel installed; its dependencies are read from this environment's
    site-packages through a .pth line (which does not run this environment's editable-install hook)."""
    venv = tmp_path_factory.mktemp("clean") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-index", "--disable-pip-version-check", str(wheel)], check=True, capture_output=True)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv


def test_the_wheel_holds_every_module_and_template_and_no_test_helper(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                assert str(path.relative_to(ROOT)) in names, f"{path.relative_to(ROOT)} is not in the wheel"
    for path in (ROOT / "templates").rglob("*.html"):
        assert f"kiosk/templates/{path.relative_to(ROOT / 'templates')}" in names
    assert not [name for name in names if name.startswith("tests/")]


def test_the_installed_wheel_serves_every_page(installed, tmp_path):
    kiosk = [str(installed / "bin" / "kiosk")]
    where = subprocess.run([str(installed / "bin" / "python"), "-c", "import kiosk.app; print(kiosk.app.__file__)"],
                           check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    assert where.startswith(str(installed)), where  # the installed copy, not this checkout
    station = LiveStation(tmp_path / "counter", kind="counter", command=kiosk)
    assert subprocess.run([*kiosk, "check", "--station", str(station.station_file)], capture_output=True,
                          text=True, cwd=station.data_dir).returncode == 0
    subprocess.run([*kiosk, "staff", "add", "--station", str(station.station_file), "an", "--name", "Nhân viên",
                    "--role", "supervisor", "--pin-stdin"], input=PIN + "\n", text=True, check=True,
                   capture_output=True, cwd=station.data_dir)
    station.start()
    citizen = HttpCitizen("127.0.0.1", station.port)
    try:
        # The citizen's whole path through every procedure of the shipped catalog.
        codes = [citizen.apply(proc) for proc in load_catalog().values()]
        for path in ("/", "/track", f"/track/{codes[0]}", "/-/patterns", "/lang/en", "/static/vendor/htmx-2.0.11.min.js",
                     "/static/kiosk.css", "/static/kiosk.js"):
            status, _, _ = citizen.request("page", "GET", path)
            assert status in (200, 303), path
        status, _, page = citizen.request("page", "GET", "/no-such-page")
        assert status == 404 and "<html" in page
        # The staff's pages, logged in.
        _, _, page = citizen.request("page", "GET", "/agent/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        status, location, _ = citizen.request("login", "POST", "/agent/login",
                                              {"csrf_token": token, "username": "an", "secret": PIN})
        assert status == 303 and location.endswith("/agent/")
        for path in ("/agent/", "/agent/search?q=" + codes[0], f"/agent/d/{codes[0]}", f"/agent/d/{codes[0]}/receipt.png",
                     "/agent/report", "/agent/rejected"):
            status, _, _ = citizen.request("page", "GET", path)
            assert status == 200, path
    finally:
        citizen.close()
        station.stop()


def _name(spec: str) -> str:
    return re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0].lower().replace("_", "-")


def _declared() -> set[str]:
    """The distributions pyproject.toml declares, with those its extras bring (python-escpos[usb] brings
    pyusb): a library reached through a declared extra is declared. The central's extras (``postgres``,
    ``central``: psycopg, gunicorn) count: only a province's central imports them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    names = set()
    extras = project["optional-dependencies"]
    for spec in list(project["dependencies"]) + list(extras.get("postgres", [])) + list(extras.get("central", [])):
        names.add(_name(spec))
        extras = re.search(r"\[([^\]]+)\]", spec)
        for extra in extras.group(1).split(",") if extras else ():
            for requirement in importlib.metadata.requires(_name(spec)) or ():
                if re.search(rf"extra\s*==\s*['\"]{extra.strip()}['\"]", requirement):
                    names.add(_name(requirement))
    return names


def test_every_library_the_shipped_code_imports_is_declared():
    own = set(PACKAGES)
    imported = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                if isinstance(node, ast.Import):
                    imported |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    imported.add(node.module.split(".")[0])
    third_party = imported - own - set(sys.stdlib_module_names)
    providers = importlib.metadata.packages_distributions()
    undeclared = {}
    for module in sorted(third_party):
        dists = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        assert dists, f"{module} is imported but no installed distribution provides it"
        if not dists & _declared():
            undeclared[module] = sorted(dists)
    assert undeclared == {}
