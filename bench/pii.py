"""PII recall on a planted set, redactions on real documents, throughput: one PII module vs another.

Recall: a deterministic set of planted items (>= 300 per family: email, ip, phone, card, iban,
secret; many formats each, see ``FORMATS``), each in a sentence appended to a real paragraph of
data/sample (llvm rst, The Devil's Dictionary). An item counts as redacted when every fragment of
it (the local part and the domain of an e-mail, each group of >= 3 digits, a secret's value) occurs
fewer times in the output than in the input: a partial redaction is a miss.

Real documents: every document of data/sample (code, html, rst, prose, pdf, fortunes, Debian
changelogs and copyright files), read with the project's readers; the redactions per domain and
type, and examples of each, so a false positive can be seen. Throughput: the ``PII`` stage over
those documents, CPU seconds, best of ``--repeat``.

    .venv/bin/python -m bench.pii                                       # this checkout's pii.py
    .venv/bin/python -m bench.pii --module /work/main/curate/filters/pii.py  # another one
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import random
import re
import string
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType

from bench.timing import timed
from curate.schema import docs_table

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
FAMILIES = ("email", "ip", "phone", "card", "iban", "secret")


def load_module(path: str | None) -> ModuleType:
    """This checkout's ``curate.filters.pii``, or the module at ``path`` (e.g. main's)."""
    if path is None:
        import curate.filters.pii as mod

        return mod
    spec = importlib.util.spec_from_file_location("pii_under_test", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["pii_under_test"] = mod
    spec.loader.exec_module(mod)
    return mod


# --- real documents --------------------------------------------------------------------------


def real_documents() -> list[tuple[str, str, str]]:
    """``(domain, source, text)`` for every document of data/sample, read as the pipeline does."""
    from curate.readers.html import extract_html
    from curate.readers.pdf import extract_pdf
    from curate.readers.text import split_fortunes

    docs: list[tuple[str, str, str]] = []
    for p in sorted(SAMPLE.rglob("*")):
        if not p.is_file():
            continue
        kind, rel = p.relative_to(SAMPLE).parts[0], str(p.relative_to(SAMPLE))
        if kind == "html":
            docs.append(("html", rel, extract_html(p.read_text("utf-8", "replace"))))
        elif kind == "pdf":
            docs.append(("pdf", rel, extract_pdf(p.read_bytes()).text))
        elif kind == "fortune" and p.suffix != ".dat":
            text = p.read_text("utf-8", "replace")
            docs += [("fortune", rel, e) for e in split_fortunes(text)]
        elif kind == "prose" or p.suffix == ".gz":
            docs.append((kind, rel, gzip.decompress(p.read_bytes()).decode("utf-8", "replace")))
        elif kind in ("code", "rst", "LICENSES"):
            docs.append((kind, rel, p.read_text("utf-8", "replace")))
    return [d for d in docs if d[2].strip()]


class _HtmlText(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def extra_documents(roots: list[Path]) -> list[tuple[str, str, str]]:
    """Text, Python, rst and HTML (text of the markup, all of it) files under unpacked Debian
    packages, as ``(package, path, text)``: more real documentation to count redactions on."""
    docs = []
    for root in roots:
        for p in sorted(root.rglob("*")):
            if not p.is_file() or p.suffix not in (".txt", ".py", ".rst", ".html", ".htm"):
                continue
            text = p.read_text("utf-8", "replace")
            if p.suffix in (".html", ".htm"):
                parser = _HtmlText()
                parser.feed(text)
                text = "".join(parser.parts)
            docs.append((f"+{root.name}", str(p), text))
    return [d for d in docs if d[2].strip()]


def paragraphs(docs: list[tuple[str, str, str]]) -> list[str]:
    """Real paragraphs (200-1500 characters) of rst and prose documents, to plant items in."""
    out = []
    for domain, _, text in docs:
        if domain in ("rst", "prose"):
            out += [p for p in re.split(r"\n\s*\n", text) if 200 <= len(p) <= 1500]
    return out


# --- the planted set -----------------------------------------------------------------------

FIRST = ["alice", "bruno", "chiara", "dmitri", "elena", "farid", "greta", "hiroshi", "ingrid",
         "jonas", "katya", "lukas", "maria", "nadia", "oscar", "priya", "quentin", "rosa"]  # fmt: skip
LAST = ["schmidt", "rossi", "dupont", "kowalski", "tanaka", "silva", "nguyen", "jensen",
        "garcia", "moreau", "novak", "okafor", "larsen", "weber", "costa"]  # fmt: skip
DOMAINS = ["example.org", "lists.debian.org", "mail.example.net", "posteo.de", "uni-heidelberg.de",
           "company.co.uk", "bugs.debian.org", "fastmail.fm", "riseup.net", "gmx.at"]  # fmt: skip
ZW = "\u200b"


def _fw(s: str) -> str:
    """Fullwidth forms of ASCII characters."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in s)


