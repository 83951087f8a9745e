"""The words for what the devices report. devices/ returns codes: a CardError's ``code`` (with ``params``,
and a tampered file's ``reason``), Passive Authentication's status, reason and findings, the reader's
state, a printer ``Status`` and a print job's outcome. Their words are in kiosk/messages_devices.toml;
this module puts them together, in the page's language or in the one asked for (``lang``, for commands
and tests that run outside a request).
"""
from collections.abc import Iterable, Mapping

from .i18n import say


def _join(parts: Iterable[tuple[str, dict]], lang: str | None) -> str:
    return " ".join(say(key, lang, **params) for key, params in parts)


# --- the card ----------------------------------------------------------------------------------------

def card_error_of(err) -> dict:
    """What a page keeps of a CardError to say it later: the codes and plain values, no sentence."""
    return {"type": type(err).__name__, "code": err.code, "reason": getattr(err, "reason", ""),
            "params": dict(err.params)}


def card_error(error, lang: str | None = None) -> str:
    """The words of a CardError, or of what :func:`card_error_of` kept of one."""
    if not isinstance(error, Mapping):
        error = card_error_of(error)
    params = error.get("params") or {}
    parts = [(f"card_error_{error['code']}", params)]
    if error.get("reason"):  # what did not match comes first: "Data group DG13 has been changed. The chip ..."
        parts.insert(0, (f"card_error_{error['code']}_{error['reason']}", params))
    return _join(parts, lang)


def verification(status: str, reason: str, findings: Iterable, lang: str | None = None) -> str:
    """What Passive Authentication found, in words: the reason of the status, then the findings in order.
    A verified result with a warning opens with "Verified, with a warning:" and its first warning."""
    findings = list(findings)
    parts = [(f"card_pa_{reason}", {})]
    first = next((f for f in findings if f.kind == "warning"), None)
    if status == "verified_warning" and first is not None:
        parts = [("card_pa_signed_with_warning", {}), (f"card_pa_{first.code}", first.params)]
        findings.remove(first)
    parts += [(f"card_pa_{f.code}", f.params) for f in findings]
    return _join(parts, lang)


def reader_state(state: Mapping, lang: str | None = None) -> str:
    """The words of devices.card_reader.reader_status()."""
    if state["code"] != "ready":
        return card_error({"code": state["code"]}, lang)
    return _join([("card_reader_ready", {})] + ([("card_reader_card_present", {})] if state["card_present"] else []),
                 lang)


# --- the printer -------------------------------------------------------------------------------------

def printer_status(status, lang: str | None = None) -> str:
    """The words of a devices.printer.Status (or of its code, as a print job row keeps it; "pending" while
    the job is under way)."""
    code = getattr(status, "code", status)
    return say("print_pending" if code == "pending" else f"printer_status_{code}", lang)


def print_outcome(outcome, lang: str | None = None) -> str:
    """The words of a devices.printer.PrintOutcome: printed (and the paper is low), or what went wrong and
    that the receipt is on screen."""
    if outcome.ok:
        parts = [("print_outcome_printed", {})]
        if outcome.status.code == "paper_low":
            parts.append((f"printer_status_{outcome.status.code}", {}))
    else:
        parts = [(f"printer_status_{outcome.status.code}", {}), ("print_outcome_on_screen", {})]
    return _join(parts, lang)


# --- the document scanner ----------------------------------------------------------------------------

def scanner_status(code, lang: str | None = None) -> str:
    """The words of a devices.scanner.ScanError (or of its code)."""
    return say(f"scanner_error_{getattr(code, 'code', code)}", lang)
