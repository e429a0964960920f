"""PII: detect and redact e-mails, public IPs, phone numbers, payment cards, IBANs, US SSNs and
secrets (keys, tokens, passwords).

Each detector finds candidate spans and keeps those its validator accepts; spans of all detectors
are resolved in one pass (overlaps go to the earlier, then longer, span; e-mails win ties) and
replaced by typed placeholders (``<EMAIL>``, ...; inside a URL a URL-safe word such as
``redacted-email``, so ``mailto:`` and Message-ID links stay URLs). ``text`` is rewritten;
``pii_counts`` is a struct column of per-type counts. Nothing is removed unless ``max_items`` is
set (reason ``pii_dense``); a document longer than ``max_doc_chars`` is quarantined
(``pii_doc_too_large``) instead of being scanned or kept unredacted.

Cost: every pattern runs in time linear in the text. E-mails are found from each ``@`` (a
literal the regex engine skips to) with the domain matched forward by atomic labels and the local
part matched backward within 64 characters; number patterns check the character before a
candidate after its first character, so a run of digits, dots or separators is entered once.

Detectors see a normalised view of the text (fullwidth forms as ASCII, ``%40`` as ``@``,
zero-width characters and soft hyphens dropped); spans map back to the original text.

What counts, and why:
- e-mail: permissive local part (quoted too), a domain of dot-separated labels ending in a
  letters-only or punycode (``xn--``) TLD. A domain wrapped across a line break (PDF text:
  ``control@bugs.⏎debian.org``, or ``bugs. debian.org`` once lines are joined) is one address.
- IP: IPv4 (zero-padded octets too) redacted only when globally routable unicast. A quad of
  small numbers (all < 32: ``8.8.8.8``, but also ``12.2.1.1``, ``3.11.2.1``) needs address
  context (a word such as "dns", "server", "ping", "IP", a port or prefix length, a URL); any quad
  after a version word, with a Debian epoch/revision, or opening a heading line is not an address.
  IPv6 only in the global unicast block 2000::/3. Private, loopback, documentation ranges stay.
- phone: international numbers with ``+``; NANP ``(415) 555-2671``, ``415-555-2671``,
  ``415.555.2671``, ``415 555 2671``, ``1-415-555-2671``; national numbers with a trunk ``0``
  and 10–12 digits in groups (UK, DE, FR, IN, JP, CN landlines), BR ``(11) 91234-5678``, CN and
  IN mobiles; each shape checked (area codes, group sizes, no neighbouring digit groups), and the
  most ambiguous ones (IN mobiles, compact digits) only after a label such as ``Tel:``.
- credit card: 13–19 digits, compact or grouped as printed (separators space, dash or dot,
  mixed too), a known issuer prefix and a valid Luhn check digit.
- IBAN: country code, check digits and BBAN (upper or lower case; grouped by 4 with spaces or
  hyphens, or compact), the country's exact length and a valid ISO 7064 mod-97 check.
- SSN: ``123-45-6789`` with the SSA's validity rules (no area 000/666/9xx, group 00, serial 0000).
- secret: AWS access key ids, private-key blocks, GitHub/Slack/Google/Stripe/npm tokens, JWTs,
  ``Bearer`` tokens, and values assigned to names such as ``password``, ``DB_PASSWORD``,
  ``secret``, ``token``, ``api_key`` (a password needs a non-word value; other names need a long,
  high-entropy value, as detect-secrets does); the value is redacted, the name stays.
"""

from __future__ import annotations

import ipaddress
import math
import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from curate.stage import ERROR_COLUMN, Rules, Stage

PII_TYPES = ("email", "ip", "phone", "credit_card", "iban", "ssn", "secret")
PLACEHOLDERS = {
    "email": "<EMAIL>",
    "ip": "<IP_ADDRESS>",
    "phone": "<PHONE>",
    "credit_card": "<CREDIT_CARD>",
    "iban": "<IBAN>",
    "ssn": "<SSN>",
    "secret": "<SECRET>",
}
# inside a URL: characters a URL may hold, so the link keeps its shape (and a host stays a host)
URL_PLACEHOLDERS = {kind: "redacted-" + kind.replace("_", "-") for kind in PII_TYPES}
PII_COUNTS_TYPE = pa.struct([pa.field(t, pa.int32()) for t in PII_TYPES])
TOO_LARGE = "pii_doc_too_large"
Span = tuple[int, int]


class PIIConfig(BaseModel):
    """Which PII types to redact; optional removal of documents dense in PII."""

    model_config = ConfigDict(extra="forbid")

    email: bool = True
    ip: bool = True
    phone: bool = True
    credit_card: bool = True
    iban: bool = True
    ssn: bool = True
    secret: bool = True
    max_items: int | None = Field(
        None, ge=0, description="remove documents with more PII items than this (None: never)"
    )
    max_doc_chars: int | None = Field(
        16_000_000,
        ge=1,
        description=f"quarantine longer documents ({TOO_LARGE}) instead of scanning them",
    )


# --- the normalised view -------------------------------------------------------------------