def _local(r: random.Random) -> str:
    sep = r.choice([".", "_", "", "-", "+"])
    return f"{r.choice(FIRST)}{sep}{r.choice(LAST)}{r.randint(1, 99) if r.random() < 0.4 else ''}"


def email_item(r: random.Random, fmt: str) -> tuple[str, list[str]]:
    local, domain = _local(r), r.choice(DOMAINS)
    labels = domain.split(".")
    if fmt == "plain":
        return f"{local}@{domain}", [local, domain]
    if fmt == "upper":
        return f"{local.upper()}@{domain.upper()}", [local.upper(), domain.upper()]
    if fmt == "punycode":
        d = r.choice(["xn--80ak6aa92e.xn--p1ai", "xn--e1afmkfd.xn--p1ai", "xn--mller-kva.de",
                      "example.xn--p1ai"])  # fmt: skip
        return f"{local}@{d}", [local, d]
    if fmt == "idn":
        d = r.choice(["пример.рф", "почта.рф", "müller.de", "bücher.example"])
        return f"{local}@{d}", [local, d]
    if fmt == "fullwidth_at":
        return f"{local}＠{domain}", [local, domain]
    if fmt == "quoted":
        q = f'"{r.choice(FIRST)} {r.choice(LAST)}"'
        return f"{q}@{domain}", [q, domain]
    if fmt == "percent40":
        return f"https://example.org/u/{local}%40{domain}", [local, domain]
    if fmt == "zero_width":
        l2 = local[:3] + ZW + local[3:]
        d2 = labels[0][:2] + ZW + domain[2:]
        return f"{l2}@{d2}", [l2, d2]
    if fmt == "pdf_wrap":  # a line break after a dot of the domain
        cut = r.randrange(1, len(labels))
        d = ".".join(labels[:cut]) + ".\n" + ".".join(labels[cut:])
        return f"{local}@{d}", [local, ".".join(labels[:cut]) + ".", ".".join(labels[cut:])]
    if fmt == "joined_wrap":  # the same after line joining: one space after the dot
        d = labels[0] + ". " + ".".join(labels[1:])
        return f"{local}@{d}", [local, labels[0] + ".", ".".join(labels[1:])]
    if fmt == "angle_name":
        return f"{r.choice(FIRST).title()} {r.choice(LAST).title()} <{local}@{domain}>", [
            local,
            domain,
        ]
    if fmt == "mailto":
        return f"<a href=mailto:{local}@{domain}>", [local, domain]
    if fmt == "msgid_url":
        mid = f"{r.randint(10**7, 10**8)}.{r.randint(1000, 9999)}.{local}"
        return f"https://lists.debian.org/msgid-search/{mid}@{domain}", [mid, domain]
    raise ValueError(fmt)


def _public_ipv4(r: random.Random) -> str:
    import ipaddress

    while True:
        octets = [r.randint(1, 223), r.randint(0, 255), r.randint(0, 255), r.randint(1, 254)]
        if ipaddress.IPv4Address(".".join(map(str, octets))).is_global:
            return ".".join(map(str, octets))


