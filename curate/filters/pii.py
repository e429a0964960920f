"""PII: detect and redact e-mails, public IPs, phone numbers, payment cards and IBANs.

Each detector finds candidate spans with a regex and keeps those its validator accepts; spans of
all detectors are resolved in one pass (overlaps go to the earlier, then longer, span; e-mails
win ties) and replaced by typed placeholders. ``text`` is rewritten; ``pii_counts`` is a struct
column of per-type counts. Nothing is removed unless ``max_items`` is set (reason ``pii_dense``).

What counts, and why:
- e-mail: permissive local part (so no fragment of a local part survives the redaction), a domain
  of dot-separated labels ending in a letters-only TLD.
- IP: IPv4 validated by ``ipaddress`` (no leading zeros) and redacted only when globally
  routable unicast (``is_global`` and not multicast); IPv6 only in the global unicast block
  2000::/3. Private, loopback, link-local, CGNAT, reserved and documentation ranges (192.0.2.0/24,
  2001:db8::/32, ...) identify nobody and are everywhere in technical text, so they stay. A dotted
  quad right after "version"/"v"/"release", or one shaped like a version (first part < 10, the
  others < 32: 1.2.3.4, 2.0.0.11; ~0.2% of the addresses in 1.0.0.0–9.255.255.255), is a version
  string, not an address.
- phone: conservative on purpose, because version strings, dates, times and numeric literals are
  far more frequent than phone numbers in a code-heavy corpus. Only (a) international numbers
  written with a leading ``+`` and a country code, (b) NANP numbers written ``(555) 123-4567`` or
  ``555-123-4567``, and (c) numbers after a label such as ``Tel:``/``Phone:``/``Fax:`` are
  candidates; each needs 7–15 digits (E.164).
- credit card: 13–19 digits, compact or grouped as printed on cards (4-4-4-4, 4-6-5, ...; one
  kind of separator), a known issuer prefix
  (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay) and a valid Luhn check digit.
- IBAN: country code, check digits and BBAN (grouped by 4 or compact), the exact length of that
  country's IBAN and a valid ISO 7064 mod-97 check.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from curate.stage import Rules, Stage

PII_TYPES = ("email", "ip", "phone", "credit_card", "iban")
PLACEHOLDERS = {
    "email": "<EMAIL>",
    "ip": "<IP_ADDRESS>",
    "phone": "<PHONE>",
    "credit_card": "<CREDIT_CARD>",
    "iban": "<IBAN>",
}
PII_COUNTS_TYPE = pa.struct([pa.field(t, pa.int32()) for t in PII_TYPES])


class PIIConfig(BaseModel):
    """Which PII types to redact; optional removal of documents dense in PII."""

    model_config = ConfigDict(extra="forbid")

    email: bool = True
    ip: bool = True
    phone: bool = True
    credit_card: bool = True
    iban: bool = True
    max_items: int | None = Field(
        None, ge=0, description="remove documents with more PII items than this (None: never)"
    )


# --- e-mail --------------------------------------------------------------------------------

EMAIL = re.compile(
    r"(?<![\w.+%'~-])[\w.!#$%&'*+~-]+@(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_]{2,}(?![\w-])"
)

# --- IP addresses --------------------------------------------------------------------------

# The guard against a preceding character sits after the first digit: a pattern that starts
# with a character class lets ``re`` skip ahead to candidates instead of trying every position.
IPV4 = re.compile(r"\d(?<![\w.]\d)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?!\w|\.\w)")
IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])"
)
_VERSION_CONTEXT = re.compile(r"\b(?:version|release|v|ver\.?|python|rev\.?)\s*$", re.IGNORECASE)
_GLOBAL_V6 = ipaddress.IPv6Network("2000::/3")


def _public_ipv4(text: str, m: re.Match[str]) -> bool:
    try:
        addr = ipaddress.IPv4Address(m.group())
    except ValueError:
        return False
    if not addr.is_global or addr.is_multicast:
        return False
    first, *rest = addr.packed
    if first < 10 and max(rest) < 32:  # 1.2.3.4, 2.0.0.11, 3.1.1.3: a version, not an address
        return False
    return not _VERSION_CONTEXT.search(text, max(0, m.start() - 12), m.start())


def _public_ipv6(text: str, m: re.Match[str]) -> bool:
    candidate = m.group()
    # 3+ colons: "a::b" and "a:b:c" are slices and times far more often than addresses
    if candidate.count(":") < 3 or candidate.endswith(":") and not candidate.endswith("::"):
        return False
    try:
        addr = ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return addr in _GLOBAL_V6 and addr.is_global


# --- phone numbers -------------------------------------------------------------------------

_SEP = r"[ \u00a0.\-]"
# (a) +CC then groups, e.g. +49 30 1234567, +1 (555) 123-4567, +390612345678; the + must follow
# a space, an opening bracket, a quote or a label (not 1.0~+20191229111838 or a+12345678)
PHONE_INTL = re.compile(
    r"\+(?<![^\s(:<\"'\[,;=]\+)[1-9]\d{0,2}(?:"
    + _SEP
    + r"?\(\d{1,4}\))?(?:"
    + _SEP
    + r"?\d{1,5}){1,6}"
    r"(?![\w.\-]?\d)"
)
# (b) NANP: (555) 123-4567 or 555-123-4567
PHONE_NANP = re.compile(
    r"[(\d](?<![\w(+\-.][(\d])(?:(?<=\()\d{3}\)[ \u00a0]?|(?<=\d)\d{2}-)\d{3}-\d{4}(?![\w\-]|\.\d)"
)
# (c) after a label
_PHONE_LABELS = "tel|phone|fax|mobile|cell|telefon|telefono|teléfono|téléphone"
PHONE_LABELLED = re.compile(
    rf"(?<!\w)(?:{_PHONE_LABELS})\.?:?\s*\+?[\d(][\d ()./\-]{{5,22}}\d", re.IGNORECASE
)
_LABEL = re.compile(r"^\D*?(?=\+?[\d(])")


def _phone(text: str, m: re.Match[str]) -> bool:
    raw = m.group()
    digits = sum(c.isdigit() for c in raw)
    # "+3.140000" is a signed float; dotted phone numbers have at least three dots
    return 7 <= digits <= 15 and raw.count(".") in (0, 3, 4, 5, 6)


def _phone_span(m: re.Match[str]) -> tuple[int, int]:
    """Keep a label such as ``Tel:`` outside the redaction."""
    label = _LABEL.match(m.group())
    return m.start() + (label.end() if label else 0), m.end()


# --- payment cards -------------------------------------------------------------------------

CARD = re.compile(r"\d(?<![\w\-]\d)(?:[ \-]?\d){12,18}(?![\w]|[ \-]\d)")
# Issuer prefixes (IIN ranges) and the lengths their cards have.
_CARD_ISSUERS = [
    (re.compile(r"4"), {13, 16, 19}),  # Visa
    (re.compile(r"5[1-5]|2(?:22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)"), {16}),  # Mastercard
    (re.compile(r"3[47]"), {15}),  # American Express
    (re.compile(r"6(?:011|5|4[4-9])"), set(range(16, 20))),  # Discover
    (re.compile(r"35(?:2[89]|[3-8])"), set(range(16, 20))),  # JCB
    (re.compile(r"3(?:0[0-5]|[689])"), set(range(14, 20))),  # Diners Club
    (re.compile(r"62"), set(range(16, 20))),  # UnionPay
]


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_grouping_ok(raw: str) -> bool:
    """Compact, or the way cards are printed: 4-4-4-4(-1..3), 4-6-5 (Amex), 4-6-4 (Diners)."""
    groups = re.split(r"[ \-]", raw)
    if len(groups) == 1:
        return True
    if (" " in raw) == ("-" in raw):
        return False
    sizes = [len(g) for g in groups]
    if sizes in ([4, 6, 5], [4, 6, 4]):
        return True
    return all(s == 4 for s in sizes[:-1]) and 1 <= sizes[-1] <= 4 and len(sizes) >= 4


def _card(text: str, m: re.Match[str]) -> bool:
    raw = m.group()
    if not _card_grouping_ok(raw):
        return False
    digits = raw.replace(" ", "").replace("-", "")
    issuer_ok = any(p.match(digits) and len(digits) in n for p, n in _CARD_ISSUERS)
    return issuer_ok and luhn_ok(digits)


# --- IBAN ----------------------------------------------------------------------------------

# ISO 13616 registry lengths (SWIFT IBAN registry).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip
IBAN = re.compile(r"[A-Z](?<!\w[A-Z])[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?!\w)")


def iban_ok(compact: str) -> bool:
    """ISO 7064 mod 97-10 over the rearranged IBAN (letters A=10 … Z=35)."""
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _iban_span(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    """The IBAN inside the candidate: the country's length, cut at a group boundary."""
    length = IBAN_LENGTHS.get(m.group()[:2])
    if length is None:
        return None
    seen = 0
    for pos in range(m.start(), m.end()):
        if text[pos] != " ":
            seen += 1
            if seen == length:
                end = pos + 1
                if end < m.end() and text[end] != " ":
                    return None
                compact = text[m.start() : end].replace(" ", "")
                return (m.start(), end) if iban_ok(compact) else None
    return None