_FULLWIDTH = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
_HIDDEN = "\u00ad\u200b\u200c\u200d\u2060\ufeff"
_NEEDS_VIEW = re.compile(rf"[{_HIDDEN}\u3000\uff01-\uff5e]")
_VIEW_EDITS = re.compile(rf"[{_HIDDEN}]+|%40", re.IGNORECASE)
# the same test in RE2 syntax, for the vectorised prefilter
_NEEDS_VIEW_RE2 = r"(?i)[\x{00ad}\x{200b}-\x{200d}\x{2060}\x{feff}\x{3000}\x{ff01}-\x{ff5e}]|%40"


class View:
    """``text`` as the detectors see it, and the way back to positions in ``text``."""

    __slots__ = ("text", "_at", "_shift")

    def __init__(self, text: str, needed: bool | None = None) -> None:
        """``needed``: whether ``text`` holds anything to normalise, when the caller knows."""
        self._at: list[int] = []  # view positions where the shift changes
        self._shift: list[int] = []  # original = view + shift from there on
        if needed is None:
            needed = "%40" in text or _NEEDS_VIEW.search(text) is not None
        if not needed:
            self.text = text
            return
        text = text.translate(_FULLWIDTH)
        parts: list[str] = []
        cursor = length = shift = 0
        for m in _VIEW_EDITS.finditer(text):
            parts.append(text[cursor : m.start()])
            length += m.start() - cursor
            repl = "@" if m.group()[0] == "%" else ""
            parts.append(repl)
            length += len(repl)
            shift += len(m.group()) - len(repl)
            self._at.append(length)
            self._shift.append(shift)
            cursor = m.end()
        parts.append(text[cursor:])
        self.text = "".join(parts)

    def original(self, start: int, end: int) -> Span:
        if not self._at:
            return start, end
        return start + self._shift_at(start), end - 1 + self._shift_at(end - 1) + 1

    def _shift_at(self, pos: int) -> int:
        i = bisect_right(self._at, pos)
        return self._shift[i - 1] if i else 0


# --- e-mail --------------------------------------------------------------------------------

_LOCAL_CHARS = r"\w.!#$%&'*+~-"
# A standalone pattern (linear: the look-behind lets a local part start only where one begins,
# and the possessive run never backtracks), for callers that want plain matches.
EMAIL = re.compile(
    rf"(?<![{_LOCAL_CHARS}])[{_LOCAL_CHARS}]++@(?:(?>[^\W_](?:[\w-]{{0,61}}[^\W_])?)\.)+"
    r"(?:xn--[a-z0-9-]{2,59}|[^\W\d_]{2,63})(?![\w-])",
    re.IGNORECASE,
)
_LOCAL_TAIL = re.compile(rf"[{_LOCAL_CHARS}]{{1,64}}+\Z")
_LABEL = r"(?>[^\W_](?:[\w-]{0,61}[^\W_])?)"
_TLD = r"(?:xn--[a-z0-9-]{2,59}|[^\W\d_]{2,63})(?![\w-])"
_AT = re.compile(rf"@(?=(?:{_LABEL}\.)+{_TLD})", re.IGNORECASE)
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+{_TLD}", re.IGNORECASE)
# a line break inside an address (PDF text), or the one space a line join left after a dot
_WRAP_HEAD = re.compile(rf"(?:{_LABEL}\.)*")
_BREAK = re.compile(r"[ \t]{0,8}\r?\n[ \t]{0,8}(?=[a-z0-9])|(?<=[.@]) (?=[a-z0-9])")
_WRAPPED_TLD = re.compile(
    r"(?:com|org|net|edu|gov|info|io|de|fr|uk|jp|cn|ru|nl|eu|ch|se|fi|dk|pl|cz|br|au|ca)"
    r"(?![\w-]|\.\w)"
)
_BARE_TLD = re.compile(r"(?:xn--[a-z0-9-]{2,59}|[a-z]{2,63})(?![\w-])")
# candidates for a wrapped domain: an "@" or "@label." at the end of a line
_AT_BREAK = re.compile(rf"@(?:{_LABEL}\.)*(?:[ \t]*\r?\n| (?=[a-z0-9]))", re.IGNORECASE)


def _local_start(text: str, at: int) -> int | None:
    """Start of the local part that ends at ``at`` (the ``@``), or None."""
    if at and text[at - 1] == '"':  # "john doe"@example.com
        opening = text.rfind('"', max(0, at - 66), at - 1)
        if opening != -1 and "\n" not in text[opening:at]:
            return opening
    m = _LOCAL_TAIL.search(text, max(0, at - 64), at)
    if m is None:
        return None
    start = m.start()
    while start < at and text[start] == ".":
        start += 1
    if text.startswith(("%3C", "%3c"), start) and start + 3 < at:  # msgid-search/%3Cid%40host%3E
        start += 3
    return start if start < at else None


def _domain_end(text: str, at: int) -> int | None:
    """End of the domain after the ``@`` at ``at``, across a line wrap if there is one."""
    m = _DOMAIN.match(text, at + 1)
    if m is not None:
        end = m.end()
        # lists.debian.⏎org: a complete domain, continued by a common TLD on the next line
        if end < len(text) and text[end] == ".":
            b = _BREAK.match(text, end + 1)
            if b is not None and "\n" in b.group():
                tld = _WRAPPED_TLD.match(text, b.end())
                if tld is not None:
                    end = tld.end()
        return end
    head = _WRAP_HEAD.match(text, at + 1)
    b = _BREAK.match(text, head.end())
    if b is None:
        return None
    m = _DOMAIN.match(text, b.end())
    if m is None and head.end() > at + 1:  # user@example.⏎org: "label." then a bare TLD
        m = _BARE_TLD.match(text, b.end())
    return m.end() if m is not None else None


