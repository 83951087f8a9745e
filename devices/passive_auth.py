"""Passive Authentication (ICAO 9303 part 11, section 5.1): EF.SOD is a CMS SignedData whose content, the
LDSSecurityObject, lists a hash for each data group. We check (1) the hash of every file read against
the SOD, (2) the Document Signer's signature over the SOD, and (3) that the Document Signer certificate
was issued by one of the CSCA certificates in the configured folder.

(1) or (2) failing means the data was altered: CardTamperedError (its ``reason`` says what), nothing is
used. (3) failing (no folder, no matching CSCA), or no EF.SOD at all, means the data is consistent but its
origin unproven: status "not_verified", with the reason, and the caller decides. A chain that holds but
with a certificate out of its validity (the Document Signer's or the CSCA's), or a card past its own
expiry date, is "verified_warning", with a finding that says why. EF.COM is not covered by the SOD, by
design of ICAO 9303, and nothing is taken from it but the list of data groups.

Results and errors carry codes, not sentences: the pages find their words in kiosk/messages_devices.toml
(``card_pa_<reason>``, ``card_pa_<finding code>``, ``card_error_tampered_<reason>``).
"""
import hashlib
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from pathlib import Path

from asn1crypto import algos, cms, core
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from devices import card_tlv
from devices.card_errors import CardTamperedError

LDS_SECURITY_OBJECT_OID = "2.23.136.1.1.1"


class DataGroupHash(core.Sequence):
    _fields = [("data_group_number", core.Integer), ("data_group_hash_value", core.OctetString)]


class DataGroupHashValues(core.SequenceOf):
    _child_spec = DataGroupHash


class LdsVersionInfo(core.Sequence):
    _fields = [("lds_version", core.PrintableString), ("unicode_version", core.PrintableString)]


class LdsSecurityObject(core.Sequence):
    _fields = [
        ("version", core.Integer),
        ("hash_algorithm", algos.DigestAlgorithm),
        ("data_group_hash_values", DataGroupHashValues),
        ("lds_version_info", LdsVersionInfo, {"optional": True}),
    ]


_HASHES = {"sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
           "sha512": hashes.SHA512}


# Why a result has its status: the data is signed by a trusted issuer, or which proof is missing.
REASONS = ("signed", "no_sod", "no_csca", "untrusted_signer")
# What a result may add: warnings (the data is the issuer's, but a certificate or the card is out of its
# validity; ``day`` is a date) and notes (``count`` items could not be read).
FINDINGS = {"signer_cert_expired": "warning", "signer_cert_not_yet_valid": "warning", "csca_expired": "warning",
            "csca_not_yet_valid": "warning", "card_expired": "warning", "unreadable_items": "note"}