# --- the redactor --------------------------------------------------------------------------


@dataclass(frozen=True)
class Detector:
    kind: str
    pattern: re.Pattern[str]
    # -> accepted span of the match, or None
    accept: Callable[[str, re.Match[str]], tuple[int, int] | None]
    # RE2 regex (pyarrow) that every text holding a match also matches: a cheap, vectorised
    # first pass over the batch, so the Python regex runs only on the texts that can match
    prefilter: str
    # a character every match contains: the regex then runs only within ``reach`` of each one
    anchor: str | None = None
    reach: int = 0

    def finditer(self, text: str) -> Iterator[re.Match[str]]:
        if self.anchor is None:
            yield from self.pattern.finditer(text)
            return
        n = len(text)
        pos = text.find(self.anchor)
        while pos != -1:
            hi = min(n, pos + self.reach)
            m = self.pattern.search(text, max(0, pos - self.reach), hi)
            while m is not None and m.end() <= pos:  # a match of an earlier anchor
                m = self.pattern.search(text, m.end(), hi)
            if m is None or m.start() > pos:
                pos = text.find(self.anchor, pos + 1)
                continue
            if m.end() == hi < n:  # cut by the window: match again on the whole text
                m = self.pattern.match(text, m.start()) or m
            yield m
            pos = text.find(self.anchor, max(m.end(), pos + 1))


