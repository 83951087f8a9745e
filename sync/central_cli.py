"""``kiosk central ...``: run the reference central, enrol and revoke stations, import USB bundles.

The group is named ``central``; the main ``kiosk`` command adds it with ``main.add_command(central)``.
"""
import json
import os
import sys
from pathlib import Path

import click

DATA_OPTION = click.option("--data", "data_dir", envvar="DVC_CENTRAL_DATA", default="var/central", show_default=True,
                           type=click.Path(file_okay=False), help="Keys, blobs and the default SQLite database.")
DB_OPTION = click.option("--db", "database", envvar="DVC_CENTRAL_DATABASE", default=None,
                         help="A SQLite file or a postgresql:// URL (default: central.sqlite3 in --data).")
AGENCY_OPTION = click.option("--agency-code", envvar="DVC_CENTRAL_AGENCY", default="000.00.00.H00",
                             show_default=True, help="Starts every official dossier code (mã hồ sơ).")


def _central(data_dir, database, agency_code="000.00.00.H00"):
    from .central import open_central

    return open_central(data_dir, database, agency_code)


@click.group("central")
def central():
    """The reference central system (one-stop): serve, enrol stations, import USB bundles."""


RESTORE_WINDOW_OPTION = click.option(
    "--restore-window-days", type=click.FloatRange(min=0), default=7.0, show_default=True,
    help="The oldest backup of this central that may be restored; stations keep payloads that long, and no "
         "document younger than that is purged.")
RETENTION_OPTION = click.option(
    "--retention-days", type=click.FloatRange(min=0), default=30.0, show_default=True,
    help="Drop a dossier's document this many days after it was handed over (its status left 'received').")


# The notification channels (docs/sync.md, "Notifications") come from the environment, so a password or a
# gateway token is never on a command line: DVC_CENTRAL_NOTIFY_SMTP_HOST and the others below.
NOTIFY_ENVIRONMENT = ("NOTIFY_SMTP_HOST", "NOTIFY_SMTP_PORT", "NOTIFY_SMTP_USER", "NOTIFY_SMTP_PASSWORD",
                      "NOTIFY_EMAIL_FROM", "NOTIFY_SMS_URL", "NOTIFY_SMS_TOKEN")
# The fleet alerts (docs/fleet.md): DVC_CENTRAL_ALERT_EMAIL_TO and the thresholds, sent over the SMTP path above.
ALERT_ENVIRONMENT = ("ALERT_EMAIL_TO", "ALERT_SILENT_HOURS", "ALERT_SILENT_HOURS_MOBILE", "ALERT_OUTBOX_HOURS",
                     "ALERT_CLOCK_MINUTES", "ALERT_DISK_MB", "ALERT_DEVICES_MINUTES", "ALERT_INTERVAL",
                     "HEALTH_HISTORY_DAYS")


def notify_settings(environ) -> dict:
    """The central's NOTIFY_* and ALERT_* config from ``DVC_CENTRAL_NOTIFY_*`` and ``DVC_CENTRAL_ALERT_*``
    environment variables (and DVC_CENTRAL_HEALTH_HISTORY_DAYS)."""
    settings = {key: environ[f"DVC_CENTRAL_{key}"] for key in NOTIFY_ENVIRONMENT + ALERT_ENVIRONMENT
                if environ.get(f"DVC_CENTRAL_{key}")}
    if environ.get("DVC_CENTRAL_NOTIFY_SMTP_STARTTLS", "").strip().lower() in ("1", "true", "yes"):
        settings["NOTIFY_SMTP_STARTTLS"] = True
    return settings


@central.command("serve")
@DATA_OPTION
@DB_OPTION
@AGENCY_OPTION
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=int, help="0 takes a free port.")
@RESTORE_WINDOW_OPTION
@RETENTION_OPTION
@click.option("--secure-cookies", is_flag=True, help="Behind TLS: the staff session cookie is never sent over http.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes (gunicorn, needs the `central` extra); 1: one waitress process. More than one "
                   "wants PostgreSQL (--db) and a reverse proxy in front: docs/deploy-central.md.")
@click.option("--threads", type=click.IntRange(min=1), default=8, show_default=True,
              help="Threads per worker process (with --workers; one waitress process has 8).")
@click.option("--behind-proxy", "proxy_hops", type=click.IntRange(min=0), default=0, show_default=True,
              help="How many reverse proxies in front set X-Forwarded-For/-Proto (nginx: 1), so client addresses "
                   "and the scheme are the real ones (the login limiter counts per client).")
