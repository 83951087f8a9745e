"""Telling citizens that their dossier moved on: an email and a text message per status change, only to a
citizen who said yes, and nothing in them but the tracking code and the new status in plain words.

The contract with the station (docs/sync.md, "Notifications"): a dossier document may carry
``"notify": {"email": ..., "sms": ..., "consent": true}``; without ``consent`` exactly ``true`` nothing is
sent. The central queues one row per status change and channel (table ``notifications``, in the same
transaction as the change: sync/central_store.py), and the ``NotificationSender`` sends the due ones with
retries and backoff. The address is never copied out of the sealed document: it is read at send time and
goes with the document when the retention drops it.

Exactly once: a row is claimed (a lease) before it is sent and marked sent after; a server that accepted
the message and then failed to say so, or a central killed between the two, is the one case that sends
twice, which an SMTP or SMS provider's own retry has too.
"""
import json
import logging
import random
import re
import smtplib
import ssl
import threading
import unicodedata
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Protocol

log = logging.getLogger("sync.notify")

CHANNELS = ("email", "sms")

# The citizen's words for each state at the central (the station's status_* words), and what happens next.
STATUS_WORDS = {
    "received": {"vi": "Cơ quan đã nhận hồ sơ", "en": "Received by the agency",
                 "sms": "Co quan da nhan ho so",
                 "next_vi": "Cơ quan sẽ xem xét và giải quyết hồ sơ của bạn.",
                 "next_en": "The agency will look at your application."},
    "processing": {"vi": "Đang giải quyết", "en": "Being processed", "sms": "Dang giai quyet",
                   "next_vi": "Bạn chưa cần làm gì. Chúng tôi sẽ báo khi có kết quả.",
                   "next_en": "Nothing to do yet. We will tell you when the result is ready."},
    "needs_documents": {"vi": "Cần bổ sung giấy tờ", "en": "More documents needed",
                        "sms": "Can bo sung giay to",
                        "next_vi": "Bạn hãy mang giấy tờ còn thiếu đến nơi đã nộp hồ sơ, hoặc gọi cho cơ quan "
                                   "giải quyết để hỏi cần giấy tờ gì.",
                        "next_en": "Please bring the missing papers to where you applied, or call the agency "
                                   "to ask which ones."},
    "done": {"vi": "Đã có kết quả", "en": "Result ready", "sms": "Da co ket qua",
             "next_vi": "Bạn có thể đến nhận kết quả, mang theo giấy tiếp nhận và thẻ căn cước.",
             "next_en": "You can collect the result; bring your receipt and ID card."},
    "returned_by_post": {"vi": "Đã gửi kết quả qua bưu điện", "en": "Result sent by post",
                         "sms": "Da gui ket qua qua buu dien",
                         "next_vi": "Kết quả đang được bưu điện chuyển đến địa chỉ bạn đã đăng ký.",
                         "next_en": "The post office is bringing the result to the address you gave."},
}

_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
_PHONE = re.compile(r"^(?:\+84|84|0)(\d{9})$")
# The GSM 03.38 basic character set (one 7-bit septet each); the escaped ones cost two.
GSM7 = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
           "¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM7_ESCAPED = set("^{}\\[~]|€")
SMS_GSM7_LIMIT, SMS_UCS2_LIMIT = 160, 70


class NotifyError(Exception):
    """A message not sent this time (the server down, refused, timed out): the row is tried again later."""


def consented_contacts(document: dict) -> dict[str, str]:
    """{channel: address} a dossier document allows the central to write to: its ``notify`` object with
    ``consent`` exactly true, each address well formed (an email; a Vietnamese mobile number, kept as
    +84 and 9 digits). Anything else (no object, no consent, a malformed address) gives nothing."""
    notify = document.get("notify") if isinstance(document, dict) else None
    if not isinstance(notify, dict) or notify.get("consent") is not True:
        return {}
    found = {}
    email = notify.get("email")
    if isinstance(email, str) and len(email) <= 254 and _EMAIL.match(email.strip()):
        found["email"] = email.strip()
    phone = notify.get("sms")
    if isinstance(phone, str):
        match = _PHONE.match(re.sub(r"[\s.\-()]", "", phone))
        if match:
            found["sms"] = "+84" + match.group(1)
    return found