def ip_item(r: random.Random, fmt: str) -> tuple[str, list[str]]:
    if fmt == "well_known":  # public resolvers: small octets, the old version heuristic's victims
        ip = r.choice(["8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "9.9.9.9", "4.2.2.2"])
    elif fmt == "random":
        ip = _public_ipv4(r)
    elif fmt == "zero_padded":
        ip = ".".join(f"{int(o):03d}" for o in _public_ipv4(r).split("."))
    elif fmt == "with_port":
        ip = f"{_public_ipv4(r)}:{r.choice([22, 80, 443, 8080, 5432])}"
    elif fmt == "in_url":
        ip = f"http://{_public_ipv4(r)}/status"
    elif fmt == "ipv6":
        groups = [r.choice(["2a00", "2001", "2600", "2a02", "2c0f"])] + [
            f"{r.randint(1, 0xFFFF):x}" for _ in range(7)
        ]
        ip = ":".join(groups) if r.random() < 0.5 else ":".join(groups[:3]) + "::" + groups[7]
    else:
        raise ValueError(fmt)
    address = re.sub(r"^http://|/status$|:\d+$", "", ip)  # the port and the path are no PII
    return ip, _digit_groups(address) or [address]


def _digits(r: random.Random, n: int) -> str:
    return "".join(r.choice(string.digits) for _ in range(n))


def _nxx(r: random.Random) -> str:
    return str(r.randint(2, 9)) + _digits(r, 2)


def phone_item(r: random.Random, fmt: str) -> tuple[str, list[str]]:
    a, b, c = _nxx(r), _nxx(r), _digits(r, 4)
    shapes = {
        "nanp_parens": f"({a}) {b}-{c}",
        "nanp_dash": f"{a}-{b}-{c}",
        "nanp_dots": f"{a}.{b}.{c}",
        "nanp_spaces": f"{a} {b} {c}",
        "nanp_1dash": f"1-{a}-{b}-{c}",
        "nanp_intl": f"+1 {a} {b} {c}",
        "uk": r.choice([f"020 {r.randint(3, 8)}{_digits(r, 3)} {_digits(r, 4)}",
                        f"0161 {_digits(r, 3)} {_digits(r, 4)}", f"07{_digits(r, 3)} {_digits(r, 6)}",
                        f"+44 20 {r.randint(3, 8)}{_digits(r, 3)} {_digits(r, 4)}"]),
        "de": r.choice([f"030 {_digits(r, 8)}", f"089/{_digits(r, 7)}", f"0171 {_digits(r, 7)}",
                        f"+49 30 {_digits(r, 8)}", f"(030) {_digits(r, 7)}"]),
        "fr": r.choice([f"0{r.randint(1, 7)} " + " ".join(_digits(r, 2) for _ in range(4)),
                        f"0{r.randint(6, 7)}." + ".".join(_digits(r, 2) for _ in range(4)),
                        f"+33 {r.randint(1, 7)} " + " ".join(_digits(r, 2) for _ in range(4))]),
        "in": r.choice([f"+91 {r.randint(6, 9)}{_digits(r, 4)} {_digits(r, 5)}",
                        f"0{r.randint(6, 9)}{_digits(r, 4)} {_digits(r, 5)}",
                        f"022-{r.randint(2, 6)}{_digits(r, 7)}",
                        f"{r.randint(6, 9)}{_digits(r, 4)} {_digits(r, 5)}"]),
        "jp": r.choice([f"03-{_digits(r, 4)}-{_digits(r, 4)}", f"090-{_digits(r, 4)}-{_digits(r, 4)}",
                        f"0120-{_digits(r, 3)}-{_digits(r, 3)}", f"+81 3-{_digits(r, 4)}-{_digits(r, 4)}"]),
        "br": r.choice([f"(11) 9{_digits(r, 4)}-{_digits(r, 4)}", f"(21) {r.randint(2, 5)}{_digits(r, 3)}-{_digits(r, 4)}",
                        f"+55 11 9{_digits(r, 4)}-{_digits(r, 4)}", f"11 9{_digits(r, 4)}-{_digits(r, 4)}"]),
        "cn": r.choice([f"1{r.randint(3, 9)}{_digits(r, 1)} {_digits(r, 4)} {_digits(r, 4)}",
                        f"010-{r.randint(2, 8)}{_digits(r, 7)}", f"+86 138 {_digits(r, 4)} {_digits(r, 4)}",
                        f"021-{r.randint(2, 8)}{_digits(r, 7)}"]),
    }  # fmt: skip
    number = shapes[fmt]
    return number, _digit_groups(number)


def _luhn_complete(prefix: str, length: int, r: random.Random) -> str:
    body = prefix + _digits(r, length - len(prefix) - 1)
    for check in string.digits:
        total = 0
        for i, ch in enumerate(reversed(body + check)):
            d = int(ch)
            if i % 2:
                d = d * 2 - 9 if d > 4 else d * 2
            total += d
        if total % 10 == 0:
            return body + check
    raise AssertionError


def card_item(r: random.Random, fmt: str) -> tuple[str, list[str]]:
    prefix, length = r.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("6011", 16),
                               ("3528", 16), ("62", 16), ("4", 16)])  # fmt: skip
    if fmt == "amex":
        n = _luhn_complete(r.choice(["34", "37"]), 15, r)
        number = f"{n[:4]} {n[4:10]} {n[10:]}"
    else:
        n = _luhn_complete(prefix, length, r)
        g = [n[i : i + 4] for i in range(0, 16, 4)]
        number = {
            "compact": n,
            "spaces": " ".join(g),
            "dashes": "-".join(g),
            "dots": ".".join(g),
            "mixed": f"{g[0]} {g[1]}-{g[2]} {g[3]}",
            "fullwidth": _fw(" ".join(g)).replace(_fw(" "), " "),
        }[fmt]
    return number, _digit_groups(number)


