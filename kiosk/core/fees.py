"""The fee of a dossier: one computation from the procedure's fee rules, the answers and the channel.

``fee_for`` is the only place a fee is worked out. What the citizen sees (check, consent and done pages),
what the dossier stores (``fee_due_vnd`` and ``fee_basis``), the receipt and its VietQR, the counter's
ledger and the end-of-day difference all carry the amount it gives, computed once at submit and read
back from the dossier afterwards.

The rules are data in the procedure definition (``[fee]``, kiosk/core/catalog.py FEE_SCHEMA):

- a base amount (``amount_vnd``) and, where the law sets a lower one for online submissions, an online
  amount (``online_vnd``): the channel decides which (``rate_for``);
- per-copy pricing (``copies``): the number of copies is an answer, the first ``included`` are in the
  base amount, each further one costs ``extra_vnd``;
- reductions (a lower base amount) and exemptions (nothing to pay), each keyed on an answer
  (``when = { field, equals }``) with its legal reason in Vietnamese and English.

A reduction lowers the base amount only: extra copies are still charged (the judicial record fee table
sets the 5.000 đ per extra copy after both rates). An exemption makes the whole fee 0. At a counter the
staff decide the ground after seeing the proof (``StaffGround``): a ground of the procedure's list, none,
or "other" with their own reason and the amount due; the citizen's declared ground is then only what
their form pre-selects.

The result is lines (each with a code the pages and the receipt put in words, from messages.toml) that
add up to the amount.
"""
from dataclasses import dataclass

from .catalog import Procedure

# Where the citizen submits the dossier themselves, electronically, with nobody receiving it in person:
# the online rate applies (docs/procedures.md, "Which rate applies where"). Counters and mobile teams
# receive the dossier in person on the citizen's behalf: the in-person rate.
ONLINE_CHANNELS = frozenset({"kiosk"})
ONLINE, IN_PERSON = "online", "in_person"
NONE, OTHER = "none", "other"  # the counter's choices besides the procedure's grounds
EXEMPT, REDUCED = "exempt", "reduced"


@dataclass(frozen=True)
class Line:
    """One line of a fee: ``code`` is ``base`` (the base amount of a procedure with one rate), ``online``
    or ``in_person`` (the base amount at that rate, where the procedure has both),
    ``copies`` (``count`` extra copies from copy number ``first``, ``each_vnd`` each), ``reduced`` or
    ``exempt`` (a negative amount, for the fee's reason)."""
    code: str
    amount_vnd: int
    count: int = 0
    first: int = 0
    each_vnd: int = 0

    def as_dict(self) -> dict:
        out = {"code": self.code, "amount_vnd": self.amount_vnd}
        if self.code == "copies":
            out.update(count=self.count, first=self.first, each_vnd=self.each_vnd)
        return out


@dataclass(frozen=True)
class StaffGround:
    """What staff recorded at a counter: ``ground`` is a reduction's or an exemption's id of the
    procedure, ``NONE`` (the full fee, whatever the citizen declared) or ``OTHER`` (then ``reason`` is
    what they wrote and ``amount_vnd`` the amount due, no more than the full fee)."""
    ground: str = NONE
    reason: str = ""
    amount_vnd: int | None = None


@dataclass(frozen=True)
class Fee:
    amount_vnd: int                # what is due
    standard_vnd: int              # what would be due without a reduction or exemption
    rate: str                      # the channel's rate, ONLINE or IN_PERSON (used where the procedure has both)
    lines: tuple[Line, ...]        # they add up to amount_vnd
    ground: str | None = None      # the reduction's or exemption's id, OTHER, or None
    kind: str | None = None        # REDUCED, EXEMPT or None
    reason: dict | None = None     # {vi, en}: the legal reason, or the staff's words for OTHER
    legal_basis: str = ""
    decided_by: str = "rules"      # "rules" (the answers) or "staff" (recorded at the counter)

    def basis(self, *, sealed: bool = True) -> dict:
        """The fee as stored: in the sealed dossier (everything), or in the dossier row's ``fee_basis``
        (``sealed=False``: without the staff's own words for "other", which stay in the sealed payload)."""
        reason = self.reason if sealed or self.ground != OTHER else None
        return {"amount_vnd": self.amount_vnd, "standard_vnd": self.standard_vnd, "rate": self.rate,
                "lines": [line.as_dict() for line in self.lines], "ground": self.ground, "kind": self.kind,
                "reason": reason, "legal_basis": self.legal_basis, "decided_by": self.decided_by}