def serve_command(data_dir, database, agency_code, host, port, restore_window_days, retention_days, secure_cookies,
                  workers, threads, proxy_hops):
    """Serve the central's API and staff page with waitress, or with --workers N as N gunicorn processes;
    purges documents past the retention at start and every hour (in one process). The staff page needs an
    account (`kiosk central staff add`). Citizens are told of status changes by email and SMS when
    DVC_CENTRAL_NOTIFY_SMTP_HOST or DVC_CENTRAL_NOTIFY_SMS_URL is set."""
    from .central import create_central_app, serve
    from .central_workers import behind_proxy, gunicorn_available, serve_workers

    if os.environ.get("DVC_CENTRAL_STAFF_PASSWORD"):
        click.echo("DVC_CENTRAL_STAFF_PASSWORD không còn dùng: tạo tài khoản bằng `kiosk central staff add`. / "
                   "DVC_CENTRAL_STAFF_PASSWORD is no longer used: add accounts with `kiosk central staff add`.",
                   err=True)
    if workers > 1 and not gunicorn_available():
        raise click.ClickException("--workers needs gunicorn: pip install 'dvc-kiosk[central]'")
    config = {"DATA_DIR": data_dir, "DATABASE": database, "AGENCY_CODE": agency_code,
              "RESTORE_WINDOW": int(restore_window_days * 86400), "RETENTION_DAYS": retention_days,
              "SESSION_COOKIE_SECURE": secure_cookies, "PROXY_HOPS": proxy_hops, **notify_settings(os.environ)}
    # With workers, this app only prepares the data folder and database before the fork (keys, migrations):
    # no sender thread here, and its connection is closed; each worker builds its own.
    app = create_central_app({**config, "NOTIFY_INTERVAL": 0} if workers > 1 else config)
    if not app.extensions["dvc_central"].store.staff_accounts():
        click.echo("Chưa có tài khoản cán bộ: trang /staff/ không mở được. / No staff account yet: the staff page "
                   "stays closed (`kiosk central staff add USERNAME`).", err=True)
    announce = lambda line: click.echo(line, err=False) or None  # noqa: E731
    if workers > 1:
        app.extensions["dvc_central"].store.close()
        serve_workers(config, workers, threads, host, port, announce=announce)
        return
    serve(behind_proxy(app, proxy_hops), host, port, announce=announce)


@central.command("purge")
@DATA_OPTION
@DB_OPTION
@RESTORE_WINDOW_OPTION
@RETENTION_OPTION
def purge_command(data_dir, database, restore_window_days, retention_days):
    """Drop the documents of dossiers handed over more than the retention ago (never of one received within
    the restore window); rows, hashes, codes and statuses stay. `serve` does the same every hour."""
    from .central import open_central

    c = open_central(data_dir, database, restore_window=int(restore_window_days * 86400),
                     retention_days=retention_days)
    try:
        dropped = c.purge()
    finally:
        c.store.close()
    blobs = c.last_purge["blobs"]
    click.echo(f"Đã xóa nội dung {dropped} hồ sơ đã chuyển xử lý và {blobs} tệp giấy tờ. / Dropped the documents "
               f"of {dropped} handed-over dossiers and {blobs} blobs no other held dossier names.")


@central.group("staff")
def staff_group():
    """Accounts of the central's staff page."""


@staff_group.command("add")
@DATA_OPTION
@DB_OPTION
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input instead of asking twice.")
def staff_add_command(data_dir, database, username, password_stdin):
    """Add a staff account; asks for its password (10+ characters)."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else click.prompt(
        "Password", hide_input=True, confirmation_prompt=True)
    c = _central(data_dir, database)
    try:
        c.add_staff(username, password)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        c.store.close()
    click.echo(f"{username} added")


@staff_group.command("list")
@DATA_OPTION
@DB_OPTION
def staff_list_command(data_dir, database):
    """List the staff accounts: active or not, locked until when, last login."""
    c = _central(data_dir, database)
    try:
        accounts = c.store.staff_accounts()
    finally:
        c.store.close()
    for a in accounts:
        state = "active" if a["active"] else "deactivated"
        if a["locked_until"]:
            state += f", locked until {a['locked_until']}"
        click.echo(f"{a['username']}\t{state}\tlast login {a['last_login_at'] or '-'}")
    if not accounts:
        click.echo("no staff accounts (kiosk central staff add USERNAME)")


def _staff_state_command(name: str, done: str, help_text: str, change) -> None:
    @staff_group.command(name, help=help_text)
    @DATA_OPTION
    @DB_OPTION
    @click.argument("username")
    def command(data_dir, database, username):
        c = _central(data_dir, database)
        try:
            if not change(c.store, username):
                raise click.ClickException(f"no staff account '{username}'")
        finally:
            c.store.close()
        click.echo(f"{username} {done}")


_staff_state_command("deactivate", "deactivated",
                     "Deactivate USERNAME: it can no longer log in, and its open sessions end at their next request.",
                     lambda store, username: store.staff_set_active(username, False))
_staff_state_command("activate", "activated", "Let a deactivated USERNAME log in again.",
                     lambda store, username: store.staff_set_active(username, True))
_staff_state_command("unlock", "unlocked", "Unlock USERNAME, locked after wrong passwords (it also unlocks by "
                     "itself after 15 minutes).", lambda store, username: store.staff_unlock(username))


@central.command("enrol")
@DATA_OPTION
@DB_OPTION
@click.argument("station_id")
@click.argument("public_key")
@click.option("--name", default="", help="A name staff recognise, e.g. the post office.")
@click.option("--keys-out", type=click.Path(dir_okay=False), default=None,
              help="Write the central's public keys here for the station (else print them).")
def enrol_command(data_dir, database, station_id, public_key, name, keys_out):
    """Enrol STATION_ID with its Ed25519 PUBLIC_KEY (from `kiosk sync key`); again to re-key."""
    from .keys import ed25519_public

    try:
        ed25519_public(public_key)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="PUBLIC_KEY") from None
    c = _central(data_dir, database)
    c.store.enrol(station_id, public_key, name)
    keys = json.dumps(c.public_keys(), indent=1)
    if keys_out:
        Path(keys_out).write_text(keys + "\n")
        click.echo(f"enrolled {station_id}; give {keys_out} to the station (`kiosk sync trust {keys_out}`)")
    else:
        click.echo(keys)


@central.command("revoke")
@DATA_OPTION
@DB_OPTION
@click.argument("station_id")
def revoke_command(data_dir, database, station_id):
    """Refuse STATION_ID's key from now on (a lost or stolen station)."""
    if not _central(data_dir, database).store.revoke(station_id):
        raise click.ClickException(f"{station_id}: not enrolled, or already revoked")
    click.echo(f"revoked {station_id}")