IBAN_SHAPES = {"DE": "8n10n", "FR": "5n5n11n2n", "GB": "4a6n8n", "NL": "4a10n", "ES": "4n4n2n10n",
               "IT": "1a5n5n12n", "BE": "3n7n2n", "CH": "5n12n", "AT": "5n11n", "PL": "8n16n"}  # fmt: skip


def _bban(r: random.Random, shape: str) -> str:
    out = ""
    for count, kind in re.findall(r"(\d+)([an])", shape):
        pool = string.ascii_uppercase if kind == "a" else string.digits
        out += "".join(r.choice(pool) for _ in range(int(count)))
    return out


def iban_item(r: random.Random, fmt: str) -> tuple[str, list[str]]:
    cc = r.choice(sorted(IBAN_SHAPES))
    bban = _bban(r, IBAN_SHAPES[cc])
    numeric = "".join(str(int(c, 36)) for c in bban + cc + "00")
    iban = f"{cc}{98 - int(numeric) % 97:02d}{bban}"
    groups = [iban[i : i + 4] for i in range(0, len(iban), 4)]
    text = {
        "spaced": " ".join(groups),
        "compact": iban,
        "lower": " ".join(groups).lower(),
        "hyphens": "-".join(groups),
    }[fmt]
    return text, [g for g in re.split(r"[ -]", text) if len(g) >= 3] if fmt != "compact" else [text]


def _rand(r: random.Random, pool: str, n: int) -> str:
    return "".join(r.choice(pool) for _ in range(n))


B64 = string.ascii_letters + string.digits + "+/"
ALNUM = string.ascii_letters + string.digits


def _password(r: random.Random) -> str:
    word = r.choice(["Tr0ub4dor", "hunter", "sommer", "Winter", "dragon", "Passw0rt", "letmein"])
    return word + str(r.randint(1, 9999)) + r.choice(["", "!", "#", "&", "$", "?"])


def secret_item(r: random.Random, fmt: str) -> tuple[str, list[str]]:
    if fmt == "aws_key_id":
        v = "AKIA" + _rand(r, string.ascii_uppercase + string.digits, 16)
        return r.choice(["aws_access_key_id = {}", "AWS_ACCESS_KEY_ID={}", "key {}"]).format(v), [v]
    if fmt == "aws_secret":
        v = _rand(r, B64, 40)
        s = r.choice(["aws_secret_access_key = {}", "AWS_SECRET_ACCESS_KEY={}", "secret_key: {}"])
        return s.format(v), [v]
    if fmt == "private_key":
        kind = r.choice(["RSA ", "EC ", "OPENSSH ", "", "DSA "])
        body = [_rand(r, B64, 64) for _ in range(r.randint(2, 5))]
        block = f"-----BEGIN {kind}PRIVATE KEY-----\n" + "\n".join(body)
        return block + f"\n-----END {kind}PRIVATE KEY-----", body
    if fmt == "password":
        v = _password(r)
        s = r.choice(["password: {}", "DB_PASSWORD={}", "export MYSQL_PASSWORD='{}'",
                      '"password": "{}"', "passwd={}", "smtp_password = {}", "Password: {}"])  # fmt: skip
        return s.format(v), [v]
    if fmt == "generic_token":
        v = (
            _rand(r, ALNUM, r.choice([24, 32, 40]))
            if r.random() < 0.6
            else _rand(r, "0123456789abcdef", 32)
        )
        s = r.choice(["secret={}", "api_key = '{}'", "token: {}", "AUTH_TOKEN={}",
                      "client_secret: {}", "?access_token={}"])  # fmt: skip
        return s.format(v), [v]
    if fmt == "github":
        v = r.choice(["ghp_", "gho_", "ghs_"]) + _rand(r, ALNUM, 36)
        if r.random() < 0.3:
            v = "github_pat_" + _rand(r, ALNUM, 22) + "_" + _rand(r, ALNUM, 59)
        return v, [v]
    if fmt == "slack":
        v = f"xox{r.choice('bpa')}-{_digits(r, 12)}-{_digits(r, 12)}-{_rand(r, ALNUM, 24)}"
        return v, [v]
    if fmt == "bearer":
        v = _rand(r, ALNUM + "-_.", 36)
        return f"Authorization: Bearer {v}", [v]
    if fmt == "ssn":
        v = f"{r.randint(1, 665):03d}-{r.randint(1, 99):02d}-{r.randint(1, 9999):04d}"
        return v, [v]
    raise ValueError(fmt)


