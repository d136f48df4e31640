"""Text as a scanner should read it: Unicode folded to one plain form, invisible characters
removed, and the obvious obfuscations (base64, hex, Unicode tag characters, spaced letters,
leetspeak, ROT13) decoded into extra views that are scanned as well.

`normalize(text)` is the plain form; `views(text)` is that form first, then one view per decoded
span, each with the offsets in the original text it came from. Ordinary ASCII prose takes the
fast path: no copy, a handful of regex searches that find nothing."""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
from dataclasses import dataclass

# Zero-width and joiner characters, bidi controls, soft hyphen, word joiner and invisible math
# operators, variation selectors, the BOM: characters that split a trigger word without showing.
_INVISIBLE = (
    [0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x3164, 0xFEFF, 0xFFA0]
    + list(range(0x200B, 0x2010))
    + list(range(0x202A, 0x202F))
    + list(range(0x2060, 0x2070))
    + list(range(0xFE00, 0xFE10))
)
_TAG_FIRST, _TAG_LAST = 0xE0000, 0xE007F
_REMOVE = re.compile("[" + "".join(chr(cp) for cp in _INVISIBLE) + f"{chr(_TAG_FIRST)}-{chr(_TAG_LAST)}]")

# Cyrillic and Greek letters that look like Latin ones; folded only inside words that also hold
# Latin letters, so Russian or Greek prose is left as it is.
_LOOKALIKES = "АВЕКМНОРСТХаеорсухіјѕԁһӏԛԝѵΑΒΕΖΗΙΚΜΝΟΡΤΥΧαβεικνορτυχ"
_HOMOGLYPHS = str.maketrans(_LOOKALIKES, "ABEKMHOPCTXaeopcyxijsdhlqwvABEZHIKMNOPTYXabeikvoptux")
_HOMOGLYPH = re.compile(f"[{_LOOKALIKES}]")
_MIXED_WORD = re.compile(rf"\w*[{_LOOKALIKES}]\w*")
_LATIN = re.compile(r"[A-Za-z]")


def normalize(text: str) -> str:
    """NFKC, invisible and tag characters removed, look-alike letters in mixed-script words folded
    to Latin. ASCII text comes back unchanged (the same object)."""
    if text.isascii():
        return text
    if _REMOVE.search(text):
        text = _REMOVE.sub("", text)
    if not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)
    if not text.isascii() and _HOMOGLYPH.search(text):
        text = _MIXED_WORD.sub(_fold_if_mixed, text)
    return text


def _fold_if_mixed(m: re.Match) -> str:
    word = m.group()
    return word.translate(_HOMOGLYPHS) if _LATIN.search(word) else word


def offsets(text: str, normalized: str) -> list[int] | None:
    """For each character of `normalized` plus its end, the offset in `text` it came from; None
    where per-character normalisation does not reproduce `normalized` (combining sequences), so a
    caller falls back to naming the whole text."""
    if normalized is text:
        return list(range(len(text) + 1))
    out: list[int] = []
    for i, ch in enumerate(text):
        out.extend([i] * len(normalize(ch)))
    out.append(len(text))
    return out if len(out) == len(normalized) + 1 else None


@dataclass(frozen=True)
class View:
    """One reading of the text: `how` it was obtained and the span of the original it covers."""

    text: str
    how: str  # normalized | tags | base64 | hex | spaced | leet | rot13
    start: int
    end: int


_BASE64 = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX = re.compile(r"(?<![0-9A-Za-z])(?:[0-9a-fA-F]{2}(?:[ :,]|\\x|0x)?){8,}")
_TAGS = re.compile(f"[{chr(_TAG_FIRST)}-{chr(_TAG_LAST)}]{{4,}}")
_SPACED_HINT = re.compile(r"[ ._*|-]\w[ ._*|-]\w[ ._*|-]")
_SPACED = re.compile(r"(?<!\w)(?:[A-Za-z0-9@$][ ._*|-]{1,3}){4,}[A-Za-z0-9@$](?!\w)")
_LEET_WORD = re.compile(r"\b(?=(?:[0-9@$]*[a-z]){2})(?=(?:[a-z0-9]*?[013457@$]){2})[a-z0-9@$]{4,20}\b", re.IGNORECASE)
_LEET_HINT = re.compile(r"[013457@$][a-zA-Z]")
_LEET = str.maketrans("013457@$", "oieastas")
_COMMON = (" the ", " and ", " to ", " you ", " of ", " is ", " your ", " all ", " this ", " that ", " for ")


