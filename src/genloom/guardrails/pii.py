"""Personal data in text, found by regular expressions with validators (checksums, valid ranges,
context words), and the redaction that replaces it with numbered placeholders and puts it back.

Entity labels (they become placeholders like `<EMAIL_1>`): EMAIL, PHONE, CREDIT_CARD (Luhn),
IBAN (mod 97, per-country length), IP_ADDRESS (v4 and v6), US_SSN (valid ranges), UK_NINO,
CA_SIN (Luhn), DE_TAX_ID (ISO 7064 check digit), ES_NIF (DNI and NIE check letter),
IT_FISCAL_CODE (check character), PERSON, ADDRESS. Spans are offsets into the text given: the
scanner reads the original text, so redaction replaces exactly what was found. Presidio was
measured and not taken: docs/guardrails.md says why."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from genloom.guardrails.scan import Finding, Span

_MODELS = Path(__file__).parent / "models"


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# Lengths from the SWIFT IBAN registry; a country not listed here is not accepted.
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def iban_ok(iban: str) -> bool:
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def de_tax_id_ok(digits: str) -> bool:
    """Steuerliche Identifikationsnummer: 11 digits, no leading zero, one digit of the first ten
    twice or three times (never three in a row), the last an ISO 7064 MOD 11,10 check digit."""
    if len(digits) != 11 or digits[0] == "0":
        return False
    counts = sorted((digits[:10].count(d) for d in set(digits[:10])), reverse=True)
    if counts[0] not in (2, 3) or (len(counts) > 1 and counts[1] > 1):
        return False
    if counts[0] == 3 and any(digits[i] == digits[i + 1] == digits[i + 2] for i in range(8)):
        return False
    product = 10
    for ch in digits[:10]:
        s = (int(ch) + product) % 10 or 10
        product = s * 2 % 11
    return (11 - product) % 10 == int(digits[10])


def es_nif_ok(value: str) -> bool:
    value = value.replace("-", "").replace(" ", "")
    number = str("XYZ".index(value[0])) + value[1:-1] if value[0] in "XYZ" else value[:-1]
    return "TRWAGMYFPDXBNJZSQVHLCKE"[int(number) % 23] == value[-1]


_CF_ODD = dict(zip("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                   [1, 0, 5, 7, 9, 13, 15, 17, 19, 21] + [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3,
                                                          6, 8, 12, 14, 16, 10, 22, 25, 24, 23]))


def it_fiscal_code_ok(code: str) -> bool:
    total = 0
    for i, ch in enumerate(code[:15]):
        total += _CF_ODD[ch] if i % 2 == 0 else (int(ch) if ch.isdigit() else ord(ch) - 65)
    return chr(65 + total % 26) == code[15]


def us_ssn_ok(value: str) -> bool:
    digits = re.sub(r"\D", "", value)
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return (area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"
            and digits not in ("078051120", "219099999", "123456789"))  # advertised, never issued


def ip_ok(value: str) -> bool:
    if ":" not in value:
        return True  # the IPv4 pattern only admits valid octets
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return sum(c.isalnum() for c in value) >= 4  # not "::" or "a::b"


_DIGITS = re.compile(r"\d")


def _digits(value: str) -> str:
    return "".join(_DIGITS.findall(value))


_PHONE_CUE = re.compile(r"(?i)(?:phone|tel|telephone|mobile|cell|call|fax|text|whatsapp|sms|contact|number|ring)\b"
                        r"[^\n]{0,24}$")


_EXTENSION = re.compile(r"[ ]?(?:x|ext\.?|extension)[ ]?\d+$")


def phone_ok(text: str, start: int, value: str) -> bool:
    value = _EXTENSION.sub("", value)
    n = len(_digits(value))
    if not 7 <= n <= 15:
        return False
    # A bare run of digits is a phone number where a cue word says so, or in the national
    # format with a trunk 0 (0115 4960914 written without spaces); written with a "+", brackets
    # or separators it reads as one on its own.
    if value.isdigit():
        if value[0] == "0" and value[1] != "0" and n in (10, 11):
            return True
        return 10 <= n <= 12 and _PHONE_CUE.search(text, max(0, start - 40), start) is not None
    return n >= 9 or value.startswith("+")


@dataclass(frozen=True)
class Recognizer:
    """One entity pattern. Each pattern starts with a character class, so the regex engine skips
    ahead to the few places a match can start; the boundary before it is checked by a lookbehind
    placed after that first character. Patterns whose alternatives start differently are tried
    only where `starts` matches (a token beginning with a digit, "+" or "(")."""

    label: str
    pattern: re.Pattern[str]
    check: Callable[[str, int, str], bool] | None = None  # (text, start, value) -> valid
    needs: str | re.Pattern[str] | None = None  # a substring or cheap search that must succeed first
    starts: re.Pattern[str] | None = None

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        if isinstance(self.needs, str):
            if self.needs not in text:
                return
        elif self.needs is not None and self.needs.search(text) is None:
            return
        if self.starts is None:
            matches: Iterable[re.Match[str] | None] = self.pattern.finditer(text)
        else:
            matches = _anchored(self.pattern, self.starts, text)
        for m in matches:
            if m is not None and (self.check is None or self.check(text, m.start(), m.group())):
                yield m.span()


def _anchored(pattern: re.Pattern[str], starts: re.Pattern[str], text: str) -> Iterator[re.Match[str] | None]:
    pos = 0
    for c in starts.finditer(text):
        if c.start() >= pos:
            m = pattern.match(text, c.start())
            if m is not None:
                pos = m.end()
            yield m


def _value(f: Callable[[str], bool]) -> Callable[[str, int, str], bool]:
    return lambda _text, _start, value: f(value)


def ipv4_ok(value: str) -> bool:
    return all(len(octet) == 1 or (octet[0] != "0" and int(octet) < 256) for octet in value.split("."))


_HAS_DIGIT = re.compile(r"\d")
_TOKEN_START = re.compile(r"[\d+(](?<![\w+.(-].)")
_STATES = frozenset("AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM "
                    "NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR GU VI AS MP AA AE AP".split())
# USPS Publication 28 street suffixes and their common abbreviations, plus British ones.
_STREET_SUFFIXES = (
    "Alley Annex Arcade Avenue Bayou Beach Bend Bluffs? Bottom Boulevard Branch Bridge Brooks? Burgs? Bypass Camp "
    "Canyon Cape Causeway Centers? Circles? Cliffs? Club Commons? Corners? Course Courts? Coves? Creek Crescent Crest "
    "Crossing Crossroads? Curve Dale Dam Divide Drives? Estates? Expressway Extensions? Falls? Ferry Fields? Flats? "
    "Fords? Forest Forges? Forks? Fort Freeway Gardens? Gateway Glens? Greens? Groves? Harbors? Haven Heights Highway "
    "Hills? Hollow Inlet Islands? Isle Junctions? Keys? Knolls? Lakes? Land Landing Lane Lights? Loaf Locks? Lodge "
    "Loop Mall Manors? Meadows? Mews Mills? Mission Motorway Mount Mountains? Neck Orchard Oval Overpass Parks? "
    "Parkways? Pass Passage Path Pike Pines? Place Plains? Plaza Points? Ports? Prairie Radial Ramp Ranch Rapids? "
    "Rest Ridges? River Roads? Route Row Rue Run Shoals? Shores? Skyway Springs? Spurs? Squares? Station Stravenue "
    "Stream Streets? Summit Terrace Throughway Trace Track Trafficway Trail Trailer Tunnel Turnpike Underpass Unions? "
    "Valleys? Via Viaduct Views? Villages? Ville Vista Walks? Wall Ways? Wells? Close Rise Wharf Yard Quay Parade "
    "Embankment Broadway St Ave Av Rd Blvd Ln Dr Ct Pl Sq Ter Pkwy Cir Hwy Trl Expy Fwy Cres Cv Xing Hts Mnr Pt Tce"
).split()
_SUFFIX = "(?:" + "|".join(sorted(set(_STREET_SUFFIXES), key=len, reverse=True)) + r")\b\.?"
_STREET_WORD = r"(?:[A-Z][A-Za-z'’.-]*|\d+(?:st|nd|rd|th))"
_UNIT = r"(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Flat|Studio|Room|Rm\.?|Floor|Fl\.?|Building|Bldg\.?|#)[ \t]*[A-Za-z0-9-]+"
_STREET = (rf"(?:[NSEW]\.?[ \t]+)?(?:{_STREET_WORD}[ \t]+){{1,4}}{_SUFFIX}(?:[ \t]+(?:[NS][EW]?|[EW])\b\.?)?"
           rf"(?:,?[ \t]+{_UNIT})?")

RECOGNIZERS: tuple[Recognizer, ...] = (
    Recognizer("CREDIT_CARD", re.compile(r"[2-6](?<![\d-].)\d{3}(?:[ -]?\d){9,15}(?![\d-])"),
               check=_value(lambda v: 13 <= len(_digits(v)) <= 19 and luhn_ok(_digits(v))), needs=_HAS_DIGIT),
    Recognizer("US_SSN", re.compile(r"\d(?<![\d-].)\d{2}([- ])\d{2}\1\d{4}(?![\d-])"), check=_value(us_ssn_ok),
               needs=_HAS_DIGIT),
    Recognizer("CA_SIN", re.compile(r"[1-79](?<![\d-].)\d{2}([- ])\d{3}\1\d{3}(?![\d-])"),
               check=_value(lambda v: luhn_ok(_digits(v))), needs=_HAS_DIGIT),
    Recognizer("DE_TAX_ID", re.compile(r"[1-9](?<![\d-].)\d(?: ?\d{3}){3}(?![\d-])"),
               check=_value(lambda v: de_tax_id_ok(_digits(v))), needs=_HAS_DIGIT),
    Recognizer("UK_NINO", re.compile(
        r"[A-CEGHJ-PR-TW-Z](?<!\w.)[A-CEGHJ-NPR-TW-Z](?<!BG|GB|KN|NK|NT|TN|ZZ) ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"),
               needs=_HAS_DIGIT),
    Recognizer("ES_NIF", re.compile(r"\d(?<!\w.)\d{7}-?[A-HJ-NP-TV-Z]\b"), check=_value(es_nif_ok), needs=_HAS_DIGIT),
    Recognizer("ES_NIF", re.compile(r"[XYZ](?<!\w.)-?\d{7}-?[A-HJ-NP-TV-Z]\b"), check=_value(es_nif_ok),
               needs=_HAS_DIGIT),
    Recognizer("IT_FISCAL_CODE", re.compile(r"[A-Z](?<!\w.)[A-Z]{5}\d{2}[A-EHLMPR-T]\d{2}[A-Z]\d{3}[A-Z]\b"),
               check=_value(it_fiscal_code_ok), needs=_HAS_DIGIT),
    Recognizer("IP_ADDRESS", re.compile(r"\d(?<![\w.].)\d{0,2}(?:\.\d{1,3}){3}(?!\.?\d)"), check=_value(ipv4_ok),
               needs=re.compile(r"\d\.\d")),
    Recognizer("IP_ADDRESS", re.compile(
        r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4}|:)(?![\w:])"),
               check=_value(ip_ok), needs=":"),
    Recognizer("PHONE", re.compile(
        r"(?<![\w+])(?:"
        r"(?:\+1[ .-]?|001[ .-]?|1[ .-])?(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}"  # North American
        r"|\+\d{1,3}(?:[ ]?\(0\))?[ .-]?(?:\(\d{1,5}\)[ .-]?)?\d{1,5}(?:[ .-]?\d{2,8}){0,4}"  # international
        r"|\(0\d{1,5}\)[ .-]?\d{3,8}(?:[ .-]?\d{2,8}){0,2}|0\d{1,5}(?:[ .-]?\d{2,8}){1,4}"  # national, trunk 0
        r"|\d{10,11}"  # bare digits: only with a cue word (phone_ok)
        r")(?:[ ]?(?:x|ext\.?|extension)[ ]?\d{1,6})?(?![\w-])"),
               check=phone_ok, needs=_HAS_DIGIT, starts=_TOKEN_START),
    Recognizer("ADDRESS", re.compile(rf"\d{{1,6}}[A-Za-z]?,?[ \t]+{_STREET}"), needs=_HAS_DIGIT, starts=_TOKEN_START),
    Recognizer("ADDRESS", re.compile(rf"(?:Apt|Apartment|Suite|Ste|Unit|Flat|Studio)\b\.?[ \t]*[A-Za-z0-9-]+,?[ \t]*\n?"
                                     rf"[ \t]*(?:\d{{1,6}}[A-Za-z]?,?[ \t]+)?{_STREET}"), needs=_HAS_DIGIT),
)

_IBAN = re.compile(r"[A-Z](?<!\w.)[A-Z]\d{2}(?: ?[A-Z0-9]){11,30}\b")


def find_ibans(text: str) -> Iterator[Span]:
    """IBANs; one followed by more capitals and digits ("DE89... AND") is cut to its country's length."""
    if _HAS_DIGIT.search(text) is None:
        return
    for m in _IBAN.finditer(text):
        length = _IBAN_LENGTHS.get(m.group()[:2], 0)
        taken, end = 0, m.start()
        while end < m.end() and taken < length:
            taken += text[end] != " "
            end += 1
        if taken == length and iban_ok(text[m.start():end].replace(" ", "")):
            yield Span(m.start(), end, "IBAN")