def _digit_groups(s: str) -> list[str]:
    return [g for g in re.findall(r"[0-9０-９]{3,}", s)]


FORMATS: dict[str, tuple[Callable, list[str], list[str]]] = {
    "email": (
        email_item,
        [
            "plain",
            "upper",
            "punycode",
            "idn",
            "fullwidth_at",
            "quoted",
            "percent40",
            "zero_width",
            "pdf_wrap",
            "joined_wrap",
            "angle_name",
            "mailto",
            "msgid_url",
        ],
        [
            "Please write to {} for details.",
            "Reported-by: {}",
            "Contact: {}",
            "Send your patches to {}.",
            "You can reach the maintainer at {}",
            "(see {})",
            "Questions go to {} and nowhere else.",
            "From: {}",
        ],
    ),  # fmt: skip
    "ip": (
        ip_item,
        ["well_known", "random", "zero_padded", "with_port", "in_url", "ipv6"],
        [
            "The DNS server at {} answered slowly.",
            "ping {}",
            "nameserver {}",
            "Connection from {} port 51234 closed.",
            "The host {} was unreachable for an hour.",
            "Set the resolver to {} in the router.",
            "Our office IP is {}.",
            "Blocked {} after repeated login failures.",
            "Traffic to {} spiked at midnight.",
            "We moved everything to {} last week.",
        ],
    ),  # fmt: skip
    "phone": (
        phone_item,
        [
            "nanp_parens",
            "nanp_dash",
            "nanp_dots",
            "nanp_spaces",
            "nanp_1dash",
            "nanp_intl",
            "uk",
            "de",
            "fr",
            "in",
            "jp",
            "br",
            "cn",
        ],
        [
            "Call me at {} after six.",
            "Phone: {}",
            "Tel. {}",
            "You can reach the office on {}.",
            "Her number is {}.",
            "Fax: {}",
            "Mobile {}",
            "For support ring {} any weekday.",
            "Kontakt: {}",
            "Or just dial {} and ask for Maria.",
            "Ross McFluff: {} 155 Elm Street",
            "{} (office hours 9-17)",
            "Ask Ingrid, {}.",
        ],
    ),  # fmt: skip
    "card": (
        card_item,
        ["compact", "spaces", "dashes", "dots", "mixed", "fullwidth", "amex"],
        [
            "Card number: {}",
            "Paid with {} (exp 09/27).",
            "Please charge {} for the invoice.",
            "Visa {} was declined.",
            "my card is {} thanks",
            "CC {}",
        ],
    ),  # fmt: skip
    "iban": (
        iban_item,
        ["spaced", "compact", "lower", "hyphens"],
        [
            "IBAN: {}",
            "Please transfer the fee to {} by Friday.",
            "Bank account {}",
            "Kontoverbindung: {} (Sparkasse)",
            "Send it to {} quoting the invoice number.",
        ],
    ),  # fmt: skip
    "secret": (
        secret_item,
        [
            "aws_key_id",
            "aws_secret",
            "private_key",
            "password",
            "generic_token",
            "github",
            "slack",
            "bearer",
            "ssn",
        ],
        [
            "{}",
            "Config used in production:\n{}\n",
            "Oops, I committed {} by mistake.",
            "The environment had {} set.",
        ],
    ),  # fmt: skip
}


def planted_set(paras: list[str], per_family: int, seed: int) -> list[dict]:
    """Documents with one planted item each: family, format, text, fragments that must go."""
    r = random.Random(seed)
    items = []
    for family, (make, formats, contexts) in FORMATS.items():
        for i in range(per_family):
            fmt = formats[i % len(formats)]
            value, fragments = make(r, fmt)
            if family == "secret" and fmt == "ssn":
                sentence = r.choice(["SSN: {}", "social security number {}", "ssn={}"])
            else:
                sentence = r.choice(contexts)
            para = r.choice(paras)
            text = para.rstrip() + (" " if r.random() < 0.5 else "\n") + sentence.format(value)
            text += "\n" + r.choice(paras)
            items.append({"family": family, "format": fmt, "text": text, "fragments": fragments})
    return items