def document_contacts(document_json: str | None) -> dict[str, str]:
    """``consented_contacts`` of a stored document's JSON (none once the retention dropped it)."""
    if not document_json:
        return {}
    try:
        return consented_contacts(json.loads(document_json))
    except ValueError:
        return {}


# -- the words ------------------------------------------------------------------------------------------

def email_message(sender: str, to: str, tracking_code: str, status: str) -> EmailMessage:
    """The email for one status change: Vietnamese first, English after; the tracking code and the state
    in plain words, nothing else about the dossier or the citizen."""
    words = STATUS_WORDS[status]
    message = EmailMessage()
    message["Subject"] = f"Hồ sơ {tracking_code}: {words['vi']}"
    message["From"] = sender
    message["To"] = to
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "dvc.local")
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
    message.set_content(
        f"Xin chào,\n\n"
        f"Hồ sơ có mã tra cứu {tracking_code} vừa chuyển sang tình trạng: {words['vi']}.\n"
        f"{words['next_vi']}\n\n"
        f"Bạn có thể tra cứu hồ sơ bằng mã này tại bất kỳ trạm dịch vụ công hoặc bưu điện nào, "
        f"hoặc quét mã QR trên giấy tiếp nhận.\n\n"
        f"Thư này được gửi tự động vì khi nộp hồ sơ bạn đã đồng ý nhận thông báo. Xin đừng trả lời thư này.\n\n"
        f"---\n"
        f"Your application with tracking code {tracking_code} is now: {words['en']}.\n"
        f"{words['next_en']}\n"
        f"You can track it with this code at any public-service kiosk or post office.\n"
        f"This message was sent automatically because you agreed to receive updates. Please do not reply.\n")
    return message


def sms_text(tracking_code: str, status: str) -> str:
    """The text message: Vietnamese without tone marks, so it stays in the GSM 7-bit alphabet and one SMS
    (160 characters; with tone marks it would be UCS-2, 70 characters, too short to say it)."""
    text = f"DVC: Ho so {tracking_code}: {STATUS_WORDS[status]['sms']}. Tra cuu bang ma nay tai tram DVC hoac buu dien."
    if not fits_one_sms(text):
        text = f"DVC: Ho so {tracking_code}: {STATUS_WORDS[status]['sms']}."
    return text


def without_tone_marks(text: str) -> str:
    """Vietnamese as people text it when the phone cannot: "Đã có kết quả" -> "Da co ket qua"."""
    text = text.replace("đ", "d").replace("Đ", "D")
    return "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))


def sms_units(text: str) -> tuple[str, int]:
    """('gsm7', septets) when every character is in the GSM 7-bit alphabet, else ('ucs2', UTF-16 units)."""
    if all(c in GSM7 or c in GSM7_ESCAPED for c in text):
        return "gsm7", sum(2 if c in GSM7_ESCAPED else 1 for c in text)
    return "ucs2", len(text.encode("utf-16-le")) // 2


def fits_one_sms(text: str) -> bool:
    coding, units = sms_units(text)
    return units <= (SMS_GSM7_LIMIT if coding == "gsm7" else SMS_UCS2_LIMIT)


# -- the channels ---------------------------------------------------------------------------------------

