"""What a station checks before it serves anyone, in one place: ``create_app`` runs it at start and
``kiosk check`` runs the same function, so the check refuses exactly what ``kiosk serve`` refuses.

Top of the layers (beside kiosk.app): it reads the core's station file and catalog and the devices' own
settings (printer, payment account), which import nothing of the project and raise their own errors.
"""
from dataclasses import dataclass

from devices.printer import PrinterSettings, PrinterSettingsError, printer_settings
from devices.vietqr import PaymentAccount, payment_account

from .core.catalog import Procedure, load_catalog
from .core.config import ConfigError


@dataclass(frozen=True)
class StartChecks:
    """What the checks read, so the app does not read it again."""

    catalog: dict[str, Procedure]
    printer: PrinterSettings
    payment: PaymentAccount | None


def start_checks(station: dict, catalog: dict[str, Procedure] | None = None) -> StartChecks:
    """Every check made before serving, in the order ``create_app`` meets them: the station file (the
    schema, the time zone, the card settings: checked by ``load_station``, which made ``station``), the
    procedure catalog, the printer settings, the payment account. Raises ConfigError (or CatalogError)
    with one line naming the file and the key.

    ``station`` is what ``load_station`` returned; ``catalog``, when the caller has loaded it already from
    ``paths.procedures``, is not loaded again.
    """
    if catalog is None:
        catalog = load_catalog(station["paths"].get("procedures"))
    source = station.get("source", "<config>")
    try:
        printer = printer_settings(station)
    except PrinterSettingsError as exc:  # its message names the file and the key already
        raise ConfigError(str(exc)) from None
    try:
        payment = payment_account(station)
    except ValueError as exc:
        raise ConfigError(f"{source}: payment: {exc}") from None
    return StartChecks(catalog, printer, payment)
