"""The words for why a dossier waits or was refused. The outbox keeps a reason as sync wrote it
(``last_error``): a refusal's code and the central's English reason (``station_mismatch: the document
comes ...``), or for a dossier that waits, what went wrong last (``ConnectionRefusedError: [Errno 111] ...``,
``HTTP 503``, ``HTTP 401 stale_timestamp``). Staff see neither: this module turns a stored reason into one
sentence in the page's language, saying what happened and what to do. A reason it does not know gets a
general sentence, never the raw text. The sentences are ``refusal_<code>`` and ``sync_error_<kind>`` in
kiosk/messages_agent.toml.
"""
import re

from .i18n import say

# Every code a refusal is stored with: the central's signed refusals (sync/central.py ``Central.receive``
# and ``_document_problem``) and the worker's own quarantines (sync/worker.py: a payload or a document
# that is not here as its dossier names it, a document larger than the central takes).
REFUSAL_CODES = (
    "bad_submission_id", "too_deep", "not_json", "not_canonical", "missing_field", "bad_field", "id_mismatch",
    "station_mismatch", "bad_procedure_code", "bad_answers", "bad_attachments", "conflict", "tracking_code_taken",
    "local_payload", "local_documents", "blob_too_large",
)

# The error codes of the central's other answers (``_error`` in sync/central.py, protocol.AuthError, its
# blob refusals), as they appear in a waiting dossier's reason (``HTTP 403 revoked_station``), by the
# sentence that says them.
ERROR_KINDS = {
    "unknown_station": "unknown_station", "revoked_station": "revoked_station",
    "stale_timestamp": "clock", "bad_signature": "signature", "bad_body_hash": "signature",
    "blob_quota_exceeded": "blob_quota", "too_many_uploads": "blob_quota", "missing_blobs": "missing_blobs",
    **{code: "request" for code in (
        "too_large", "bad_gzip", "bad_batch", "too_many", "bad_json", "other_station", "bad_cursor", "bad_holds",
        "bad_tracking_code", "bad_ratings", "bad_hash", "bad_range", "hash_mismatch", "total_mismatch",
        "offset_mismatch", "not_found")},
}
KINDS = ("connection", "central_down", "busy", "not_central", "payload_key", "central_restored",
         *sorted(set(ERROR_KINDS.values())), "unknown")

_HTTP = re.compile(r"HTTP (\d{3})(?: ([a-z_]+))?")
# What the client writes for an exchange that produced no answer: the exception's name and text
# (``ConnectionRefusedError: ...``, ``gaierror: ...``, ``timeout: ...``), or its own words for one cut short.
_NO_ANSWER = re.compile(r"^(?:[A-Z][A-Za-z0-9_]*|gaierror|herror|timeout)\b|took longer than|an answer of|"
                        r"did not finish|without an offset")
# An answer that came, but not from the central (a captive portal, a proxy, a cut or forged body).
_NOT_CENTRAL = ("not the central's", "for another submission", "of another blob", "inflates past",
                "batch item missing")
_CONTEXT = re.compile(r"^(?:document upload|blob PUT|blob HEAD|batch item|changes|holds): ")


def refusal_code(last_error: str | None) -> str | None:
    """The code a refusal was stored with, when it is one this module knows (else None)."""
    code = (last_error or "").partition(":")[0].strip()
    return code if code in REFUSAL_CODES else None


def error_kind(last_error: str) -> str:
    """Which sentence says why a dossier waits: one of ``KINDS``."""
    text = last_error.strip()
    while _CONTEXT.match(text):  # where it happened says nothing more: what happened does
        text = _CONTEXT.sub("", text, count=1)
    if text.startswith("central_restored"):
        return "central_restored"
    if "payload key does not open" in text:
        return "payload_key"
    if text.startswith("blob refused: "):
        return ERROR_KINDS.get(text.split(":")[1].strip(), "unknown")
    if any(words in text for words in _NOT_CENTRAL):
        return "not_central"
    http = _HTTP.search(text)
    if http:
        status, code = int(http.group(1)), http.group(2)
        if status == 428:
            return "missing_blobs"
        if status == 429:
            return "busy"
        if status >= 500:
            return "central_down"
        if code in ERROR_KINDS:
            return ERROR_KINDS[code]
        return "request" if 400 <= status < 500 else "not_central"
    if _NO_ANSWER.search(text):
        return "connection"
    return "unknown"


def explain(last_error: str | None, state: str | None = None, lang: str | None = None) -> str:
    """One sentence for a stored reason: what happened and what to do ('' when there is none). A refused
    dossier (``state`` 'rejected', or a reason with a refusal's code) is said with ``refusal_<code>``,
    one that waits with ``sync_error_<kind>``."""
    if not last_error:
        return ""
    code = refusal_code(last_error)
    if code is not None:
        return say(f"refusal_{code}", lang)
    if state == "rejected":
        return say("refusal_unknown", lang)
    return say(f"sync_error_{error_kind(last_error)}", lang)