def redacted(item: dict, out: str) -> bool:
    return all(out.count(f) < item["text"].count(f) for f in item["fragments"])


def recall(mod: ModuleType, items: list[dict]) -> tuple[dict, dict, list]:
    by_family: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_format: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    misses = []
    # through the stage, so its vectorised prefilters are part of what is measured
    table = docs_table(
        [
            {"id": str(i), "text": it["text"], "source": "planted", "offset": i, "domain": "x",
             "format": "text"}
            for i, it in enumerate(items)
        ]
    )  # fmt: skip
    outs = mod.PII.run(table, mod.PIIConfig()).kept["text"].to_pylist()
    for it, out in zip(items, outs, strict=True):
        ok = redacted(it, out)
        for key, table in (
            (it["family"], by_family),
            (f"{it['family']}/{it['format']}", by_format),
        ):
            table[key][0] += ok
            table[key][1] += 1
        if not ok:
            misses.append((it["family"], it["format"], it["fragments"]))
    return dict(by_family), dict(by_format), misses


def real_redactions(mod: ModuleType, docs: list[tuple[str, str, str]], examples: int):
    counts: Counter[tuple[str, str]] = Counter()
    seen: dict[str, list[str]] = defaultdict(list)
    for domain, source, text in docs:
        for start, end, kind in mod.find_pii(text):
            counts[(domain, kind)] += 1
            ctx = text[max(0, start - 25) : end + 25].replace("\n", "⏎")
            seen[kind].append(f"{domain} {Path(source).name}: …{ctx}…")
    return counts, seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--module", help="path of a pii.py to measure (default: this checkout's)")
    ap.add_argument("--per-family", type=int, default=390)
    ap.add_argument("--seed", type=int, default=20261202)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--examples", type=int, default=8)
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--extra",
        type=Path,
        nargs="*",
        default=[],
        help="unpacked Debian packages: more real documents to count redactions on",
    )
    args = ap.parse_args()
    mod = load_module(args.module)
    docs = real_documents()
    items = planted_set(paragraphs(docs), args.per_family, args.seed)

    fam, fmt, misses = recall(mod, items)
    print(f"module {mod.__file__}\n\nrecall on the planted set ({len(items)} items)")
    for f in FAMILIES:
        ok, n = fam[f]
        print(f"  {f:8s} {ok:4d}/{n:4d} = {ok / n:6.1%}")
    for k, (ok, n) in sorted(fmt.items()):
        print(f"    {k:24s} {ok:3d}/{n:3d}")
    for m in misses[:: max(1, len(misses) // 15)][:15]:
        print("    missed:", m)

    sample = docs
    docs = docs + extra_documents(args.extra)
    counts, seen = real_redactions(mod, docs, args.examples)
    mb = sum(len(t.encode()) for _, _, t in docs) / 1e6
    print(f"\nredactions on data/sample (+ --extra): {len(docs)} documents, {mb:.1f} MB")
    domains = sorted({d for d, _ in counts} | {d for d, _, _ in docs})
    kinds = sorted({k for _, k in counts})
    print("  domain     docs " + " ".join(f"{k:>11s}" for k in kinds))
    per_domain = Counter(d for d, _, _ in docs)
    for d in domains:
        row = " ".join(f"{counts[(d, k)]:11d}" for k in kinds)
        print(f"  {d:9s} {per_domain[d]:5d} {row}")
    for k in kinds:
        print(f"  examples of {k} ({len(seen[k])}, evenly spread):")
        for e in seen[k][:: max(1, len(seen[k]) // args.examples)][: args.examples]:
            print("     ", e)

    table = docs_table(
        [
            {"id": str(i), "text": t, "source": s, "offset": 0, "domain": d, "format": "text"}
            for i, (d, s, t) in enumerate(sample)
        ]
    )
    cpu, wall, _ = timed(lambda: mod.PII.run(table, mod.PIIConfig()), args.repeat)
    n, mb = len(sample), sum(len(t.encode()) for _, _, t in sample) / 1e6
    print(
        f"\nthroughput (PII stage on data/sample, {n} docs, {mb:.1f} MB, best of {args.repeat}): "
        f"{n / cpu:.0f} docs/s/core, {mb / cpu:.2f} MB/s/core (wall {wall:.2f} s)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "recall": fam,
                    "formats": fmt,
                    "real": {f"{d}/{k}": c for (d, k), c in counts.items()},
                    "docs_per_cpu_s": n / cpu,
                    "mb_per_cpu_s": mb / cpu,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