class EmailNotifier:
    """Email over SMTP (smtplib): one connection per message, STARTTLS and login when configured."""

    channel = "email"

    def __init__(self, host: str, port: int = 25, sender: str = "khong-tra-loi@dvc.local", starttls: bool = False,
                 username: str | None = None, password: str | None = None, timeout: float = 15.0):
        self.host, self.port, self.sender = host, int(port), sender
        self.starttls, self.username, self.password, self.timeout = starttls, username, password, timeout

    def send(self, address: str, tracking_code: str, status: str) -> None:
        self.deliver(email_message(self.sender, address, tracking_code, status))

    def deliver(self, message: EmailMessage) -> None:
        """Send one message over this SMTP path (also the fleet alerts', sync/station_health.py);
        NotifyError when it was not taken."""
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise NotifyError(f"email: {type(exc).__name__}: {exc}"[:200]) from None


class SmsGateway(Protocol):
    """Anything that takes a text message to a phone number (a province's gateway, a telecom's API)."""

    channel: str

    def send(self, address: str, tracking_code: str, status: str) -> None: ...


class HttpSmsGateway:
    """A gateway behind an HTTP endpoint: POST ``{"to": "+849...", "text": "...", "reference": "..."}`` as
    JSON with ``Authorization: Bearer <token>``; any 2xx is taken as accepted. ``reference`` (the tracking
    code and state) lets a gateway drop a message it has already taken."""

    channel = "sms"

    def __init__(self, url: str, token: str = "", timeout: float = 15.0):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"SMS gateway url must be http(s): {url}")
        self.url, self.token, self.timeout = url, token, timeout

    def send(self, address: str, tracking_code: str, status: str) -> None:
        body = json.dumps({"to": address, "text": sms_text(tracking_code, status),
                           "reference": f"{tracking_code}:{status}"}).encode()
        request = urllib.request.Request(self.url, body, method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                answer.read(65536)
        except (OSError, urllib.error.URLError) as exc:  # HTTPError (non-2xx) is a URLError
            raise NotifyError(f"sms: {type(exc).__name__}: {exc}"[:200]) from None


# -- the sender -----------------------------------------------------------------------------------------

@dataclass
class SenderSettings:
    base_delay: float = 30.0      # seconds before the first retry ...
    max_delay: float = 3600.0     # ... doubling up to this
    max_attempts: int = 48        # then the row is given up (state 'failed'), about two days of an hour each
    lease: float = 300.0          # a claimed row is not sent by another sender for this long
    batch: int = 100              # rows per pass


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds")


class NotificationSender:
    """Sends the queued notifications that are due, through the channel each was queued for."""

    def __init__(self, store, channels: dict, settings: SenderSettings | None = None, rng: random.Random | None = None):
        self.store, self.channels = store, dict(channels)
        self.settings = settings or SenderSettings()
        self.rng = rng or random.Random()
        self.wake = threading.Event()
        self._pass = threading.Lock()

    def delay(self, attempts: int) -> float:
        """Exponential backoff with jitter in its upper half (never sooner than half the window)."""
        window = min(self.settings.max_delay, self.settings.base_delay * 2 ** max(attempts - 1, 0))
        return window / 2 + self.rng.uniform(0, window / 2)

    def send_due(self, now: datetime | None = None) -> dict:
        """One pass over the due rows; returns counts of sent, retried, failed and dropped."""
        counts = {"sent": 0, "retried": 0, "failed": 0, "dropped": 0}
        with self._pass:
            now = now or datetime.now(timezone.utc)
            # A row waits for the earlier changes of its dossier and channel (due_notifications): each round
            # sends the next of each dossier, until a round finds nothing more to send.
            for _round in range(len(STATUS_WORDS) * 4):
                before = counts["sent"] + counts["dropped"]
                self._round(now, counts)
                if counts["sent"] + counts["dropped"] == before:
                    break
        return counts

    def _round(self, now: datetime, counts: dict) -> None:
        """Send each due row once (claimed first, so two senders never send the same row)."""
        for row in self.store.due_notifications(_iso(now), self.settings.batch):
            key = (row["station_id"], row["seq"], row["channel"])
            if not self.store.claim_notification(key, _iso(now), _iso(now + timedelta(seconds=self.settings.lease))):
                continue  # another sender has it
            channel = self.channels.get(row["channel"])
            address = self.store.notification_contacts(row["submission_id"]).get(row["channel"])
            if channel is None or address is None or row["status"] not in STATUS_WORDS:
                why = "no such channel here" if channel is None else (
                    "no address: the document was dropped" if address is None else "unknown status")
                self.store.notification_given_up(key, "dropped", why)
                counts["dropped"] += 1
                continue
            try:
                channel.send(address, row["tracking_code"], row["status"])
            except NotifyError as exc:
                attempts = row["attempts"] + 1
                if attempts >= self.settings.max_attempts:
                    self.store.notification_given_up(key, "failed", str(exc), attempts)
                    counts["failed"] += 1
                else:
                    self.store.notification_retry(key, attempts, _iso(now + timedelta(seconds=self.delay(attempts))),
                                                  str(exc))
                    counts["retried"] += 1
                log.warning("notification %s of change %s/%s not sent (attempt %d): %s", row["channel"],
                            row["station_id"], row["seq"], attempts, exc)
                continue
            self.store.notification_sent(key, _iso(datetime.now(timezone.utc)))
            counts["sent"] += 1

    def start(self, interval: float = 5.0) -> None:
        """Send the due notifications every ``interval`` seconds (at once when ``wake`` is set: a status
        change was just queued) in a daemon thread, until ``stop()``."""
        self._stopped = threading.Event()

        def run():
            while not self._stopped.is_set():
                try:
                    self.send_due()
                except Exception as exc:  # noqa: BLE001  (the database away for a moment: the next pass tries)
                    log.error("notifications: pass failed: %s", type(exc).__name__)
                self.wake.wait(interval)
                self.wake.clear()

        threading.Thread(target=run, name="central-notify", daemon=True).start()

    def stop(self) -> None:
        if getattr(self, "_stopped", None) is not None:
            self._stopped.set()
            self.wake.set()


def email_from_config(config) -> EmailNotifier | None:
    """The SMTP path of a central's config (NOTIFY_SMTP_*), or None when NOTIFY_SMTP_HOST is not set."""
    if not config.get("NOTIFY_SMTP_HOST"):
        return None
    return EmailNotifier(
        config["NOTIFY_SMTP_HOST"], int(config.get("NOTIFY_SMTP_PORT") or 25),
        config.get("NOTIFY_EMAIL_FROM") or "khong-tra-loi@dvc.local", bool(config.get("NOTIFY_SMTP_STARTTLS")),
        config.get("NOTIFY_SMTP_USER"), config.get("NOTIFY_SMTP_PASSWORD"),
        float(config.get("NOTIFY_TIMEOUT") or 15.0))


def sender_from_config(store, config) -> NotificationSender | None:
    """The sender for a central's config (docs/sync.md, "Notifications"), or None when no channel is set."""
    channels = {}
    email = email_from_config(config)
    if email is not None:
        channels["email"] = email
    if config.get("NOTIFY_SMS_GATEWAY") is not None:  # any SmsGateway object (a province's own)
        channels["sms"] = config["NOTIFY_SMS_GATEWAY"]
    elif config.get("NOTIFY_SMS_URL"):
        channels["sms"] = HttpSmsGateway(config["NOTIFY_SMS_URL"], config.get("NOTIFY_SMS_TOKEN") or "",
                                         float(config.get("NOTIFY_TIMEOUT") or 15.0))
    if not channels:
        return None
    settings = SenderSettings()
    for key, attr in (("NOTIFY_RETRY_BASE", "base_delay"), ("NOTIFY_RETRY_MAX", "max_delay"),
                      ("NOTIFY_MAX_ATTEMPTS", "max_attempts")):
        if config.get(key) is not None:
            setattr(settings, attr, type(getattr(settings, attr))(config[key]))
    return NotificationSender(store, channels, settings)