def rate_for(channel: str) -> str:
    return ONLINE if channel in ONLINE_CHANNELS else IN_PERSON


def grounds(procedure: Procedure) -> list[dict]:
    """The procedure's reductions and exemptions, each with its ``kind``: the list staff choose from."""
    rules = procedure.fee
    return ([{**r, "kind": REDUCED} for r in rules["reductions"]]
            + [{**r, "kind": EXEMPT} for r in rules["exemptions"]])


def declared_ground(procedure: Procedure, answers: dict) -> dict | None:
    """The reduction or exemption the answers claim (an exemption before a reduction), or None."""
    matching = [g for g in grounds(procedure) if answers.get(g["when"]["field"]) == g["when"]["equals"]]
    return next((g for g in matching if g["kind"] == EXEMPT), matching[0] if matching else None)


def _copies(procedure: Procedure, answers: dict) -> int:
    rule = procedure.fee.get("copies")
    value = answers.get(rule["field"]) if rule else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def fee_for(procedure: Procedure, answers: dict, channel: str, staff: StaffGround | None = None) -> Fee:
    """The fee due for ``answers`` to ``procedure`` submitted through ``channel`` (the station's kind:
    kiosk, counter, mobile). ``staff``: the ground recorded at a counter, which replaces the one the
    answers declare. Raises ValueError for a staff ground the procedure does not have, or an "other"
    amount above the full fee."""
    rules = procedure.fee
    rate = rate_for(channel)
    if rules.get("online_vnd") is None:
        base, code = rules["amount_vnd"], "base"  # one amount whatever the channel
    elif rate == ONLINE:
        base, code = rules["online_vnd"], ONLINE
    else:
        base, code = rules["amount_vnd"], IN_PERSON
    lines = [Line(code, base)]
    extra_copies = 0
    if rules.get("copies"):
        extra_copies = max(0, _copies(procedure, answers) - rules["copies"]["included"])
    extras = extra_copies * rules["copies"]["extra_vnd"] if extra_copies else 0
    if extras:
        lines.append(Line("copies", extras, count=extra_copies, first=rules["copies"]["included"] + 1,
                          each_vnd=rules["copies"]["extra_vnd"]))
    standard = base + extras
    basis = rules.get("legal_basis", "")

    if staff is None:
        ground, decided_by = declared_ground(procedure, answers), "rules"
    elif staff.ground == NONE:
        ground, decided_by = None, "staff"
    elif staff.ground == OTHER:
        amount = staff.amount_vnd
        if amount is None or not 0 <= amount <= standard or not staff.reason.strip():
            raise ValueError("an 'other' ground needs a reason and an amount no more than the full fee")
        if amount == standard:
            return Fee(standard, standard, rate, tuple(lines), legal_basis=basis, decided_by="staff")
        kind = EXEMPT if amount == 0 else REDUCED
        lines.append(Line(kind, amount - standard))
        return Fee(amount, standard, rate, tuple(lines), OTHER, kind, {"vi": staff.reason, "en": staff.reason},
                   basis, "staff")
    else:
        ground = next((g for g in grounds(procedure) if g["id"] == staff.ground), None)
        if ground is None:
            raise ValueError(f"{procedure.slug} has no reduction or exemption '{staff.ground}'")
        decided_by = "staff"

    if ground is None or standard == 0:
        return Fee(standard, standard, rate, tuple(lines), legal_basis=basis, decided_by=decided_by)
    if ground["kind"] == EXEMPT:
        lines.append(Line(EXEMPT, -standard))
        return Fee(0, standard, rate, tuple(lines), ground["id"], EXEMPT, ground["reason"], basis, decided_by)
    reduced_base = min(base, ground["amount_vnd"])
    if reduced_base == base:  # the online rate is already as low: nothing to reduce
        return Fee(standard, standard, rate, tuple(lines), legal_basis=basis, decided_by=decided_by)
    lines.append(Line(REDUCED, reduced_base - base))
    return Fee(reduced_base + extras, standard, rate, tuple(lines), ground["id"], REDUCED, ground["reason"], basis,
               decided_by)