def _find_emails(text: str) -> Iterator[Span]:
    for m in _AT.finditer(text):
        start = _local_start(text, m.start())
        end = _domain_end(text, m.start())
        if start is not None and end is not None:
            yield start, end
    for m in _AT_BREAK.finditer(text):
        if _AT.match(text, m.start()):
            continue  # complete before the break: found above
        start = _local_start(text, m.start())
        end = _domain_end(text, m.start())
        if start is not None and end is not None:
            yield start, end


# --- IP addresses --------------------------------------------------------------------------

# The guard against a preceding character sits after the first digit: a pattern that starts
# with a character class lets ``re`` skip ahead to candidates instead of trying every position.
IPV4 = re.compile(r"\d(?<![\w.]\d)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?!\w|\.\w)")
IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])"
)
_VERSION_BEFORE = re.compile(
    r"(?:\b(?:version|versions|release|v|ver\.?|rev\.?|python\d?|perl|ruby|php|java|gcc|clang|"
    r"llvm|node|openssl|zlib|glibc|libc|kernel|linux|firefox|chrome|build|upgrade[ds]?|"
    r"updated?|bump(?:ed)?)[^\S\n]*[:=]?[^\S\n]*|==|>=|<=|~=|!=|\d:|[a-zA-Z][\w+.-]*[/_-])$",
    re.IGNORECASE,
)
_REVISION_AFTER = re.compile(r"[-+~][\w.]|\.\d")
_HEADING_BEFORE = re.compile(
    r"(?:^|\n)[^\S\n]*(?:#+|§|\[|(?:section|chapter|part|appendix)\.?)?[^\S\n]*$", re.I
)
# a heading's title: a capital or non-Latin letter, a dash or a quote (a hosts file has a name)
_HEADING_AFTER = re.compile(r"\.[^\S\n]|[^\S\n]+(?:[^\W\d_a-z]|[–—\-„“\"'«])")
_SECTION_BEFORE = re.compile(
    r"(?:section|sect\.|chapter|chap\.|appendix|abschnitt|kapitel|chapitre|sezione|capitolo|"
    r"secci[oó]n|cap[ií]tulo|se[cç][aã]o|hoofdstuk|rozdzia[lł]|avsnitt|afsnit|kapittel|bagian|"
    r"раздел|глава|قسم|بخش|§|\[|第|節|节|章)"
    r"[^\S\n]*$",
    re.IGNORECASE,
)
_SECTION_AFTER = re.compile(r"[^\S\n]*(?:節|节|章|[,–—][^\S\n]*[“”„\"'«「])")
_ADDRESS_CUE = re.compile(
    r"\b(?:ip|ipv4|ips|address(?:es)?|addr|inet|hosts?|hostname|servers?|dns|nameservers?|"
    r"resolvers?|gateway|gw|routers?|ping|traceroute|route|subnet|netmask|connect\w*|peers?|"
    r"proxy|clients?|remote|src|dst|listen\w*|bind|ports?|firewall|iptables|ufw|ssh|telnet|"
    r"https?|tcp|udp|nslookup|dig|whois|curl|wget|ifconfig|interface|eth\d|vpn|ntp|smtp|mx|"
    r"a record|origin|forwarded|x-forwarded-for|login|logged|access(?:ed)?|blocked|banned)\b",
    re.IGNORECASE,
)
_ADDRESS_AFTER = re.compile(r":\d{1,5}(?!\d)|/\d{1,2}(?!\d)|\]")
_GLOBAL_V6 = ipaddress.IPv6Network("2000::/3")


def _line_window(text: str, start: int, end: int, before: int, after: int) -> tuple[str, str]:
    """Up to ``before``/``after`` characters around a span, within its line."""
    lo = max(0, start - before)
    nl = text.rfind("\n", lo, start)
    lo = nl + 1 if nl != -1 else lo
    hi = min(len(text), end + after)
    nl = text.find("\n", end, hi)
    return text[lo:start], text[end : nl if nl != -1 else hi]