_EMAIL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
                    r"[A-Za-z]{2,24}\b")
_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")


def find_emails(text: str) -> Iterator[Span]:
    at = text.find("@")
    while at > 0:
        start = at
        while start > 0 and at - start < 64 and text[start - 1] in _EMAIL_LOCAL:
            start -= 1
        while start < at and not text[start].isalnum():
            start += 1
        m = _EMAIL.match(text, start)
        if m is not None:
            yield Span(m.start(), m.end(), "EMAIL")
        at = text.find("@", m.end() if m is not None else at + 1)


_STATE_ZIP = re.compile(r"[A-Z](?<!\w.)[A-Z][ \t]+\d{5}(?:-\d{4})?\b")
_UK_POSTCODE = re.compile(r"[A-PR-UWYZ](?<!\w.)(?:IR ?0AA|[A-HK-Y]?\d[A-Z\d]? ?\d[ABD-HJLNP-UW-Z]{2})\b")
_CITY_BEFORE = re.compile(r"[A-Z][A-Za-z'’.-]+(?:[ \t-][A-Z][A-Za-z'’.-]+){0,3}(?:,[ \t]*\n?[ \t]*|[ \t]*\n[ \t]*|[ \t]+)$")


def find_place_tails(text: str) -> Iterator[Span]:
    """"City, ST 12345" and British postcodes (with the town before them where there is one)."""
    for pattern, plain in ((_STATE_ZIP, False), (_UK_POSTCODE, True)):
        for m in pattern.finditer(text):
            if not plain and m.group()[:2] not in _STATES:
                continue
            city = _CITY_BEFORE.search(text, max(0, m.start() - 48), m.start())
            if city is None and not plain:
                continue
            yield Span(city.start() if city is not None else m.start(), m.end(), "ADDRESS")

