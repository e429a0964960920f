"""PII redaction on real Debian changelogs/copyright files and on python3.11-doc text."""

from __future__ import annotations

import gzip
import re
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pytest

from curate.filters.pii import (
    DETECTORS,
    PII,
    PII_TYPES,
    PIIConfig,
    find_pii,
    iban_ok,
    luhn_ok,
    redact,
    total_items,
)
from curate.schema import docs_table

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
FULL_PYDOC_RST = (
    Path.home() / ".cache/sluice/debs/python3.11-doc/usr/share/doc/python3.11/html/_sources"
)


def _changelogs() -> dict[str, str]:
    return {
        str(p.relative_to(SAMPLE)): gzip.decompress(p.read_bytes()).decode("utf-8", "replace")
        for p in sorted(SAMPLE.glob("meta/*/changelog*.gz"))
    }


def _copyrights() -> dict[str, str]:
    return {
        str(p.relative_to(SAMPLE)): p.read_text("utf-8", "replace")
        for p in sorted(SAMPLE.glob("LICENSES/*.copyright"))
    }


def _table(texts: dict[str, str]) -> pa.Table:
    return docs_table(
        [
            {"id": str(i), "text": t, "source": s, "offset": 0, "domain": "meta", "format": "text"}
            for i, (s, t) in enumerate(texts.items())
        ]
    )


def _run(texts: dict[str, str], cfg: PIIConfig | None = None) -> dict[str, str]:
    result = PII.run(_table(texts), cfg or PIIConfig())
    return dict(
        zip(result.kept["source"].to_pylist(), result.kept["text"].to_pylist(), strict=True)
    )


def _trailer_emails(changelog: str) -> list[str]:
    """Maintainer e-mails of ' -- Name <email>  date' lines, by plain string splitting."""
    out = []
    for line in changelog.splitlines():
        if line.startswith(" -- ") and "<" in line and ">" in line:
            out.append(line.split("<", 1)[1].split(">", 1)[0])
    return out


def test_every_maintainer_email_is_redacted() -> None:
    changelogs, copyrights = _changelogs(), _copyrights()
    truth: dict[str, list[str]] = {s: _trailer_emails(t) for s, t in changelogs.items()}
    for s, t in copyrights.items():
        truth[s] = re.findall(r"<([^<>\s]+@[^<>\s]+)>", t)
    redacted = _run({**changelogs, **copyrights})
    occurrences = sum(len(v) for v in truth.values())
    distinct = {e for v in truth.values() for e in v}
    # an e-mail is missed as often as it still occurs in the redacted text
    missed = {(s, e): redacted[s].count(e) for s, v in truth.items() for e in set(v)}
    missed = {k: n for k, n in missed.items() if n}
    recall = 1 - sum(missed.values()) / occurrences
    print(
        f"\nmaintainer e-mails: {occurrences} occurrences, {len(distinct)} distinct, "
        f"recall {recall:.4f}, missed {missed}"
    )
    assert occurrences > 1500 and len(distinct) > 100  # the sample really holds this truth
    assert recall >= 0.99


def test_changelog_versions_dates_and_names_survive() -> None:
    """Header versions and trailer dates (parsed independently) are untouched; only e-mails go."""
    changelogs = _changelogs()
    redacted = _run(changelogs)
    headers = trailers = 0
    for source, text in changelogs.items():
        out_lines = set(redacted[source].splitlines())
        for line in text.splitlines():
            if re.match(r"^\S+ \([^)]+\) [^;]+; urgency=", line):
                headers += 1
                assert line in out_lines, line
            elif line.startswith(" -- ") and "<" in line:
                trailers += 1
                email = line.split("<", 1)[1].split(">", 1)[0]
                assert line.replace(email, "<EMAIL>") in out_lines, line
    print(f"\n{headers} version headers and {trailers} dated trailers unchanged")
    assert headers > 500 and trailers > 500


def test_no_partial_email_left() -> None:
    redacted = _run({**_changelogs(), **_copyrights()})
    loose_email = re.compile(r"\w@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")
    glued = re.compile(r"[\w.+%-]<EMAIL>|<EMAIL>[\w@-]|<EMAIL>\.\w")
    for source, text in redacted.items():
        assert not loose_email.search(text), (source, loose_email.search(text))
        assert not glued.search(text), (source, glued.search(text))


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _html_text(path: Path) -> str:
    parser = _Text()
    parser.feed(path.read_text("utf-8"))
    return "".join(parser.parts)


def _technical_texts(full: bool) -> dict[str, str]:
    texts = {str(p): _html_text(p) for p in sorted(SAMPLE.glob("html/python3.11-doc/**/*.html"))}
    texts |= {
        str(p): p.read_text("utf-8", "replace")
        for p in sorted(SAMPLE.glob("code/**/*.*"))
        if p.is_file()
    }
    texts |= {str(p): p.read_text("utf-8") for p in sorted(SAMPLE.glob("rst/**/*.rst.txt"))}
    if full:
        texts |= {str(p): p.read_text("utf-8") for p in sorted(FULL_PYDOC_RST.glob("**/*.txt"))}
    return texts