def _public_ipv4(text: str, m: re.Match[str]) -> bool:
    parts = m.group().split(".")
    octets = [int(p) for p in parts]
    if max(octets) > 255:
        return False
    addr = ipaddress.IPv4Address(bytes(octets))
    if not addr.is_global or addr.is_multicast:
        return False
    before, after = _line_window(text, m.start(), m.end(), 48, 32)
    if _REVISION_AFTER.match(after) or _VERSION_BEFORE.search(before[-24:]):
        return False  # 1:12.0.0.1-3, python 3.11.2.1, Firefox/2.0.0.11, novas==3.1.1.3
    if before.endswith(("://", "@", "@[")) or _ADDRESS_AFTER.match(after):
        return True  # http://8.8.8.8/, user@[1.1.1.1], 1.1.1.1:53, 8.8.8.0/24
    if _HEADING_BEFORE.search(before) and _HEADING_AFTER.match(after):
        return False  # 12.2.1.1 Section title, 8.3.1.2. Il file /etc/hosts
    if _SECTION_BEFORE.search(before[-16:]) or _SECTION_AFTER.match(after):
        return False  # section 9.2.1.4, 第 9.2.1.4 節, (see 12.2.2.2 – „Network Configuration“)
    cue = _ADDRESS_CUE.search(before) or _ADDRESS_CUE.search(after)
    if max(octets) < 32:  # 8.8.8.8 or 12.2.1.1: an address only where the text says so
        return cue is not None
    return True


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
# (b) numbers written in groups without a country code: (555) 123-4567, 415.555.2671,
# 020 7946 0958, 03-1234-5678, (11) 91234-5678, 089/1234567; the shape decides (_grouped_phone)
PHONE_GROUPED = re.compile(
    r"[(\d](?<![\w(+\-./:,=#$]\d)(?<![\w(+\-./:,=#$]\()(?<!\d[ \u00a0]\d)(?<!\d[ \u00a0]\()"
    r"(?:(?<=\()\d{2,5}\)[ \u00a0]?|(?<!\()\d{0,5}[ \u00a0.\-/])"
    r"(?:\d{1,5}[ \u00a0.\-]){0,4}\d{2,8}"
    r"(?![\w]|[.\-/,]\d)"
)
# (c) after a label
_PHONE_LABELS = (
    "tel|phone|fax|mobile|cell|telefon|telefono|teléfono|téléphone|telefone|celular|handy|"
    "whatsapp|sms|hotline|call|mob|電話|电话|手机|☎"
)
PHONE_LABELLED = re.compile(
    rf"(?:{_PHONE_LABELS})\.?:?[ \t]{{0,4}}(?:(?:at|on|me|us|now)[ \t]{{1,4}})?"
    r"\+?[\d(][\d ()./\-]{5,22}\d",
    re.IGNORECASE,
)
_PHONE_LABEL_WORDS = tuple(dict.fromkeys(w[:3] for w in _PHONE_LABELS.split("|")))
_PHONE_CUE = re.compile(
    rf"(?<![a-z])(?:{_PHONE_LABELS}|contact|kontakt|contacto|reach|ring|dial|number|nummer|numéro)",
    re.I,
)
_LABEL_END = re.compile(r"^\D*?(?=\+?[\d(])")
_SPACE_DIGIT = re.compile(r"[ \u00a0]\d")
_HEX_PAIR_AFTER = re.compile(r"[ \u00a0][0-9A-Fa-f]{2}\b")
_HEX_PAIR_BEFORE = re.compile(r"\b[0-9A-Fa-f]{2}[ \u00a0]$")
_GROUP = re.compile(r"\d+")


def _phone(text: str, m: re.Match[str]) -> bool:
    raw = m.group()
    digits = sum(c.isdigit() for c in raw)
    # "+3.140000" is a signed float; dotted phone numbers have at least three dots
    return 7 <= digits <= 15 and raw.count(".") in (0, 3, 4, 5, 6)


def _grouped_phone_span(text: str, m: re.Match[str]) -> Span | None:
    """The candidate, or the longest prefix of it ending before a space, that is a phone."""
    start, end = m.span()
    while True:
        if _grouped_phone(text, start, end):
            return start, end
        cut = max(text.rfind(" ", start, end), text.rfind("\u00a0", start, end))
        if cut <= start:
            return None
        end = cut


def _grouped_phone(text: str, start: int, end: int) -> bool:
    raw = text[start:end]
    groups = _GROUP.findall(raw)
    sizes = [len(g) for g in groups]
    digits = "".join(groups)
    n = len(digits)
    if n < 9 or n > 12 or len(groups) < 2:
        return False
    seps = {c for c in raw if c in " \u00a0.-/"}
    paren = raw[0] == "("
    if len(seps) > 1 and not (seps <= {" ", "-", "\u00a0"}):
        return False  # 12.34-56 78: no phone mixes dots or slashes with other separators
    if "." in seps and len(groups) == 4 and max(sizes) <= 3:
        return False  # an IPv4 address
    spaced = bool(seps & {" ", "\u00a0"})
    if seps <= {" ", "\u00a0"} and _SPACE_DIGIT.match(text, end):
        return False  # a run of numbers: 12 345 6789 012
    if spaced and (
        _HEX_PAIR_AFTER.match(text, end) or _HEX_PAIR_BEFORE.search(text, max(0, start - 4), start)
    ):
        return False  # a hex dump
    cue = _PHONE_CUE.search(text, max(0, start - 40), start) is not None
    # NANP: area code [2-9]xx; written with spaces or dots, the exchange is [2-9]xx too
    loose = bool(seps & {" ", "\u00a0", "."}) and not paren
    nanp = (sizes == [3, 3, 4] and digits[0] in "23456789" and (digits[3] > "1" or not loose)) or (
        sizes == [1, 3, 3, 4] and digits[0] == "1" and digits[1] in "23456789"
    )
    if nanp and "/" not in seps:
        # 834.345.1254 or 415 555 2671 in a table of numbers: a phone only where the text says so
        return cue or not loose
    if digits[0] == "0" and digits[1] != "0" and 10 <= n <= 12 and min(sizes) >= 2:
        # trunk 0: UK, DE, FR, IT, IN, JP, CN, ... landlines; not "012 013 023 123"
        grouped = sizes[-1] >= 4 or all(s == 2 for s in sizes[1:]) or "-" in seps
        return grouped and (max(sizes) < 9 or cue)
    if paren and sizes in ([2, 4, 4], [2, 5, 4]) and digits[0] != "0":
        return True  # BR: (11) 91234-5678, (21) 2345-6789
    if sizes == [2, 5, 4] and digits[2] == "9" and seps == {" ", "-"}:
        return True  # BR mobile: 11 91234-5678
    if sizes == [3, 4, 4] and digits[0] == "1" and digits[1] in "3456789":
        return True  # CN mobile: 138 0013 8000
    if sizes == [5, 5] and digits[0] in "6789":
        return cue  # IN mobile: 98765 43210
    return False