@central.command("keys")
@DATA_OPTION
@DB_OPTION
def keys_command(data_dir, database):
    """Print the central's public keys (what `kiosk sync trust` reads)."""
    click.echo(json.dumps(_central(data_dir, database).public_keys(), indent=1))


@central.command("import")
@DATA_OPTION
@DB_OPTION
@AGENCY_OPTION
@click.argument("bundle_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--acks-out", type=click.Path(dir_okay=False), default=None,
              help="Where to write the ack file for the station (default: beside the bundle, BUNDLE_FILE.acks.json).")
def import_command(data_dir, database, agency_code, bundle_file, acks_out):
    """Import a station's USB bundle; importing it again changes nothing and writes the same acks, to
    BUNDLE_FILE.acks.json (e.g. M01-20261202T070500-1a2b3c4d.dvcbundle.acks.json) unless --acks-out says
    where. A bundle that is not right (its form, any dossier item, its signature) is refused whole, naming
    what is wrong."""
    from . import protocol
    from .bundle import BundleError, ack_file_name, import_bundle, read_bounded, write_ack_file

    try:
        data = read_bounded(bundle_file, protocol.MAX_BUNDLE_BYTES)
        ack_file, counts = import_bundle(_central(data_dir, database, agency_code), data)
    except BundleError as exc:
        raise click.ClickException(f"{bundle_file}: {exc}") from None
    out = Path(acks_out) if acks_out else Path(bundle_file).with_name(ack_file_name(Path(bundle_file).name))
    try:
        write_ack_file(out, ack_file)
    except OSError as exc:
        raise click.ClickException(f"{out}: cannot write the ack file ({exc.strerror or exc}); the dossiers "
                                   "were received: import the bundle again to write it") from None
    click.echo(f"{ack_file['station_id']}: {counts['created']} new, {counts['duplicate']} already received, "
               f"{counts['rejected']} refused, {counts['deferred']} deferred; acks in {out}")


@central.command("backup")
@DATA_OPTION
@DB_OPTION
@click.argument("dest", type=click.Path())
def backup_command(data_dir, database, dest):
    """Write a backup of the central to DEST (a file, or a folder to put it in) while it runs: the
    database (SQLite copy, or pg_dump) and the keys; never the code watermark."""
    from .central_backup import BackupError, backup_central

    try:
        made = backup_central(Path(data_dir), database, Path(dest))
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    store = made["store"]
    click.echo(f"Đã sao lưu hệ thống trung tâm vào {made['path']}: {made['submissions']} hồ sơ, thế hệ "
               f"{store['generation']}.\nBacked up the central to {made['path']}: {made['submissions']} "
               f"submissions, generation {store['generation']}.\n"
               "Tệp chứa khóa của hệ thống trung tâm: giữ kín (quyền 0600). / It holds the central's keys: "
               "keep it secret (mode 0600).\n"
               "Chép blob-store (đã mã hóa bằng khóa trong tệp) sau bước này / copy the blobs (sealed with a key in the file) "
               f"after this: rsync -a --delete --exclude /partial/ {data_dir}/blob-store/ <nơi sao lưu>/blob-store/")
    if "pg_dump_command" in made:
        click.echo("pg_dump không có ở máy này: bản sao lưu chỉ có khóa; chạy lệnh sau ở máy có pg_dump (mật khẩu qua "
                   "PGPASSWORD hoặc ~/.pgpass).\npg_dump is not installed here: the backup holds only the keys; "
                   f"run this where it is:\n  {made['pg_dump_command']}")
    elif made["database"] == "postgresql":
        click.echo("Cơ sở dữ liệu PostgreSQL: đã chạy pg_dump --format=custom (central.pgdump trong tệp). / "
                   "PostgreSQL: pg_dump --format=custom was run (central.pgdump in the file).")