def _spanned(ok: Callable[[str, re.Match[str]], bool]) -> Callable[..., tuple[int, int] | None]:
    return lambda text, m: m.span() if ok(text, m) else None


def _phone_accept(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    return _phone_span(m) if _phone(text, m) else None


DETECTORS = (
    # local part ≤ 64 and domain ≤ 253 characters (RFC 5321)
    Detector("email", EMAIL, _spanned(lambda t, m: True), r"\S@\S*\.", anchor="@", reach=256),
    Detector("iban", IBAN, _iban_span, r"[A-Z]{2}\d{2} ?[A-Z0-9]{4} ?[A-Z0-9]{4}"),
    Detector("credit_card", CARD, _spanned(_card), r"\d(?:[ \-]?\d){12}"),
    Detector("ip", IPV4, _spanned(_public_ipv4), r"\d\.\d{1,3}\.\d{1,3}\.\d"),
    Detector("ip", IPV6, _spanned(_public_ipv6), r":[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:"),
    Detector("phone", PHONE_INTL, _phone_accept, r"\+[1-9]"),
    Detector("phone", PHONE_NANP, _phone_accept, r"\d{3}-\d{4}"),
    Detector(
        "phone",
        PHONE_LABELLED,
        _phone_accept,
        rf"(?i)(?:{_PHONE_LABELS})\.?:?[\s\pZ\x1c-\x1f\x85]*\+?[\d(]",
    ),
)
_PRIORITY = {"email": 0, "iban": 1, "credit_card": 2, "ip": 3, "phone": 4}


def _detectors(kinds: frozenset[str]) -> tuple[Detector, ...]:
    return tuple(d for d in DETECTORS if d.kind in kinds)


def find_pii(text: str, detectors: Iterable[Detector] = DETECTORS) -> list[tuple[int, int, str]]:
    """Non-overlapping ``(start, end, kind)`` spans of PII in ``text``, in order."""
    found: list[tuple[int, int, str]] = []
    for det in detectors:
        for m in det.finditer(text):
            span = det.accept(text, m)
            if span is not None:
                found.append((span[0], span[1], det.kind))
    found.sort(key=lambda s: (s[0], -(s[1] - s[0]), _PRIORITY[s[2]]))
    spans: list[tuple[int, int, str]] = []
    for start, end, kind in found:
        if spans and start < spans[-1][1]:
            continue
        spans.append((start, end, kind))
    return spans


def redact(text: str, detectors: Iterable[Detector] = DETECTORS) -> tuple[str, dict[str, int]]:
    """``text`` with PII replaced by typed placeholders, and the count per type."""
    counts = dict.fromkeys(PII_TYPES, 0)
    spans = find_pii(text, detectors)
    if not spans:
        return text, counts
    parts: list[str] = []
    cursor = 0
    for start, end, kind in spans:
        parts.append(text[cursor:start])
        parts.append(PLACEHOLDERS[kind])
        counts[kind] += 1
        cursor = end
    parts.append(text[cursor:])
    return "".join(parts), counts


def score(table: pa.Table, cfg: PIIConfig) -> pa.Table:
    """Rewrite ``text`` with placeholders and add ``pii_counts`` (struct of per-type counts)."""
    detectors = _detectors(frozenset(t for t in PII_TYPES if getattr(cfg, t)))
    text_col = table["text"]
    # which detectors can match which rows: one vectorised RE2 pass per detector
    may_match = (
        np.stack(
            [
                pc.match_substring_regex(text_col, d.prefilter).to_numpy(zero_copy_only=False)
                for d in detectors
            ]
        )
        if detectors and table.num_rows
        else np.zeros((0, table.num_rows), dtype=bool)
    )
    texts = text_col.to_pylist()
    counts: list[dict[str, int]] = []
    for i in range(len(texts)):
        active = [d for d, hit in zip(detectors, may_match[:, i], strict=True) if hit]
        if active:
            texts[i], c = redact(texts[i], active)
        else:
            c = dict.fromkeys(PII_TYPES, 0)
        counts.append(c)
    col = table.column_names.index("text")
    out = table.set_column(col, table.schema.field("text"), pa.array(texts, pa.large_string()))
    return out.append_column(
        pa.field("pii_counts", PII_COUNTS_TYPE), pa.array(counts, type=PII_COUNTS_TYPE)
    )


def total_items(table: pa.Table) -> np.ndarray:
    """PII items per document, summed over types."""
    counts = table["pii_counts"].combine_chunks()
    return np.sum([counts.field(t).to_numpy(zero_copy_only=False) for t in PII_TYPES], axis=0)


def rules(table: pa.Table, cfg: PIIConfig) -> Rules:
    if cfg.max_items is None:
        return {}
    return {"pii_dense": total_items(table) > cfg.max_items}


PII = Stage(name="pii", config=PIIConfig, score=score, rules=rules)