def _find_labelled_phones(text: str) -> Iterator[Span]:
    for pos in _word_positions(text, _PHONE_LABEL_WORDS):
        if pos and text[pos - 1].isalnum():
            continue
        m = PHONE_LABELLED.match(text, pos)
        if m is not None and _phone(text, m):
            yield _phone_span(m)


def _phone_span(m: re.Match[str]) -> Span:
    """Keep a label such as ``Tel:`` outside the redaction."""
    label = _LABEL_END.match(m.group())
    return m.start() + (label.end() if label else 0), m.end()


# --- payment cards -------------------------------------------------------------------------

CARD = re.compile(
    r"\d(?<![\w\-.,]\d)(?<!\d[ \u00a0]\d)(?:[ \u00a0.\-]?\d){12,18}(?![\w]|[ \u00a0.\-]\d)"
)
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
_CARD_SEP = re.compile(r"[ \u00a0.\-]")


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
    groups = _CARD_SEP.split(raw)
    if len(groups) == 1:
        return True
    sizes = [len(g) for g in groups]
    if sizes in ([4, 6, 5], [4, 6, 4]):
        return True
    return all(s == 4 for s in sizes[:-1]) and 1 <= sizes[-1] <= 4 and len(sizes) >= 4


def _card(text: str, m: re.Match[str]) -> bool:
    raw = m.group()
    if not _card_grouping_ok(raw):
        return False
    digits = _CARD_SEP.sub("", raw)
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
# starts at the check digits (rarer than letters), with the country code checked behind them
IBAN = re.compile(
    r"\d(?<=(?<![\w])[A-Za-z]{2}\d)\d(?:[ \-]?[A-Za-z0-9]{4}){2,7}(?:[ \-]?[A-Za-z0-9]{1,4})?"
    r"(?!\w)"
)


def iban_ok(compact: str) -> bool:
    """ISO 7064 mod 97-10 over the rearranged IBAN (letters A=10 … Z=35)."""
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _iban_span(text: str, m: re.Match[str]) -> Span | None:
    """The IBAN inside the candidate: the country's length, cut at a group boundary."""
    start = m.start() - 2
    length = IBAN_LENGTHS.get(text[start : start + 2].upper())
    if length is None:
        return None
    seen = 0
    for pos in range(start, m.end()):
        if text[pos] not in " -":
            seen += 1
            if seen == length:
                end = pos + 1
                if end < m.end() and text[end] not in " -":
                    return None
                iban = text[start:end]
                letters = [c for c in iban if c.isalpha()]
                if not (all(c.isupper() for c in letters) or all(c.islower() for c in letters)):
                    return None  # mixed case: a word or identifier, not an IBAN
                if " " in iban and "-" in iban:
                    return None
                compact = iban.replace(" ", "").replace("-", "").upper()
                return (start, end) if iban_ok(compact) else None
    return None


# --- US social security numbers ------------------------------------------------------------

SSN = re.compile(r"\d(?<![\w\-.]\d)\d{2}-\d{2}-\d{4}(?![\w\-]|\.\d)")


def _ssn(text: str, m: re.Match[str]) -> bool:
    area, group, serial = m.group().split("-")
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


# --- secrets -------------------------------------------------------------------------------

