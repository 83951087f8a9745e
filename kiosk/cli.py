"""The `kiosk` command: one entry point for every station task."""
import logging
import sys

import click

from . import health
from .core.catalog import CatalogError
from .core.config import ConfigError, load_station

station_option = click.option(
    "--station", "station_file", type=click.Path(dir_okay=False), default=None,
    help="Station file (TOML). Default: $KIOSK_STATION, else ./station.toml if present, else built-in defaults.",
)


@click.group(cls=health.GuardedGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """dvc-kiosk: citizen kiosk, post-office counter and mobile-team station for online public services."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pikepdf").setLevel(logging.WARNING)  # img2pdf's PDF engine announces itself at INFO


def _load(station_file, overrides=None):
    try:
        return load_station(station_file, overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@station_option
@click.option("--host", default=None, help="Address to listen on (default: server.host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: server.port, 8080).")
@click.option("--threads", type=int, default=8, show_default=True, help="Worker threads.")
@click.option("--simulate-missing", is_flag=True,
              help="With no card reader, put a simulated card in pcscd's virtual reader (demos, pilots).")
def serve(station_file, host, port, threads, simulate_missing):
    """Serve the station's web app with waitress."""
    import atexit

    import waitress

    from .app import create_app
    from .core.config import data_dir

    overrides = {"server": {k: v for k, v in (("host", host), ("port", port)) if v is not None}}
    config = _load(station_file, overrides)
    if simulate_missing:
        from .simulated_devices import start_missing

        extra, notes, stop = start_missing(config, data_dir(config))
        atexit.register(stop)
        overrides.update(extra)
        for line in notes:
            click.echo(line)
    try:
        app = create_app(overrides, station_file)
    except (ConfigError, CatalogError) as exc:
        raise click.ClickException(str(exc)) from None
    server = config["server"]
    app.extensions["device_state"].start()  # device-state.json for the sync worker's heartbeat (docs/fleet.md)
    # A thread that comes back from a commit's fsync waits for the GIL up to the switch interval while
    # other threads render pages; a shorter interval keeps writes (and the lock they hold) short.
    sys.setswitchinterval(0.0005)
    click.echo(f"dvc-kiosk ({config['station']['kind']} {config['station']['id']}) on "
               f"http://{server['host']}:{server['port']}/")
    waitress.serve(app, host=server["host"], port=server["port"], threads=threads, ident="dvc-kiosk")


def _check_counts(database, recount: bool) -> None:
    """The counts triggers keep (waiting, refusals, papers to send, the purge's marks) against a recount of
    the rows: equal, or rebuilt with --recount, or exit 1 naming each difference."""
    from .core import db
    from .core.migrations import retally, tally_drift

    if not database.exists():
        return
    conn = db.connect(database)
    try:
        drift = tally_drift(conn)
        if drift and recount:
            with db.write_transaction(conn):
                retally(conn)
            click.echo("counts: rebuilt from the rows (" + "; ".join(drift) + ")")
        elif drift:
            raise click.ClickException("the kept counts differ from a recount: " + "; ".join(drift)
                                       + " (kiosk check --full --recount rebuilds them)")
        else:
            click.echo("counts: kept = recounted")
    finally:
        conn.close()


@main.command()
@station_option
@click.option("--full", is_flag=True, help="Read every page of the database (integrity_check) instead of the "
                                           "quick check, and recount the counts the staff pages and the sync "
                                           "worker keep; minutes on a large database.")
@click.option("--recount", is_flag=True, help="With --full: when the kept counts differ from the recount, "
                                              "rebuild them from the rows.")
def check(station_file, full, recount):
    """Run every check `kiosk serve` runs at start (the station file, the procedure catalog, the printer
    settings, the payment account, the card settings, then the station's health: data folder writable, free
    space above the reserve, the database's quick_check, keys, clock); exit 1 with the first problem. Warns
    (exit 0) when dossiers waiting to be sent were made under another station id than the file's."""
    from pathlib import Path

    from .startup import check_station_id, start_checks

    config = _load(station_file)
    try:
        checked = start_checks(config)
    except (ConfigError, CatalogError) as exc:
        raise click.ClickException(str(exc)) from None
    result = health.check(config, Path(config["paths"]["data"]) / "station.db", full=full)
    if result.paused:
        for reason in result.reasons:
            click.echo(f"  {reason.code}: {reason.detail}", err=True)
        raise click.ClickException(
            f"trạm tạm ngừng / station paused: {result.reasons[0].detail} (docs/operations.md)")
    click.echo(f"health: ok, {result.free_mb:.0f} MB free (reserve {result.reserve_mb} MB), WAL "
               f"{result.wal_bytes} bytes, database {'integrity_check' if full else 'quick_check'} ok")
    if full:
        _check_counts(Path(config["paths"]["data"]) / "station.db", recount)
    mismatch = check_station_id(config, Path(config["paths"]["data"]) / "station.db")
    if mismatch is not None:  # a warning, as at start: the dossiers are safe here, staff decide
        click.echo(f"warning: {mismatch.log_line()}", err=True)
    click.echo(f"station {config['station']['id']} ({config['station']['kind']}) from {config['source']}: ok")
    click.echo(f"  printer: {checked.printer.describe()}; payment account: "
               f"{checked.payment.bank_bin + ' ' + checked.payment.account if checked.payment else 'none'}")
    if checked.release_problem:  # as at start: the stored release is not served, paths.procedures is
        click.echo(f"warning: catalog: {checked.release_problem}; serving paths.procedures", err=True)
    click.echo(f"  catalog release {checked.release['release']} of {checked.release['created_at']} (from the central)"
               if checked.release else "  catalog: paths.procedures (no catalog release installed)")
    for proc in checked.catalog.values():
        click.echo(f"  {proc.code}  {proc.slug}  v{proc.version}  {len(proc.pages)} pages")


@main.group()
def audio():
    """Spoken prompts (espeak-ng voices)."""


@audio.command("build")
@station_option
def audio_build(station_file):
    """Make the recording of every prompt that is missing, under <data>/audio/."""
    from . import audio as prompts
    from .core.catalog import load_catalog
    from .core.config import data_dir

    config = _load(station_file)
    if not prompts.available():
        raise click.ClickException("espeak-ng is not installed (make run installs it)")
    made, kept = prompts.build_all(data_dir(config) / "audio", load_catalog(config["paths"].get("procedures")))
    click.echo(f"{made} prompts made, {kept} already there")


def _station_db(station_file):
    from .core import db
    from .core.config import data_dir

    config = _load(station_file)
    path = data_dir(config) / "station.db"
    db.migrate(path)
    return db.connect(path)


@main.group()
def staff():
    """Staff accounts of counter and mobile stations."""


@staff.command("add")
@station_option
@click.argument("username")
@click.option("--name", "display_name", required=True, help="The name shown on screens and reports.")
@click.option("--role", type=click.Choice(["agent", "supervisor"]), default="agent", show_default=True)
@click.option("--pin-stdin", is_flag=True, help="Read the PIN from standard input instead of asking twice.")
def staff_add(station_file, username, display_name, role, pin_stdin):
    """Add a staff account; asks for its PIN (6+ digits) or password (10+ characters)."""
    from agent import staff as accounts

    secret = sys.stdin.readline().rstrip("\n") if pin_stdin else click.prompt(
        "PIN", hide_input=True, confirmation_prompt=True)
    conn = _station_db(station_file)
    try:
        accounts.add(conn, username, display_name, role, secret)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        conn.close()
    click.echo(f"{username} ({role}) added")


def _staff_state(station_file, username, **change):
    from agent import staff as accounts

    conn = _station_db(station_file)
    try:
        accounts.set_state(conn, username, **change)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        conn.close()


def _state_command(name: str, change: dict, done: str, help_text: str) -> None:
    @staff.command(name, help=help_text)
    @station_option
    @click.argument("username")
    def command(station_file, username):
        _staff_state(station_file, username, **change)
        click.echo(f"{username} {done}")


_state_command("unlock", {"unlock": True}, "unlocked",
               "Unlock an account locked after wrong PINs (it also unlocks by itself after 15 minutes).")
_state_command("deactivate", {"active": False}, "deactivated",
               "Stop an account from logging in (a member of staff who left); its records stay.")
_state_command("activate", {"active": True}, "activated", "Let a deactivated account log in again.")


@staff.command("list")
@station_option
def staff_list(station_file):
    """List staff accounts: user name, role, name, state (active, inactive, locked until HH:MM station
    time) and how many sessions each has open."""
    from zoneinfo import ZoneInfo

    from agent import staff as accounts

    config = _load(station_file)
    zone, limits = ZoneInfo(config["station"]["timezone"]), config["session"]
    conn = _station_db(station_file)
    try:
        for row in accounts.accounts(conn, limits["staff_idle_minutes"] * 60, limits["staff_max_hours"] * 3600):
            state = "inactive" if not row["active"] else "active"
            if row["locked_until"]:
                state += row["locked_until"].astimezone(zone).strftime(", locked until %H:%M")
            click.echo(f"{row['username']}\t{row['role']}\t{row['display_name']}\t{state}\t"
                       f"{row['sessions']} open session{'' if row['sessions'] == 1 else 's'}")
    finally:
        conn.close()


@main.group("audit")
def audit_group():
    """The station's audit log."""


@audit_group.command("verify")
@station_option
def audit_verify(station_file):
    """Check the hash chain of every audit event; exit 1 naming each edited or missing event."""
    from .core import audit, db
    from .core.config import data_dir

    config = _load(station_file)
    path = data_dir(config) / "station.db"
    if not path.exists():
        raise click.ClickException(f"{path}: no station database")
    conn = db.connect(path)
    try:
        problems = audit.verify(conn)
        count = audit.count(conn)
    finally:
        conn.close()
    if problems:
        for problem in problems:
            click.echo(problem, err=True)
        raise click.ClickException(f"the audit log has been changed: {len(problems)} problem(s) in {count} events")
    click.echo(f"{count} audit events, chain intact")


@main.command("backup")
@station_option
@click.option("--without-keys", is_flag=True,
              help="Leave payload.key and station.ed25519 out (restore then needs them in the data folder).")
@click.argument("dest", type=click.Path())
def backup_command(station_file, without_keys, dest):
    """Write one consistent backup of the station's data to DEST (a file, or a folder to put it in), while
    the station runs."""
    from pathlib import Path

    from . import backup

    config = _load(station_file)
    try:
        made = backup.make_backup(config, Path(dest), with_keys=not without_keys)
    except backup.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Đã sao lưu trạm {made['station_id']} vào {made['path']}: {made['dossiers']} hồ sơ, "
               f"{made['pending']} đang chờ gửi, thế hệ {made['incarnation']}.\n"
               f"Backed up station {made['station_id']} to {made['path']}: {made['dossiers']} dossiers, "
               f"{made['pending']} waiting to be sent, incarnation {made['incarnation']}.")
    if without_keys:
        click.echo("Tệp không chứa khóa: khi khôi phục, payload.key và station.ed25519 phải có sẵn trong thư mục "
                   "dữ liệu.\nNo keys in it: a restore needs payload.key and station.ed25519 in the data folder.")
    else:
        click.echo("Tệp chứa khóa của trạm (payload.key, station.ed25519): giữ kín như chính khóa (quyền 0600).\n"
                   "It holds the station's keys: keep it as secret as the keys themselves (mode 0600).")


