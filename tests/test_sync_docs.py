"""docs/sync.md names every sync and central command and every [sync] setting."""
from dataclasses import fields
from pathlib import Path

from sync.central_cli import central
from sync.sync_cli import sync
from sync.worker import SyncSettings

DOC = (Path(__file__).parent.parent / "docs" / "sync.md").read_text()


def test_every_command_is_documented():
    missing = [f"kiosk {group.name} {name}" for group in (sync, central) for name in group.commands
               if f"kiosk {group.name} {name}" not in DOC]
    assert missing == []


def test_every_setting_is_documented():
    assert [f.name for f in fields(SyncSettings) if f"| `{f.name}` |" not in DOC] == []