@dataclass(frozen=True)
class Finding:
    """One thing a result adds to its status, in the order found: ``code`` is one of FINDINGS, ``kind``
    "warning" or "note", ``params`` plain values (a ``datetime.date``, a count); no personal data."""

    code: str
    kind: str
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready: dates as ISO text."""
        return {"code": self.code, "kind": self.kind,
                **{k: v.isoformat() if isinstance(v, date) else v for k, v in self.params.items()}}


@dataclass
class PassiveAuthResult:
    status: str  # "verified", "verified_warning" or "not_verified"
    reason: str  # one of REASONS
    checked_data_groups: list[int] = field(default_factory=list)
    signer: str | None = None  # the Document Signer's subject, for staff; holds no personal data
    findings: tuple[Finding, ...] = ()

    @property
    def verified(self) -> bool:
        return self.status in ("verified", "verified_warning")

    def with_warning(self, code: str, **params) -> "PassiveAuthResult":
        """The same result, verified only with a warning (a data that stays not verified stays so)."""
        status = "verified_warning" if self.verified else self.status
        return replace(self, status=status, findings=self.findings + (Finding(code, "warning", params),))

    def with_note(self, code: str, **params) -> "PassiveAuthResult":
        return replace(self, findings=self.findings + (Finding(code, "note", params),))


def _tampered(detail: str, reason: str, **params) -> CardTamperedError:
    return CardTamperedError(detail, reason=reason, **params)


# The hash algorithms ICAO 9303 part 10 allows for EF.SOD. Others (a SHAKE, say, whose digest needs a
# length, or anything hashlib happens to know) are refused like a tampered file.
ICAO_HASHES = ("sha1", "sha224", "sha256", "sha384", "sha512")


def _digest(name: str, data: bytes) -> bytes:
    if name not in ICAO_HASHES:
        raise _tampered(f"unsupported hash {name}", "unsupported_hash")
    return hashlib.new(name, data).digest()


def parse_sod(sod: bytes) -> tuple[cms.SignedData, LdsSecurityObject, bytes]:
    """EF.SOD (tag 77) -> (SignedData, LDSSecurityObject, its DER bytes). Raises CardTamperedError."""
    try:
        outer = card_tlv.parse_file(sod, 0x77)
        info = cms.ContentInfo.load(outer.value)
        if info["content_type"].native != "signed_data":
            raise ValueError("not SignedData")
        signed = info["content"]
        encap = signed["encap_content_info"]
        if encap["content_type"].dotted != LDS_SECURITY_OBJECT_OID:
            raise ValueError("not an LDSSecurityObject")
        content = encap["content"]
        raw = content.native if not isinstance(content.native, LdsSecurityObject) else content.contents
        lso = LdsSecurityObject.load(bytes(raw))
        lso.native  # force a full parse now, so bad bytes fail here
        return signed, lso, bytes(raw)
    except CardTamperedError:
        raise
    except Exception as exc:  # asn1crypto raises ValueError/TypeError/KeyError on bad DER
        raise _tampered(f"EF.SOD does not parse: {type(exc).__name__}", "sod_damaged") from exc


def check_hashes(lso: LdsSecurityObject, files: dict[int, bytes]) -> list[int]:
    """Compare each data group read with its hash in the SOD; returns the numbers checked."""
    algorithm = lso["hash_algorithm"]["algorithm"].native
    listed = {int(h["data_group_number"].native): bytes(h["data_group_hash_value"].native)
              for h in lso["data_group_hash_values"]}
    checked = []
    for number, content in sorted(files.items()):
        expected = listed.get(number)
        if expected is None:
            raise _tampered(f"DG{number} has no hash in EF.SOD", "dg_not_signed", dg=number)
        if _digest(algorithm, content) != expected:
            raise _tampered(f"DG{number} hash mismatch", "dg_changed", dg=number)
        checked.append(number)
    return checked


def _signer_certificate(signed: cms.SignedData, signer: cms.SignerInfo) -> x509.Certificate | None:
    sid = signer["sid"]
    for choice in signed["certificates"] or []:
        if choice.name != "certificate":
            continue
        cert = choice.chosen
        if sid.name == "issuer_and_serial_number":
            if (cert.issuer == sid.chosen["issuer"]
                    and cert.serial_number == sid.chosen["serial_number"].native):
                return x509.load_der_x509_certificate(cert.dump())
        elif cert.key_identifier == sid.chosen.native:
            return x509.load_der_x509_certificate(cert.dump())
    return None


def _verify_signature(cert: x509.Certificate, signer: cms.SignerInfo, data: bytes) -> None:
    key = cert.public_key()
    sig = bytes(signer["signature"].native)
    algo = signer["signature_algorithm"]
    digest_name = signer["digest_algorithm"]["algorithm"].native
    if digest_name not in _HASHES:
        raise InvalidSignature(f"digest {digest_name}")
    hash_alg = _HASHES[digest_name]()
    if isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(sig, data, ec.ECDSA(hash_alg))
    elif isinstance(key, rsa.RSAPublicKey):
        if algo.signature_algo == "rsassa_pss":
            params = algo["parameters"]
            pss_hash = _HASHES[params["hash_algorithm"]["algorithm"].native]()
            key.verify(sig, data, padding.PSS(padding.MGF1(pss_hash), params["salt_length"].native), pss_hash)
        else:
            key.verify(sig, data, padding.PKCS1v15(), hash_alg)
    else:
        raise InvalidSignature("unsupported key type")


def check_signature(signed: cms.SignedData, lso_der: bytes) -> x509.Certificate:
    """Check the Document Signer's signature over the SOD; returns the DS certificate."""
    signers = signed["signer_infos"]
    if len(signers) != 1:
        raise _tampered("EF.SOD must have exactly one signer", "signer_count")
    signer = signers[0]
    try:
        cert = _signer_certificate(signed, signer)
    except Exception as exc:  # a damaged certificate fails to load in asn1crypto or cryptography
        raise _tampered(f"Document Signer certificate does not parse: {type(exc).__name__}",
                        "signer_cert_damaged") from exc
    if cert is None:
        raise _tampered("no Document Signer certificate in EF.SOD", "signer_cert_missing")
    try:
        digest_name = signer["digest_algorithm"]["algorithm"].native
        attrs = signer["signed_attrs"]
        if attrs:
            message_digest = None
            for attr in attrs:
                if attr["type"].native == "message_digest":
                    message_digest = bytes(attr["values"][0].native)
            if message_digest != _digest(digest_name, lso_der):
                raise InvalidSignature("messageDigest does not match the content")
            # The signature covers the attributes DER-encoded as a SET, not with their [0] tag.
            to_verify = b"\x31" + attrs.dump()[1:]
        else:
            to_verify = lso_der
        _verify_signature(cert, signer, to_verify)
    except Exception as exc:  # InvalidSignature, or whatever a damaged structure raises
        raise _tampered(f"Document Signer signature invalid: {type(exc).__name__}", "signature_invalid") from exc
    return cert