@main.command("restore")
@station_option
@click.argument("backup_file", type=click.Path(dir_okay=False))
@click.option("--yes", is_flag=True, help="Do not ask before replacing the station's data.")
@click.option("--other-station", is_flag=True, help="Restore a backup made under another station id.")
def restore_command(station_file, backup_file, yes, other_station):
    """Put a backup back, with the web app and sync worker stopped; the station then starts a new
    incarnation, so no tracking code is issued twice."""
    from pathlib import Path

    from . import backup

    def confirm(manifest):
        if not yes:
            click.confirm(f"Thay dữ liệu của trạm bằng bản sao lưu lúc {manifest['created_at']} "
                          f"({manifest['dossiers']} hồ sơ)? / Replace the station's data with the backup of "
                          f"{manifest['created_at']} ({manifest['dossiers']} dossiers)?", abort=True)

    config = _load(station_file)
    try:
        done = backup.restore(config, Path(backup_file), other_station, confirm)
    except backup.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    made_at = done["manifest"]["created_at"]
    click.echo(f"Đã khôi phục trạm {config['station']['id']} từ bản sao lưu lúc {made_at}: thế hệ mới "
               f"{done['incarnation']}, {done['pending']} hồ sơ chờ gửi; tiến trình đồng bộ sẽ đối chiếu với "
               "hệ thống trung tâm ở lần chạy tới.\n"
               f"Restored station {config['station']['id']} from the backup of {made_at}: new incarnation "
               f"{done['incarnation']}, {done['pending']} dossiers waiting to be sent; the sync worker will "
               "reconcile with the central on its next run.")
    for path in done["kept"]:
        click.echo(f"  giữ lại / kept: {path}")
    click.echo("Khởi động lại / start again: systemctl start kiosk kiosk-sync")


def _add_subsystem_commands():
    from devices.card_cli import card
    from .printer_cli import printer
    from sync.central_cli import central
    from sync.sync_cli import sync

    for group in (card, printer, sync, central):
        main.add_command(group)


_add_subsystem_commands()
