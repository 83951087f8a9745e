"""The layers point down (docs/architecture.md): read every import of the shipped packages, in-function
imports included, and check each against what its layer may use."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("kiosk", "agent", "devices", "sync")

# Modules that are neither core, devices, sync nor a view: what the pages share and the services they use.
SERVICES = {"kiosk.web", "kiosk.receipts", "kiosk.receipt_document", "kiosk.device_words", "kiosk.sync_words", "kiosk.audio", "kiosk.i18n",
            "kiosk.backup", "kiosk.simulated_devices", "kiosk.capture", "kiosk.health", "kiosk.device_state", "agent.staff",
            "agent.report"}
# Entry points: the app factory and the commands. Nothing below imports them.
TOP = {"kiosk", "kiosk.__main__", "kiosk.app", "kiosk.startup", "kiosk.cli", "kiosk.printer_cli", "sync.sync_cli",
       "sync.central_cli", "agent", "devices", "sync"}
# What each layer may import, of the project's own modules.
ALLOWED = {
    "devices": {"devices"},
    "core": {"core"},
    "sync": {"core", "sync"},
    "service": {"core", "devices", "sync", "service"},
    "view": {"core", "devices", "sync", "service"},  # never another view
    "top": {"core", "devices", "sync", "service", "view", "top"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The project modules ``path`` imports, anywhere in it (a function's body too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:  # `from kiosk.core import db` imports the module kiosk.core.db
                child = f"{base}.{alias.name}"
                found.add(child if _is_module(child) else base)
    return {m for m in found if m.split(".")[0] in PACKAGES + ("tests",)}


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def is_view(path: Path) -> bool:
    """A view module is one that makes a Flask blueprint."""
    return any(isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Blueprint"
               for node in ast.walk(ast.parse(path.read_text("utf-8"))))


def layer_of(name: str, views: set[str]) -> str | None:
    if name in TOP:
        return "top"
    if name.startswith("devices."):
        return "devices"
    if name == "kiosk.core" or name.startswith("kiosk.core."):
        return "core"
    if name in views:
        return "view"
    if name in SERVICES:
        return "service"
    if name.startswith("sync."):
        return "sync"
    return None


def violations(graph: dict[str, set[str]], views: set[str]) -> list[str]:
    found = []
    for module, targets in sorted(graph.items()):
        layer = layer_of(module, views)
        if layer is None:
            found.append(f"{module}: in no layer (add it to one in tests/test_layers.py and docs/architecture.md)")
            continue
        for target in sorted(targets):
            if target.split(".")[0] == "tests":
                found.append(f"{module} imports {target}: test helpers are not shipped")
                continue
            other = layer_of(target, views)
            if other not in ALLOWED[layer] or (layer == "view" and target != module and other == "view"):
                found.append(f"{module} ({layer}) imports {target} ({other})")
    return found


def shipped_modules() -> dict[Path, str]:
    return {path: module_name(path) for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def project_graph() -> tuple[dict[str, set[str]], set[str]]:
    modules = shipped_modules()
    # The central's reference server (sync/central.py) is a Flask app too, but of the sync layer.
    views = {name for path, name in modules.items() if name.split(".")[0] in ("kiosk", "agent") and is_view(path)}
    return {name: imports_of(path) - {name} for path, name in modules.items()}, views


def test_every_import_points_down():
    graph, views = project_graph()
    assert views == {"kiosk.citizen", "kiosk.card_views", "agent.views"}
    assert violations(graph, views) == []


def test_the_check_finds_an_import_that_points_up():
    # The same check over a made-up graph with each kind of mistake it must catch.
    graph = {"devices.printer": {"kiosk.core.config"}, "kiosk.core.dossiers": {"sync.protocol"},
             "sync.worker": {"kiosk.citizen"}, "agent.views": {"kiosk.citizen"}, "kiosk.web": {"kiosk.app"},
             "kiosk.new_thing": set(), "sync.client": {"tests.support.harness"}}
    found = violations(graph, {"kiosk.citizen", "agent.views"})
    assert len(found) == 7, found


def test_the_core_imports_no_web_framework():
    # The core is storage and domain: Flask belongs to the pages above it.
    for path in (ROOT / "kiosk" / "core").glob("*.py"):
        tree = ast.parse(path.read_text("utf-8"))
        names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        names |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and not node.level}
        assert not names & {"flask", "werkzeug", "jinja2", "smartcard", "escpos"}, path.name