# PERSON: a capitalised word followed by another; the first in the first-name list, or after a
# cue (a title, "my name is", a greeting, a sign-off).
_NAME_TAIL = r"(?:['’][A-Z])?[a-zà-öø-ÿ]+(?:[A-Z][a-zà-öø-ÿ]+)?(?:-[A-ZÀ-ÖØ-Þ][a-zà-öø-ÿ]+)?"  # after the capital
_NAME = rf"[A-ZÀ-ÖØ-Þ]{_NAME_TAIL}"
_PARTICLES = r"(?:(?:da|de|del|della|der|di|do|dos|du|la|le|van|von|ten|ter|bin|al)[ \t]+){0,2}"  # "Jan van der Berg"
_FULL = rf"{_NAME}(?:[ \t]+[A-Z]\.)?(?:[ \t]+{_PARTICLES}{_NAME}){{0,2}}"
# Two or three capitalised words (a middle initial allowed); the second and third are read by a
# lookahead so that the next match can start at the second word.
_NAME_PAIR = re.compile(rf"[A-ZÀ-ÖØ-Þ](?<![\w'’].){_NAME_TAIL}[ \t]+(?:[A-Z]\.[ \t]+)?{_PARTICLES}(?=({_NAME})(?:([ -])({_NAME}))?)")
# Each cue runs only where one of its words occurs (a substring test costs far less than a scan).
_CUES: tuple[tuple[tuple[str, ...], bool, re.Pattern[str]], ...] = (
    (("Mr", "Ms", "Mx", "Dr", "Prof", "Sir", "Dame", "Rev", "Lady", "Lord", "Miss"), False,
     re.compile(rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Rev|Lady|Lord)\.?[ \t]+(?P<n>{_FULL})")),
    (("my name", "name:", "call me", "signed", "from:", "attn", "patient:", "contact:"), True,
     re.compile(rf"(?i:\bmy name is|\bmy name's|\bname:|\bcall me|\bsigned:?|\bfrom:|\battn\.?:?|\bpatient:|\bcontact:)"
                rf"[ \t]+(?P<n>{_FULL})")),
    (("Dear", "Hi", "Hello", "Hey", "Good "), False,
     re.compile(rf"\b(?:Dear|Hi|Hello|Hey|Good (?:morning|afternoon|evening))[ \t]+(?P<n>{_FULL})[ \t]*[,!:\n]")),
    (("regards", "best", "thank", "cheers", "sincerely", "yours", "respectfully", "love", "take care"), True,
     re.compile(rf"(?im)^[ \t]*(?:(?:best|kind|warm|warmest)?[ \t]*regards|best(?: wishes)?|thanks|thank you"
                rf"|many thanks|cheers|sincerely|yours(?: truly| sincerely| faithfully)?|respectfully|love|take care"
                rf"|all the best)[,.!]?[ \t]*(?:\r?\n[ \t]*|[ \t]+)(?P<n>{_FULL})[ \t]*$")),
)
# Greeting and sign-off words that follow a cue without being a name.
_NOT_NAMES = frozenset(
    "Sir Madam Sirs All Team Everyone There Folks Guys Customer Colleagues Friends Hiring Manager Support Again "
    "The This That You Your Our We They It He She Thanks Thank Regards Best Please Hope Let Just Here Admin "
    "Director Doctor Professor Mister Dear Hi Hello Hey Good Morning Afternoon Evening".split()
)
# First names that are also ordinary words: they count only before a known surname.
_AMBIGUOUS = frozenset(
    "April May June August Will Mark Bill Grace Hope Joy Faith Rose Summer Autumn Dawn Iris Ruby Crystal Amber "
    "Penny Guy Drew Chase Hunter Miles Lane Dean Art Sky Pat Rich Jack Sue Bob Rob Frank Ray Gene Don Grant Reed "
    "Wade Clay Carol Holly Ivy Jade Pearl Violet Daisy Lily Heather Destiny Harmony Trinity Christian Angel Major "
    "King Royal Prince Price Page Paris Georgia Virginia Carolina Dakota Austin Jordan Brooklyn Sydney Madison "
    "Chelsea Florence Charity Honor Star River Storm Rain Sunny Precious Unique Young West Long Little Bishop "
    "Marshall Baker Sterling Victoria Jersey Kansas Tyler Mason Dallas Phoenix Eden Haven Justice Liberty Olive "
    "Sage Stone Forest Brook Cliff Glen Dale Rocky Skip Buck Sandy Misty Candy Ginger Hazel Jasmine Willow Melody "
    "Blanche Ebony Autumn Raven Ocean Echo Nova Bella Bud Chip Colt Cody Dash Duke Earl Ernest Noble Rex Max Press "
    "Page Bond Stirling Gay Patience Prudence Mercy Constance Temperance Felicity Verity Chance Cash Fox Hill "
    "India Iman Jan Bay Van Dell Lincoln Wesley Cameron Carter Cooper Walker Taylor Parker Spencer Harper "
    "Morgan Mercedes Porsche Chanel Tiffany Lexus Apple Windows Linux Python Ruby Java Swift Rust Go".split()
)
_NOT_SURNAMES = frozenset(
    "The And Of For In On At To By With From Inc Ltd Llc Corp Co Company University College School Street Avenue "
    "Road Lane Drive Park Day Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April "
    "May June July August September October November December I You We He She It They Is Are Was Were Be Has Have "
    "Had Will Would Can Could Should Must May Might Hospital Bank Airport Station Center Centre Hotel Church Group "
    "Foundation Institute Department Team Project Version Edition Series Year Week Month Time Not Also River Lake "
    "Line Memorial Hall Bridge Tower Museum Library Gallery Theatre Theater Stadium Arena Cathedral Chapel Castle "
    "Palace Valley Island Bay Beach Falls Canyon Mountain Mountains Hills Forest Fountain Square Gardens".split()
)


@cache
def _name_lists() -> tuple[frozenset[str], frozenset[str]]:
    def read(name: str) -> frozenset[str]:
        lines = (_MODELS / name).read_text(encoding="utf-8").splitlines()
        return frozenset(line for line in lines if line and not line.startswith("#"))

    return read("first_names.txt"), read("last_names.txt")


def find_people(text: str) -> list[Span]:
    first_names, last_names = _name_lists()
    spans = []
    lower = text.lower()
    for words, folded, cue in _CUES:
        if not any(w in (lower if folded else text) for w in words):
            continue
        for m in cue.finditer(text):
            start, end = m.span("n")
            names = text[start:end].split()
            while names and names[-1] in _NOT_SURNAMES:  # "Dear Anna Thursday" keeps only Anna
                end = len(text[:start + text[start:end].rindex(names.pop())].rstrip())
            if names and names[0] not in _NOT_NAMES:
                spans.append(Span(start, end, "PERSON"))
    for m in _NAME_PAIR.finditer(text):
        first, last = text[m.start():m.end()].split()[0], m.group(1)
        known = first in first_names or ("-" in first and all(p in first_names for p in first.split("-")))
        if not known or (last not in last_names and (last in _NOT_SURNAMES or first in _AMBIGUOUS)):
            continue
        end = m.end(1)
        # A second surname or a middle name: "Mary Ann Smith", "José García-López".
        if m.group(3) is not None and m.group(3) in last_names:
            end = m.end(3)
        spans.append(Span(m.start(), end, "PERSON"))
    return spans


def merge(spans: Iterable[Span]) -> list[Span]:
    """Overlapping spans resolved to the longest (the first given on a tie), in text order."""
    kept: list[Span] = []
    for span in sorted(spans, key=lambda s: s.start - s.end):  # stable: longest first, ties keep order
        if all(span.end <= k.start or span.start >= k.end for k in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: s.start)


_FINDERS: tuple[tuple[str, Callable[[str], Iterable[Span]]], ...] = (
    ("EMAIL", find_emails), ("IBAN", find_ibans), ("ADDRESS", find_place_tails), ("PERSON", find_people),
)
ENTITIES = ("EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "IP_ADDRESS", "US_SSN", "UK_NINO", "CA_SIN", "DE_TAX_ID", "ES_NIF",
            "IT_FISCAL_CODE", "PERSON", "ADDRESS")
_ADDRESS_GAP = re.compile(r"[ \t]*,?[ \t]*\n?[ \t]*")


_NAME_LINE = re.compile(rf"[ \t]*({_FULL})[ \t]*\n[ \t]*$")


def _addressees(text: str, spans: list[Span]) -> list[Span]:
    """The line above an address that holds nothing but a name (a letter's recipient block)."""
    found = []
    for span in spans:
        if span.label == "ADDRESS" and (span.start == 0 or text[span.start - 1] == "\n"):
            line_start = text.rfind("\n", 0, max(0, span.start - 1)) + 1
            m = _NAME_LINE.match(text, line_start, span.start)
            if m is not None and m.group(1).split()[0] not in _NOT_NAMES:
                found.append(Span(m.start(1), m.end(1), "PERSON"))
    return found


def _join_addresses(text: str, spans: list[Span]) -> list[Span]:
    """A street and its "City, ST 12345" (found apart) become one address."""
    out: list[Span] = []
    for span in spans:
        prev = out[-1] if out else None
        if (prev is not None and prev.label == span.label == "ADDRESS"
                and _ADDRESS_GAP.fullmatch(text, prev.end, span.start)):
            out[-1] = Span(prev.start, span.end, "ADDRESS")
        else:
            out.append(span)
    return out




class PiiScanner:
    name = "pii"
    categories = ("pii",)

    def __init__(self, *, entities: Iterable[str] | None = None) -> None:
        """`entities`: the labels to look for (all of ENTITIES by default)."""
        wanted = tuple(entities) if entities is not None else ENTITIES
        unknown = sorted(set(wanted) - set(ENTITIES))
        if unknown:
            raise ValueError(f"unknown PII entities {unknown}; known: {', '.join(ENTITIES)}")
        self.entities = wanted
        self._recognizers = [r for r in RECOGNIZERS if r.label in wanted]

    def spans(self, text: str) -> list[Span]:
        found: list[Span] = []
        for r in self._recognizers:
            found.extend(Span(start, end, r.label) for start, end in r.find(text))
        for label, finder in _FINDERS:
            if label in self.entities:
                found.extend(finder(text))
        spans = _join_addresses(text, merge(found))
        if "PERSON" in self.entities:
            spans = merge(spans + _addressees(text, spans))
        return spans

    def scan(self, text: str) -> list[Finding]:
        spans = self.spans(text)
        return [Finding(self.name, "pii", 1.0 if spans else 0.0, tuple(spans))]


_PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*)_(\d+)>")


