"""``kiosk card ...``: run the card simulator, read a card, make synthetic test cards, parse a QR."""
import json
import sys
import time
from pathlib import Path

import click

from devices.card_errors import CardError


def _fail(err: CardError) -> None:
    """The error as JSON on stderr: its type, its code (the kiosk's words for it are card_error_<code> in
    kiosk/messages_devices.toml) and a technical English line; none holds personal data."""
    error = {"type": type(err).__name__, "code": err.code, "message": str(err)}
    if getattr(err, "reason", ""):
        error["reason"] = err.reason
    if err.params:
        error["params"] = err.params
    click.echo(json.dumps({"error": error}, ensure_ascii=False), err=True)
    sys.exit(1)


@click.group("card")
def card():
    """Chip ID card (CCCD): read it over PC/SC, or simulate one for tests and demos."""


@card.command("simulate")
@click.argument("profile", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Where vpcd (in pcscd) listens.")
@click.option("--port", default=35963, show_default=True, type=int)
@click.option("--seconds", type=float, default=None, help="Pull the card out after this long (default: Ctrl-C).")
def simulate(profile: Path, host: str, port: int, seconds: float | None):
    """Put the synthetic card PROFILE (JSON) on the virtual reader until Ctrl-C."""
    from devices.card_simulator import CardSimulator
    try:
        sim = CardSimulator(profile).connect(host, port)
    except (ConnectionError, KeyError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Card simulator connected to vpcd at {host}:{port}. Ctrl-C takes the card out.")
    try:
        if seconds is not None:
            time.sleep(seconds)
        else:
            sim.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sim.pull_out()
        click.echo(f"Card out after {sim.apdu_count} APDUs.")


@card.command("read")
@click.option("--number", required=True, help="The 12-digit CCCD number (PACE uses its last 6 digits).")
@click.option("--birth", default=None, help="Birth date, yyyy-mm-dd or dd/mm/yyyy (for BAC).")
@click.option("--expiry", default=None, help="Expiry date, yyyy-mm-dd or dd/mm/yyyy, or 'none' for a card "
              "marked 'Không thời hạn' (for BAC).")
@click.option("--reader", "reader_name", default=None, help="Reader name (or its start); default: any.")
@click.option("--csca-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of trusted CSCA certificates for Passive Authentication.")
@click.option("--timeout", "timeout_s", default=10.0, show_default=True, help="Seconds to wait for a card.")
@click.option("--read-timeout", "read_timeout_s", default=15.0, show_default=True,
              help="Seconds the whole read may take once the card is there.")
@click.option("--apdu-timeout", "apdu_timeout_s", default=3.0, show_default=True,
              help="Seconds one command to the chip may take.")
@click.option("--access", type=click.Choice(["auto", "pace", "bac"]), default="auto", show_default=True,
              help="PACE (with the last 6 digits) when the chip offers it, else BAC with the dates; or force one.")
def read(number, birth, expiry, reader_name, csca_dir, timeout_s, read_timeout_s, apdu_timeout_s, access):
    """Read the card on the reader and print its DG13 fields and verification status as JSON.

    At most two wrong-key tries are made (PACE, then BAC), so that the chip does not block itself."""
    from devices.card_reader import CardKey, read_cccd
    try:
        key = CardKey.from_strings(number, birth, expiry)
        result = read_cccd(key, reader_name=reader_name, csca_dir=csca_dir, timeout_s=timeout_s, access=access,
                           read_timeout_s=read_timeout_s, apdu_timeout_s=apdu_timeout_s)
    except CardError as err:
        _fail(err)
    click.echo(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))


@card.command("make-profile")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--layout", type=click.Choice(["wrapped", "flat"]), default="wrapped", show_default=True,
              help="DG13 as issued cards lay it out (wrapped), or the bare list of fields (flat).")
@click.option("--no-expiry", is_flag=True, help="A card marked 'Không thời hạn' (no expiry date).")
def make_profile(folder: Path, layout: str, no_expiry: bool):
    """Write a synthetic, test-signed card profile and its test CSCA certificate into FOLDER."""
    from devices.card_profile import write_test_card
    for path in write_test_card(folder, dg13_layout=layout, no_expiry=no_expiry):
        click.echo(str(path))


@card.command("qr")
@click.argument("text")
def qr(text: str):
    """Parse the text of the QR code printed on a CCCD."""
    from devices.card_reader import parse_front_qr
    try:
        click.echo(json.dumps(parse_front_qr(text), ensure_ascii=False, indent=2))
    except CardError as err:
        _fail(err)


@card.command("readers")
def readers():
    """List the PC/SC readers pcscd knows."""
    from devices.card_reader import list_readers
    try:
        for name in list_readers():
            click.echo(name)
    except CardError as err:
        _fail(err)