def load_csca_certificates(folder: str | Path | None) -> list[x509.Certificate]:
    """Every certificate (PEM or DER; .pem .crt .cer .der) in the folder; unreadable files are skipped."""
    if not folder:
        return []
    out = []
    path = Path(folder)
    if not path.is_dir():
        return []
    for file in sorted(path.iterdir()):
        if file.suffix.lower() not in (".pem", ".crt", ".cer", ".der"):
            continue
        data = file.read_bytes()
        try:
            if b"-----BEGIN CERTIFICATE-----" in data:
                out.extend(x509.load_pem_x509_certificates(data))
            else:
                out.append(x509.load_der_x509_certificate(data))
        except ValueError:
            continue
    return out


def check_chain(ds: x509.Certificate, cscas: list[x509.Certificate]) -> x509.Certificate | None:
    """The CSCA that issued the DS certificate (name and signature), or None."""
    for csca in cscas:
        try:
            ds.verify_directly_issued_by(csca)
            return csca
        except Exception:  # InvalidSignature, or a name/key that does not fit: not this CSCA
            continue
    return None


def passive_authentication(sod: bytes | None, files: dict[int, bytes], csca_dir: str | Path | None,
                           now: datetime | None = None) -> PassiveAuthResult:
    """Run all three checks; raises CardTamperedError on altered data, else says how far it is verified."""
    if sod is None:
        return PassiveAuthResult("not_verified", "no_sod")
    now = now or datetime.now(timezone.utc)
    signed, lso, lso_der = parse_sod(sod)
    checked = check_hashes(lso, files)
    try:
        ds = check_signature(signed, lso_der)
    except CardTamperedError:
        raise
    except Exception as exc:  # asn1crypto parses lazily: a damaged part fails only when reached
        raise _tampered(f"EF.SOD signer data does not parse: {type(exc).__name__}", "signature_invalid") from exc
    try:
        signer = ds.subject.rfc4514_string()
    except Exception:  # an odd attribute in the name; the name is only informative
        signer = None
    cscas = load_csca_certificates(csca_dir)
    if not cscas:
        return PassiveAuthResult("not_verified", "no_csca", checked, signer)
    csca = check_chain(ds, cscas)
    if csca is None:
        return PassiveAuthResult("not_verified", "untrusted_signer", checked, signer)
    result = PassiveAuthResult("verified", "signed", checked, signer)
    for cert, name in ((ds, "signer_cert"), (csca, "csca")):
        if now > cert.not_valid_after_utc:
            result = result.with_warning(f"{name}_expired", day=cert.not_valid_after_utc.date())
        elif now < cert.not_valid_before_utc:
            result = result.with_warning(f"{name}_not_yet_valid", day=cert.not_valid_before_utc.date())
    return result


def card_notes(result: PassiveAuthResult, unreadable: list[str], card_expiry: str | None,
               today: date | None = None) -> PassiveAuthResult:
    """Add what the read itself found: fields that could not be read (never shown, so never vouched for)
    and a card past its expiry date (a warning: the data is the issuer's, the card is no longer valid)."""
    if unreadable:
        result = result.with_note("unreadable_items", count=len(unreadable))
    today = today or date.today()
    try:
        expired = card_expiry is not None and date.fromisoformat(card_expiry) < today
    except ValueError:
        expired = False
    if expired:
        result = result.with_warning("card_expired", day=date.fromisoformat(card_expiry))
    return result