def _common_words(lower: str) -> int:
    return sum(lower.count(w) for w in _COMMON)


def views(text: str) -> list[View]:
    """The normalised text first, then each decoded obfuscation (deduplicated). Decoding runs on
    the normalised text except for tag characters, which normalisation removes; offsets of decoded
    views are into the original text when it was ASCII, else approximate (the whole text)."""
    plain = normalize(text)
    out = [View(plain, "normalized", 0, len(text))]
    exact = plain is text
    found: list[View] = []

    def span(m: re.Match) -> tuple[int, int]:
        return (m.start(), m.end()) if exact else (0, len(text))

    if not text.isascii():
        for m in _TAGS.finditer(text):
            decoded = "".join(chr(ord(c) - _TAG_FIRST) for c in m.group() if 0xE0020 <= ord(c) <= 0xE007E)
            if decoded.strip():
                found.append(View(decoded, "tags", m.start(), m.end()))
    for m in _BASE64.finditer(plain):
        run = m.group()
        # A long plain word is not base64: real payloads mix case, digits or symbols.
        if run.isalpha() and (run.islower() or run.isupper()):
            continue
        decoded = _decode_base64(run)
        if decoded:
            found.append(View(decoded, "base64", *span(m)))
    has_digit = any(d in plain for d in "0123456789")
    if has_digit:  # hex-encoded text always has digits (ASCII letters are 0x41-0x7a)
        for m in _HEX.finditer(plain):
            decoded = _decode_hex(m.group())
            if decoded:
                found.append(View(decoded, "hex", *span(m)))
    if _SPACED_HINT.search(plain):
        for m in _SPACED.finditer(plain):
            decoded = _despace(m.group())
            if decoded:
                found.append(View(decoded, "spaced", *span(m)))
    if (has_digit or "@" in plain or "$" in plain) and _LEET_HINT.search(plain) and _LEET_WORD.search(plain):
        deleeted = _LEET_WORD.sub(lambda m: m.group().translate(_LEET), plain)
        found.append(View(deleeted, "leet", 0, len(text)))
    # ROT13 only where it turns text with few common English words into text with many.
    lower = plain.lower()
    rot = codecs.encode(lower, "rot13")
    hint = "rot13" in lower or "rot-13" in lower or "caesar" in lower
    if hint or _common_words(rot) > 2 * _common_words(lower) + 2:
        found.append(View(codecs.encode(plain, "rot13"), "rot13", 0, len(text)))

    seen = {plain}
    for v in found:
        if v.text not in seen:
            seen.add(v.text)
            out.append(v)
    return out


def _printable(s: str) -> bool:
    good = sum(ch.isprintable() or ch in "\n\r\t" for ch in s)
    return good >= 0.9 * len(s) and sum(ch.isalpha() for ch in s) >= 0.5 * len(s)


def _decode_base64(run: str) -> str | None:
    s = run.rstrip("=").replace("-", "+").replace("_", "/")
    s = s[: len(s) - len(s) % 4] if len(s) % 4 == 1 else s + "=" * (-len(s) % 4)
    try:
        decoded = base64.b64decode(s, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    return decoded if len(decoded) >= 8 and _printable(decoded) else None


def _decode_hex(run: str) -> str | None:
    digits = re.sub(r"\\x|0x|[ :,]", "", run)
    try:
        decoded = bytes.fromhex(digits[: len(digits) // 2 * 2]).decode("utf-8")
    except ValueError:
        return None
    return decoded if len(decoded) >= 6 and _printable(decoded) else None


def _despace(run: str) -> str | None:
    # Wider gaps between letters mark word breaks ("i g n o r e   a l l").
    words = re.split(r"[ ._*|-]{2,}", run)
    decoded = " ".join(re.sub(r"[ ._*|-]", "", w) for w in words)
    return decoded if sum(ch.isalpha() for ch in decoded) >= 5 else None