# An IP or phone match with none of these words within 300 characters is counted as a false
# positive: real addresses and numbers in documentation come with words that say what they are.
_ADDRESS_CUES = re.compile(r"ip|address|addr|host|socket|network|server|client", re.IGNORECASE)
_PHONE_CUES = re.compile(r"phone|tel|fax|call|mobile|contact", re.IGNORECASE)


@pytest.mark.parametrize("full", [False, True], ids=["sample", "full-python-doc-rst"])
def test_technical_text_false_positives(full: bool) -> None:
    if full and not FULL_PYDOC_RST.is_dir():
        pytest.skip(f"{FULL_PYDOC_RST} not unpacked on this machine")
    texts = _technical_texts(full)
    megabytes = sum(len(t.encode()) for t in texts.values()) / 1e6
    matches: list[tuple[str, str, str]] = []
    false_positives = []
    for source, text in texts.items():
        for start, end, kind in find_pii(text):
            if kind not in ("ip", "phone"):
                continue
            window = text[max(0, start - 300) : end + 300]
            matches.append((kind, text[start:end], Path(source).name))
            cues = _ADDRESS_CUES if kind == "ip" else _PHONE_CUES
            if not cues.search(window.replace(text[start:end], "")):
                false_positives.append(matches[-1])
    phones = [m for m in matches if m[0] == "phone"]
    print(
        f"\n{len(texts)} docs, {megabytes:.1f} MB: {len(matches)} ip/phone matches "
        f"({len(matches) / megabytes:.2f}/MB), {len(phones)} phones, "
        f"false positives {len(false_positives)} = {len(false_positives) / megabytes:.3f}/MB"
    )
    for m in matches:
        print("  ", m)
    assert not false_positives
    # Python's docs hold example addresses (socket, ipaddress, logging) but no phone numbers.
    assert len(phones) / megabytes < 0.1
    assert len(matches) / megabytes < 3.0


def test_version_strings_dates_times_are_not_pii() -> None:
    """Shapes from the python docs and changelogs that look numeric but are not PII."""
    text = (
        "zlib 1.2.3.4, novas==3.1.1.3, Firefox/2.0.0.11, GCC 2.7.2.2, version 10.0.0.1, "
        "2010-09-06 22:38:15,292, Mon, 03 Jun 2024 20:14:51 +0200, '+3.140000; -3.140000', "
        "1:2.3.4-5+deb12u1, 0x7fffffffffffffff, 9007199254740993, 1e+308, 12:30:45, "
        "ISBN 978-0-13-110362-7, slice x[2000::2], ::1, fe80::1, 192.168.1.1, 10.0.0.1, "
        "203.0.113.7, 2001:db8::1"
    )
    assert find_pii(text) == [], [text[s:e] for s, e, _ in find_pii(text)]


def test_typed_placeholders_for_each_kind() -> None:
    text = (
        "mail a.b+c@lists.example.org, ip 84.23.112.5 and 2a00:1450:4001:82a::200e, "
        "call +49 30 1234567 or (555) 123-4567 or Tel: 030 12345678, "
        "card 4111 1111 1111 1111 and 378282246310005, iban DE89 3704 0044 0532 0130 00."
    )
    out, counts = redact(text)
    assert counts == {"email": 1, "ip": 2, "phone": 3, "credit_card": 2, "iban": 1}
    assert out == (
        "mail <EMAIL>, ip <IP_ADDRESS> and <IP_ADDRESS>, call <PHONE> or <PHONE> or Tel: <PHONE>, "
        "card <CREDIT_CARD> and <CREDIT_CARD>, iban <IBAN>."
    )


def test_checksums() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB82WEST12345698765433")
    # a failed IBAN is not re-read as a card or phone number
    assert find_pii("DE89 3704 0044 0532 0130 01 is wrong") == []


def test_stage_counts_prefilter_and_optional_removal() -> None:
    texts = {**_changelogs(), **_copyrights(), **_technical_texts(full=False)}
    result = PII.run(_table(texts), PIIConfig())
    assert result.stats.kept == len(texts) and not result.stats.removed
    counts = result.kept["pii_counts"].to_pylist()
    assert set(counts[0]) == set(PII_TYPES)
    # the vectorised prefilter never drops a match: same output as running every detector
    for (_source, text), out, c in zip(
        texts.items(), result.kept["text"].to_pylist(), counts, strict=True
    ):
        assert (out, c) == redact(text, DETECTORS)
    items = total_items(result.kept)
    limit = int(sorted(items)[len(items) // 2])
    dense = PII.run(_table(texts), PIIConfig(max_items=limit))
    assert dense.stats.removed == {"pii_dense": int((items > limit).sum())}
    assert dense.stats.removed["pii_dense"] > 0
    only_email = PII.run(
        _table(texts), PIIConfig(ip=False, phone=False, credit_card=False, iban=False)
    )
    assert all(
        c["email"] >= 0 and c["ip"] == c["phone"] == 0
        for c in only_email.kept["pii_counts"].to_pylist()
    )


def test_config_forbids_unknown_keys() -> None:
    with pytest.raises(ValueError):
        PIIConfig(emails=True)