# Tokens whose prefix says what they are (gitleaks' rules, abridged).
# (no look-behind in front, so ``re`` skips to the prefixes' first letters; _find_tokens checks)
KNOWN_TOKEN = re.compile(
    r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA|ASCA)[A-Z0-9]{16}(?![\w])"  # AWS
    r"|gh[pousr]_[A-Za-z0-9]{36,251}(?![\w])"  # GitHub
    r"|github_pat_[A-Za-z0-9_]{50,255}(?![\w])"
    r"|xox[baprs]-[A-Za-z0-9-]{10,250}(?![\w])"  # Slack
    r"|AIza[\w-]{35}(?![\w])"  # Google API key
    r"|sk_live_[A-Za-z0-9]{20,99}(?![\w])|rk_live_[A-Za-z0-9]{20,99}(?![\w])"  # Stripe
    r"|npm_[A-Za-z0-9]{36}(?![\w])"  # npm
    r"|eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{8,}"  # JWT
)
PRIVATE_KEY = re.compile(r"-----BEGIN[A-Z0-9 ]{0,40} PRIVATE KEY(?: BLOCK)?-----")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/=]{32,}")
_KEY_END = re.compile(r"-----END[A-Z0-9 ]{0,40} PRIVATE KEY(?: BLOCK)?-----")
_BEARER = re.compile(r"[Bb](?<![\w][Bb])earer[ \t]+([A-Za-z0-9._~+/-]{20,}=*)(?![\w])")
# name = value, name: value, name => value, "name": "value", export NAME=value
_PASSWORD_WORDS = r"password|passwd|passphrase|pwd|passwort|mot_de_passe|contraseña"
_SECRET_WORDS = (
    r"secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|auth[_-]?key|"
    r"credentials?|client[_-]?secret|session[_-]?key|signing[_-]?key|encryption[_-]?key"
)
ASSIGNMENT = re.compile(
    rf"(?:(?P<pw>{_PASSWORD_WORDS})|(?P<key>{_SECRET_WORDS}))[\w.-]{{0,40}}[\"']?"
    r"[ \t]{0,8}(?:=>|:=|=|:)[ \t]{0,8}"
    r"(?P<value>\"[^\"\s]{1,256}\"|'[^'\s]{1,256}'|[^\s'\",;<>(){}\[\]]{1,256})",
    re.IGNORECASE,
)
_PLACEHOLDER_VALUE = re.compile(
    r"(?:none|null|nil|true|false|undefined|empty|required|optional|string|str|bytes|int|"
    r"\*+|x+|\.+|-+|_+|<[^>]*>|\$\{?[\w.]+\}?|%\(?\w*\)?[sd]|\{\{.*\}\}|%\w+%|\$\w+|"
    r"(?:your|my|the|some|new|old|example|sample|dummy|fake|test)[\w.-]*|"
    r"changeme|secret|password|passwd|token|\w+_(?:here|placeholder))",
    re.IGNORECASE,
)
# a call, an index, an attribute of something: code, not a literal value
_CODE_VALUE = re.compile(r"[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)+|[A-Za-z_]\w*[(\[]|\w+\(\)")


# a path or a URL: /etc/shadow, hash:/etc/postfix/sasl_passwd, ~/.netrc, ./key.pem
_PATH_VALUE = re.compile(r"[/~.]{0,2}/|\w+:/")
_DIGIT = re.compile(r"\d")
_LETTER = re.compile(r"[^\W\d_]")


def shannon_entropy(s: str) -> float:
    """Bits per character of ``s`` (its own character frequencies)."""
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values()) if n else 0.0


def _secret_value(kind: str, value: str) -> bool:
    quoted = value[:1] in "\"'"
    bare = value[1:-1] if quoted else value
    if len(bare) < 4 or _PLACEHOLDER_VALUE.fullmatch(bare):
        return False
    if not quoted and (_CODE_VALUE.match(bare) or _PATH_VALUE.match(bare)):
        return False
    has_digit = _DIGIT.search(bare) is not None
    has_alpha = _LETTER.search(bare) is not None
    if kind == "pw":
        if quoted:
            return True
        special = any(not c.isalnum() and c not in "_-" for c in bare)
        mixed = bare != bare.lower() and bare != bare.upper()
        return len(bare) >= 6 and (has_digit and has_alpha or special or mixed and has_digit)
    # detect-secrets' generic high-entropy strings: long, letters and digits, little repetition
    if len(bare) < 16 or not (has_digit and has_alpha):
        return False
    hex_only = all(c in "0123456789abcdefABCDEF" for c in bare)
    return shannon_entropy(bare) >= (3.0 if hex_only else 3.5)


def _lower(text: str) -> str:
    """``text`` in lower case, position for position."""
    low = text.lower()
    return low if len(low) == len(text) else "".join(c.lower()[0] for c in text)


def _word_positions(text: str, words: Iterable[str]) -> list[int]:
    """Where any of ``words`` (lower case) starts in ``text``, case-insensitively, in order.

    ``str.find`` per word: far cheaper than a regex alternation that ``re`` tries at every
    position of the text."""
    low = _lower(text)
    found: set[int] = set()
    for word in words:
        pos = low.find(word)
        while pos != -1:
            found.add(pos)
            pos = low.find(word, pos + 1)
    return sorted(found)


def _find_tokens(text: str) -> Iterator[Span]:
    # private-key blocks; each one's search stops at the next header, so the scan stays linear
    headers = list(PRIVATE_KEY.finditer(text))
    end: re.Match[str] | None = None
    searched = False  # an end marker was looked for (and, if None, there is none further on)
    for i, m in enumerate(headers):
        stop = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        if not searched or end is not None and end.start() < m.end():
            end = _KEY_END.search(text, m.end())
            searched = True
        block_end = end.end() if end is not None and end.start() < stop else None
        limit = block_end or min(stop, m.end() + 8192)
        if not _BASE64_RUN.search(text, m.end(), limit):
            continue  # "-----BEGIN RSA PRIVATE KEY----- ... (key in base64) ... -----END"
        if block_end is not None:
            yield m.start(), block_end
        else:  # no end marker: the block runs to the first blank line
            blank = text.find("\n\n", m.end(), limit)
            yield m.start(), blank if blank != -1 else limit
    for m in KNOWN_TOKEN.finditer(text):
        if not m.start() or not (text[m.start() - 1].isalnum() or text[m.start() - 1] in "_/+"):
            yield m.span()
    for m in _BEARER.finditer(text):
        yield m.span(1)


_ASSIGNMENT_WORDS = (
    "pass", "pwd", "mot_de_passe", "contraseña", "secret", "token", "api", "access", "private",
    "auth", "credential", "client", "session", "signing", "encryption",
)  # fmt: skip


