"""``kiosk printer ...``: check the receipt printer and print a test page.

Both commands read the station file given by ``--station`` (or ``$KIOSK_STATION``, else ./station.toml,
else the defaults, as ``kiosk.core.config.load_station`` does) and exit with status 1 when the printer is not
ready, so they can be used from scripts and by a technician installing a station.
"""
from collections.abc import Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

import click

from devices.printer import PrinterSettingsError, Status, print_image, printer_settings, printer_status
from kiosk.core.config import ConfigError, load_station
from kiosk.device_words import printer_status as status_words
from kiosk.i18n import say
from kiosk.receipt_document import bilingual, render_test_page


def _station(ctx: click.Context, path: str | None) -> dict:
    # A parent command that already loaded the station may hand it down as ctx.obj["config"].
    if path is None and isinstance(ctx.obj, Mapping) and isinstance(ctx.obj.get("config"), Mapping):
        return dict(ctx.obj["config"])
    try:
        return load_station(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _say(status: Status) -> None:
    click.echo(f"{status_words(status, 'vi')}\n{status_words(status, 'en')}")


station_option = click.option(
    "--station",
    "station_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Station file (default: $KIOSK_STATION, else ./station.toml, else built-in defaults).",
)


@click.group("printer")
def printer() -> None:
    """Receipt printer: status and test page."""


@printer.command("status")
@station_option
@click.pass_context
def status_command(ctx: click.Context, station_path: str | None) -> None:
    """Ask the printer whether it can print (paper, cover, connection)."""
    config = _station(ctx, station_path)
    status = printer_status(config)
    click.echo(f"status: {status.code}")
    _say(status)
    if not status.can_print:
        ctx.exit(1)


@printer.command("test")
@station_option
@click.option("--preview", type=click.Path(dir_okay=False), default=None, help="Also write the test page to this PNG file.")
@click.pass_context
def test_command(ctx: click.Context, station_path: str | None, preview: str | None) -> None:
    """Print a test page: Vietnamese text, the paper's edges and a QR code."""
    config = _station(ctx, station_path)
    try:
        settings = printer_settings(config)
    except PrinterSettingsError as exc:
        raise click.ClickException(str(exc)) from None
    station = config.get("station", {})
    now = datetime.now(ZoneInfo(station.get("timezone", "Asia/Ho_Chi_Minh")))
    details = [
        (bilingual("test_page_connection"), settings.describe()),
        (bilingual("test_page_profile"), settings.profile),
        (bilingual("test_page_paper"), f"{settings.paper_mm} mm, {settings.width_px} dots"),
        (bilingual("test_page_time"), f"{now:%H:%M %d/%m/%Y}"),
    ]
    image = render_test_page(settings.width_px, station.get("name", ""), details)
    if preview:
        image.save(preview, format="PNG")
        click.echo(f"preview: {preview}")
    click.echo(f"printer: {settings.describe()}, {settings.width_px} dots")
    outcome = print_image(config, image, label="test page")
    click.echo(f"status: {outcome.status.code}")
    if outcome.ok:
        click.echo(f"{say('printer_test_printed', 'vi')}\n{say('printer_test_printed', 'en')}")
    _say(outcome.status)
    if not outcome.ok:
        ctx.exit(1)