class Placeholders:
    """One request's placeholders: the same value gets the same `<LABEL_n>` in every text of the
    request, numbered per label from 1, and each placeholder remembers its original value."""

    def __init__(self) -> None:
        self._by_value: dict[str, str] = {}
        self.originals: dict[str, str] = {}  # placeholder -> original value
        self._counts: dict[str, int] = {}

    def placeholder(self, label: str, value: str) -> str:
        known = self._by_value.get(value)
        if known is not None:
            return known
        n = self._counts[label] = self._counts.get(label, 0) + 1
        made = self._by_value[value] = f"<{label}_{n}>"
        self.originals[made] = value
        return made

    def restore(self, text: str) -> str:
        """`text` with every placeholder of this request replaced by its original value."""
        if not self.originals or "<" not in text:
            return text
        return _PLACEHOLDER.sub(lambda m: self.originals.get(m.group(), m.group()), text)

    def could_start(self, tail: str) -> bool:
        """Whether `tail` may be the beginning of one of this request's placeholders."""
        return any(p.startswith(tail) for p in self.originals)

    def restorer(self) -> StreamRestorer:
        return StreamRestorer(self)


def redact(text: str, spans: Iterable[Span], placeholders: Placeholders) -> str:
    """`text` with each span replaced by its placeholder (overlaps resolved to the longest)."""
    out, pos = [], 0
    for span in merge(spans):
        out.append(text[pos:span.start])
        out.append(placeholders.placeholder(span.label, text[span.start:span.end]))
        pos = span.end
    out.append(text[pos:])
    return "".join(out)


class StreamRestorer:
    """Restores a streamed answer delta by delta: a delta ending in what may be the start of a
    placeholder (`... <EMA`) is held back until the placeholder completes or cannot be one."""

    def __init__(self, placeholders: Placeholders) -> None:
        self._placeholders = placeholders
        self._pending = ""

    def feed(self, delta: str) -> str:
        text = self._pending + delta
        cut = text.rfind("<")
        if cut < 0 or ">" in text[cut:] or not self._placeholders.could_start(text[cut:]):
            cut = len(text)
        self._pending = text[cut:]
        return self._placeholders.restore(text[:cut])

    def flush(self) -> str:
        """What is still held back, at the end of the stream."""
        text, self._pending = self._pending, ""
        return self._placeholders.restore(text)