def _find_assignments(text: str) -> Iterator[Span]:
    covered = 0  # end of the last value found: keywords inside it are part of it
    for pos in _word_positions(text, _ASSIGNMENT_WORDS):
        if pos < covered or pos and text[pos - 1].isalpha():
            continue  # "bypass:", "compass=" (but DB_PASSWORD= and db.password: count)
        m = ASSIGNMENT.match(text, pos)
        if m is None:
            continue
        value = m.group("value")
        if pos and text[pos - 1] in "?&":  # a URL's query: the value ends at the next "&"
            value = value.split("&", 1)[0]
        if _secret_value("pw" if m.group("pw") else "key", value):
            start = m.start("value")
            quoted = value[0] in "\"'"
            span = (start + 1, start + len(value) - 1) if quoted else (start, start + len(value))
            covered = span[1]
            yield span  # the quotes stay


# --- the redactor --------------------------------------------------------------------------


@dataclass(frozen=True)
class Detector:
    """One kind of PII: ``find`` yields accepted spans of a (normalised) text."""

    kind: str
    find: Callable[[str], Iterable[Span]]
    # RE2 regex (pyarrow) that every text holding a match also matches: a cheap, vectorised
    # first pass over the batch, so the Python detectors run only on the texts that can match
    prefilter: str


def _regex(
    pattern: re.Pattern[str], accept: Callable[[str, re.Match[str]], Span | bool | None]
) -> Callable[[str], Iterator[Span]]:
    def find(text: str) -> Iterator[Span]:
        for m in pattern.finditer(text):
            ok = accept(text, m)
            if ok is True:
                yield m.span()
            elif ok:
                yield ok

    return find


def _phone_accept(text: str, m: re.Match[str]) -> Span | None:
    if _phone(text, m):
        return _phone_span(m)
    start, end = _phone_span(m)
    # +55 11 98692-1002 155 Elm Street: too many digits; the number ends before a spaced group
    while " " in text[start:end]:
        end = text.rindex(" ", start, end)
        raw = text[start:end]
        if 7 <= sum(c.isdigit() for c in raw) <= 15 and raw.count(".") in (0, 3, 4, 5, 6):
            return start, end
    return None


_TOKEN_PREFILTER = (
    r"-----BEGIN|A[KSBCGIPNR][A-Z]{2}[A-Z0-9]{16}|gh[pousr]_|github_pat_|xox[baprs]-|AIza|"
    r"k_live_|npm_|eyJ|[Bb]earer"
)
_ASSIGNMENT_PREFILTER = (
    rf"(?i)(?:{_PASSWORD_WORDS}|{_SECRET_WORDS})[\w.-]{{0,40}}[\"']?[ \t]{{0,8}}[=:]"
)
# the shapes _grouped_phone accepts: NANP, trunk-0 national, BR, CN and IN mobiles
_GROUPED_PHONE_PREFILTER = "|".join(
    p.replace("S", r"[ \x{a0}.\-/]")
    for p in (
        r"\d{3}\)?S{1,2}\d{3}S\d{4}",
        r"(?:^|[^\d.])0\d{1,5}\)?S{1,2}(?:\d{4,8}|\d{2,5}S\d{2,8})",
        r"\d\d\)S?\d{4,5}-\d{4}",
        r"\d\dS\d{5}-\d{4}",
        r"1\d\dS\d{4}S\d{4}",
        r"\d{5}S\d{5}",
    )
)


DETECTORS = (
    Detector("email", _find_emails, r"(?i)\S@(?:\S*\.|[ \t]*\r?\n)|@[^\s@]*\.[ \t]*\r?\n"),
    Detector(
        "iban",
        _regex(IBAN, _iban_span),
        r"\b(?:[A-Z]{2}\d{2}(?:[ \-]?[A-Z0-9]{4}){2}|[a-z]{2}\d{2}(?:[ \-]?[a-z0-9]{4}){2})",
    ),
    Detector("credit_card", _regex(CARD, _card), r"\d(?:[ .\-]?\d){12}"),
    Detector("ip", _regex(IPV4, _public_ipv4), r"\d\.\d{1,3}\.\d{1,3}\.\d"),
    Detector("ip", _regex(IPV6, _public_ipv6), r":[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:"),
    Detector("phone", _regex(PHONE_INTL, _phone_accept), r"\+[1-9]"),
    Detector("phone", _regex(PHONE_GROUPED, _grouped_phone_span), _GROUPED_PHONE_PREFILTER),
    Detector(
        "phone",
        _find_labelled_phones,
        rf"(?i)(?:{_PHONE_LABELS})\.?:?[\s\pZ\x1c-\x1f\x85]*(?:(?:at|on|me|us|now)\s+)?\+?[\d(]",
    ),
    Detector("ssn", _regex(SSN, _ssn), r"\d{3}-\d{2}-\d{4}"),
    Detector("secret", _find_tokens, _TOKEN_PREFILTER),
    Detector("secret", _find_assignments, _ASSIGNMENT_PREFILTER),
)
_PRIORITY = {"secret": 0, "email": 1, "iban": 2, "credit_card": 3, "ssn": 4, "ip": 5, "phone": 6}

# what ends a URL token (a Message-ID link may hold <id@host>, so "<" and ">" do not)
_URL_STOPS = " \t\n\r\"'`"