@central.command("restore")
@DATA_OPTION
@DB_OPTION
@click.argument("backup_file", type=click.Path(dir_okay=False))
def restore_command(data_dir, database, backup_file):
    """Put a SQLite backup back (the central stopped), then raise the store's generation so every station
    resends what the central lost. The code watermark stays as it is."""
    from .central_backup import BackupError, restore_central

    try:
        done = restore_central(Path(data_dir), database, Path(backup_file))
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    generation = done["identity"]["generation"]
    click.echo(f"Đã khôi phục hệ thống trung tâm từ bản sao lưu lúc {done['manifest']['created_at']}: thế hệ mới "
               f"{generation}; các trạm sẽ gửi lại những gì đã mất.\nRestored the central from the backup of "
               f"{done['manifest']['created_at']}: new generation {generation}; stations will resend what it lost.")
    for path in done["kept"]:
        click.echo(f"  giữ lại / kept: {path}")
    _warn_if_past_window(done["manifest"]["created_at"])


def _warn_if_past_window(created_at: str) -> None:
    """Stations keep a payload only for the restore window after the central acknowledged it: what an
    older backup lost, they may no longer be able to send again."""
    from datetime import datetime, timezone

    from .central import RESTORE_WINDOW_S

    days = (datetime.now(timezone.utc) - datetime.fromisoformat(created_at)).total_seconds() / 86400
    if days > RESTORE_WINDOW_S / 86400:
        click.echo(f"Cảnh báo: bản sao lưu đã {days:.0f} ngày, cũ hơn khoảng khôi phục ({RESTORE_WINDOW_S // 86400} "
                   "ngày): các trạm có thể đã xóa nội dung những hồ sơ nó mất và liệt kê chúng cho cán bộ.\n"
                   f"Warning: the backup is {days:.0f} days old, past the restore window: stations may have purged "
                   "the payloads of what it lost; they list those dossiers for staff.")


@central.command("mark-restored")
@DATA_OPTION
@DB_OPTION
def mark_restored_command(data_dir, database):
    """After restoring the database by hand (pg_restore): raise the store's generation, so every station
    resends what the central lost."""
    from .central_backup import mark_restored

    generation = mark_restored(Path(data_dir), database)["generation"]
    click.echo(f"Đã ghi nhận việc khôi phục: thế hệ mới {generation}. / Marked restored: new generation {generation}.")


@central.group("catalog")
def catalog_group():
    """Catalog releases for the stations (docs/catalog-releases.md)."""


@catalog_group.command("publish")
@DATA_OPTION
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--release", "release", type=click.IntRange(min=1), default=None,
              help="The release number (default: one above the latest published here); after a restore that "
                   "lost releases, one above the highest any station has.")
@click.option("--units-version", default=None,
              help="The administrative-unit data the definitions expect (default: this central's, e.g. "
                   "'vietnam-provinces 2025.10.1 (data 2025-10-18)'); stations with other data refuse the release.")
@click.option("--day-off", "days_off", multiple=True, metavar="YYYY-MM-DD",
              help="A day off every station adds to its calendar (again for each day).")
@click.option("--working-day", "working_days", multiple=True, metavar="YYYY-MM-DD",
              help="A weekend day worked in exchange, added to every station's calendar (again for each day).")
def catalog_publish_command(data_dir, folder, release, units_version, days_off, working_days):
    """Check the procedure definitions in FOLDER (*.toml) with the stations' own loader and publish them,
    signed with the central's catalog key, as the next release; a definition stations would refuse is
    refused here, naming the file and the field, and nothing is published."""
    from kiosk.core.catalog import CatalogError

    from .central_catalog import publish

    try:
        number, path = publish(data_dir, folder, release=release, units_version=units_version,
                               days_off=days_off, working_days=working_days)
    except (CatalogError, ValueError) as exc:
        raise click.ClickException(f"không phát hành / not published: {exc}") from None
    click.echo(f"Đã phát hành danh mục số {number} / published catalog release {number}: {path}")


if __name__ == "__main__":  # ``python -m sync.central_cli serve ...`` (tests run the central this way)
    central(prog_name="kiosk central")
