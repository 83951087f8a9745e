"""Documentation that cannot fall behind: a command, option or setting missing from docs/ fails here."""
from pathlib import Path

import click

from kiosk.cli import main
from kiosk.core.config import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent


def _commands(group: click.Group, prefix="kiosk"):
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        yield path, command
        if isinstance(command, click.Group):
            yield from _commands(command, path)


def test_every_command_and_option_is_in_docs_cli():
    text = (ROOT / "docs" / "cli.md").read_text("utf-8")
    for path, command in _commands(main):
        assert f"`{path}" in text, f"{path} is not documented in docs/cli.md"
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--") and opt != "--help":
                    assert opt in text, f"{path} {opt} is not documented in docs/cli.md"


def test_every_setting_is_in_docs_station():
    text = (ROOT / "docs" / "station.md").read_text("utf-8")
    for section, values in DEFAULTS.items():
        for key in values:
            assert f"`{section}.{key}`" in text, f"{section}.{key} is not documented in docs/station.md"
    assert "`paths.procedures`" in text


def test_readme_first_screen_gives_the_two_commands():
    first_screen = "\n".join((ROOT / "README.md").read_text("utf-8").splitlines()[:25])
    assert "make run" in first_screen and "make test" in first_screen