def _in_url(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` sits inside a URL (``scheme://``, ``mailto:``, ``www.``)."""
    if any(c in _URL_STOPS for c in text[start:end]):
        return False
    lo = max(0, start - 2048)
    cut = max(text.rfind(c, lo, start) for c in _URL_STOPS)
    if cut == -1 and lo:
        return False  # no URL is 2 kB long
    token = text[cut + 1 : start]
    return "://" in token or "mailto:" in token or "news:" in token or token.startswith("www.")


def _detectors(kinds: frozenset[str]) -> tuple[Detector, ...]:
    return tuple(d for d in DETECTORS if d.kind in kinds)


def find_pii(
    text: str, detectors: Iterable[Detector] = DETECTORS, normalise: bool | None = None
) -> list[tuple[int, int, str]]:
    """Non-overlapping ``(start, end, kind)`` spans of PII in ``text``, in order.

    ``normalise``: whether the text needs the normalised view (None: find out)."""
    view = View(text, normalise)
    found: list[tuple[int, int, str]] = []
    for det in detectors:
        for start, end in det.find(view.text):
            found.append((*view.original(start, end), det.kind))
    found.sort(key=lambda s: (s[0], -(s[1] - s[0]), _PRIORITY[s[2]]))
    spans: list[tuple[int, int, str]] = []
    for start, end, kind in found:
        if spans and start < spans[-1][1]:
            continue
        spans.append((start, end, kind))
    return spans


def redact(
    text: str, detectors: Iterable[Detector] = DETECTORS, normalise: bool | None = None
) -> tuple[str, dict[str, int]]:
    """``text`` with PII replaced by typed placeholders, and the count per type."""
    counts = dict.fromkeys(PII_TYPES, 0)
    spans = find_pii(text, detectors, normalise)
    if not spans:
        return text, counts
    parts: list[str] = []
    cursor = 0
    for start, end, kind in spans:
        parts.append(text[cursor:start])
        parts.append(URL_PLACEHOLDERS[kind] if _in_url(text, start, end) else PLACEHOLDERS[kind])
        counts[kind] += 1
        cursor = end
    parts.append(text[cursor:])
    return "".join(parts), counts


def score(table: pa.Table, cfg: PIIConfig) -> pa.Table:
    """Rewrite ``text`` with placeholders and add ``pii_counts`` (struct of per-type counts).

    A document longer than ``max_doc_chars`` is not scanned: its row gets the error
    ``pii_doc_too_large`` (quarantined by the decide step), so it never passes unredacted."""
    detectors = _detectors(frozenset(t for t in PII_TYPES if getattr(cfg, t)))
    text_col = table["text"]
    n = table.num_rows
    # which detectors can match which rows: one vectorised RE2 pass per detector
    if detectors and n:
        may_match = np.stack(
            [
                pc.match_substring_regex(text_col, d.prefilter).to_numpy(zero_copy_only=False)
                for d in detectors
            ]
        )
        # fullwidth forms, hidden characters or %40: the view differs, every detector runs
        needs_view = pc.match_substring_regex(text_col, _NEEDS_VIEW_RE2).to_numpy(
            zero_copy_only=False
        )
        may_match |= needs_view
    else:
        may_match = np.zeros((0, n), dtype=bool)
        needs_view = np.zeros(n, dtype=bool)
    too_large = (
        pc.greater(pc.utf8_length(text_col), cfg.max_doc_chars).to_numpy(zero_copy_only=False)
        if cfg.max_doc_chars is not None and n
        else np.zeros(n, dtype=bool)
    )
    texts = text_col.to_pylist()
    counts: list[dict[str, int]] = []
    errors: list[str | None] = [None] * n
    hits = may_match.T.tolist()
    for i, row_hits in enumerate(hits):
        c = dict.fromkeys(PII_TYPES, 0)
        if too_large[i]:
            errors[i] = TOO_LARGE
            texts[i] = ""  # never carried on unredacted
        elif any(row_hits):
            active = [d for d, hit in zip(detectors, row_hits, strict=True) if hit]
            texts[i], c = redact(texts[i], active, bool(needs_view[i]))
        counts.append(c)
    col = table.column_names.index("text")
    out = table.set_column(col, table.schema.field("text"), pa.array(texts, pa.large_string()))
    out = out.append_column(
        pa.field("pii_counts", PII_COUNTS_TYPE), pa.array(counts, type=PII_COUNTS_TYPE)
    )
    if any(errors):
        if ERROR_COLUMN in out.column_names:
            prior = out[ERROR_COLUMN].to_pylist()
            errors = [p if p is not None else e for p, e in zip(prior, errors, strict=True)]
            out = out.drop_columns([ERROR_COLUMN])
        out = out.append_column(pa.field(ERROR_COLUMN, pa.string()), pa.array(errors, pa.string()))
    return out


def total_items(table: pa.Table) -> np.ndarray:
    """PII items per document, summed over types."""
    counts = table["pii_counts"].combine_chunks()
    return np.sum([counts.field(t).to_numpy(zero_copy_only=False) for t in PII_TYPES], axis=0)


def rules(table: pa.Table, cfg: PIIConfig) -> Rules:
    if cfg.max_items is None:
        return {}
    return {"pii_dense": total_items(table) > cfg.max_items}


PII = Stage(name="pii", config=PIIConfig, score=score, rules=rules)
