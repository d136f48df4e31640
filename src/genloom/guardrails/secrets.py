"""Credentials in text: API keys and tokens with a known shape (score 1.0), values assigned to a
password/secret/token name (0.8), and long random-looking strings found by their entropy alone
(0.35 to 0.7, hex digests 0.3).

Span labels (they become placeholders like `<GITHUB_TOKEN_1>`): OPENAI_KEY, ANTHROPIC_KEY,
GITHUB_TOKEN, AWS_ACCESS_KEY, AWS_SECRET_KEY, GOOGLE_API_KEY, SLACK_TOKEN, STRIPE_KEY, JWT,
PRIVATE_KEY, PASSWORD (in a connection string or assigned to a secret-sounding name),
BEARER_TOKEN, SECRET (entropy only). A span covers the secret itself: the password of
`postgres://user:pass@host`, the token after `Bearer`, so that redaction leaves the rest."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from genloom.guardrails.scan import Finding, Span


@dataclass(frozen=True)
class Secret:
    span: Span
    score: float


@dataclass(frozen=True)
class KnownKind:
    label: str
    pattern: re.Pattern[str]  # group "v", when present, is the secret; else the whole match
    needs: str  # a substring every match contains: the pattern runs only when it is there


_E = r"(?![A-Za-z0-9_-])"  # a key ends a token


def _starts(prefix: str) -> str:
    """`prefix` at the start of a token. The literal comes first so that the regex engine can
    skip to it; the lookbehind after it checks the character before."""
    return rf"{prefix}(?<![A-Za-z0-9_-]{prefix})"


KNOWN: tuple[KnownKind, ...] = (
    KnownKind("PRIVATE_KEY", re.compile(
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
        r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|$)"), "PRIVATE KEY"),
    KnownKind("ANTHROPIC_KEY", re.compile(rf"{_starts('sk-ant-')}[A-Za-z0-9_-]{{20,}}{_E}"), "sk-ant-"),
    KnownKind("OPENAI_KEY", re.compile(rf"{_starts('sk-')}(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{{20,}}{_E}"),
              "sk-"),
    KnownKind("GITHUB_TOKEN", re.compile(rf"{_starts('gh')}[pousr]_[A-Za-z0-9]{{36,}}{_E}"), "gh"),
    KnownKind("GITHUB_TOKEN", re.compile(rf"{_starts('github_pat_')}[A-Za-z0-9_]{{40,}}{_E}"), "github_pat_"),
    KnownKind("AWS_ACCESS_KEY", re.compile(r"A(?<![A-Z0-9]A)(?:KIA|SIA|BIA|CCA)[A-Z0-9]{16}(?![A-Z0-9])"), "A"),
    KnownKind("GOOGLE_API_KEY", re.compile(rf"{_starts('AIza')}[0-9A-Za-z_-]{{35}}{_E}"), "AIza"),
    KnownKind("SLACK_TOKEN", re.compile(rf"{_starts('xox')}[baprse]-[A-Za-z0-9-]{{10,}}"), "xox"),
    KnownKind("SLACK_TOKEN", re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/]{20,}"), "hooks.slack"),
    KnownKind("STRIPE_KEY", re.compile(rf"(?:{_starts('sk')}|{_starts('rk')})_(?:live|test)_[A-Za-z0-9]{{16,}}{_E}"), "k_"),
    KnownKind("JWT", re.compile(rf"{_starts('eyJ')}[A-Za-z0-9_-]{{8,}}\.eyJ[A-Za-z0-9_-]{{8,}}\.[A-Za-z0-9_-]{{8,}}{_E}"),
              "eyJ"),
    # The password of a URL with credentials (postgres://, mysql://, redis://, amqp://, https://...).
    KnownKind("PASSWORD", re.compile(r"\b[a-z][a-z0-9+.-]{1,20}://[^\s:/@'\"]{1,64}:(?P<v>[^\s@/'\"]{1,128})@[\w.-]+"),
              "://"),
    KnownKind("BEARER_TOKEN", re.compile(
        r"(?i:authorization)[\"']?\s*[:=]\s*[\"']?(?i:bearer|token|basic)\s+(?P<v>[A-Za-z0-9._~+/=-]{8,})"),
        "uthorization"),
    KnownKind("BEARER_TOKEN", re.compile(r"\b(?i:bearer)\s+(?P<v>[A-Za-z0-9._~+/-]{20,}=*)"), "earer"),
)
# Template variables and masks stand in for a secret: ${VAR}, {password}, <token>, ****, xxx.
_TEMPLATE = re.compile(r"^(?:\$\{.*\}|\$[A-Z_]+|\{.*\}|<.*>|%\(.*\)s|\*+|[xX]+|\.\.\.)$")
# Values that documentation assigns to a secret's name; a URL's password is flagged even then.
_EXAMPLE = re.compile(r"(?i)^(?:password|passwd|pass|secret|changeme|your[_-]?\w*|example\w*|redacted|dummy|test\w*"
                      r"|none|null|true|false|placeholder|\w*here)$")

# A 40-character secret access key near an AWS access key id or named as one.
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+])(?P<v>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])")
_AWS_SECRET_NAME = re.compile(r"(?i)aws.{0,20}secret|secret.{0,20}access.{0,5}key")
# name = "value" where the name says it is a secret; matched on the lower-cased text.
_SECRET_NAMES = r"(?:pass(?:word|wd)?|pwd|secret|api[_-]?key|apikey|access[_-]?key|auth[_-]?token|token|private[_-]?key)"
_ASSIGNED = rf"{_SECRET_NAMES}[\w.-]*[\"']?\s*(?:=|:|=>)\s*(?P<q>[\"'`]?)(?P<v>[^\s\"'`,;]{{8,200}})(?P=q)"
_ASSIGNED_LOWER = re.compile(_ASSIGNED)
_ASSIGNED_ANY_CASE = re.compile(_ASSIGNED, re.IGNORECASE)  # where lower-casing changes the length
_PASSWORD_NAME = re.compile(r"pass|pwd")
_HAS_DIGIT = re.compile(r"\d")
_HAS_LETTER = re.compile(r"[A-Za-z]")
_CODE = re.compile(r"[()\[\]]|^[A-Za-z_][\w.]*$")  # an unquoted call, subscript or name: code reading a secret
# Candidates for the entropy test: long runs of base64/URL-safe/hex characters.
_TOKEN = re.compile(r"[A-Za-z0-9+/_=-](?<![A-Za-z0-9+/_=-].)[A-Za-z0-9+/_=-]{19,}(?![A-Za-z0-9+/_=-])")
_HEX = re.compile(r"[0-9a-f]+|[0-9A-F]+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_WORDISH = re.compile(r"[a-z]{4,}|[A-Z][a-z]{3,}")


def entropy(s: str) -> float:
    """Shannon entropy in bits per character."""
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def entropy_score(token: str) -> float:
    """How much a token looks like a random secret: 0 for words, identifiers, paths, UUIDs."""
    core = token.strip("=")
    if len(core) < 20 or _UUID.fullmatch(core):
        return 0.0
    if _HEX.fullmatch(core):
        # A digest (git sha, sha256) is random but rarely a secret: flagged low.
        return 0.3 if len(core) >= 32 and entropy(core) >= 3.0 else 0.0
    classes = sum(1 for test in (str.islower, str.isupper, str.isdigit) if any(test(c) for c in core))
    if classes < 3 and not (classes == 2 and len(core) >= 32):
        return 0.0
    # Identifiers and prose glued together are made of words; random strings have few long runs
    # of letters and seldom two underscores.
    if core.count("_") >= 2 or sum(len(w) for w in _WORDISH.findall(core)) > 0.4 * len(core):
        return 0.0
    # n random characters from 64 symbols carry about 6 - 45/n bits each (fewer than log2(n):
    # some repeat); 99 in 100 such strings stay above that less 0.35.
    if entropy(core) < 6 - 45.4 / len(core) - 0.35:
        return 0.0
    return round(min(0.7, 0.35 + 0.05 * (len(core) - 20) / 4), 2)


class SecretsScanner:
    name = "secrets"
    categories = ("secrets",)
    thresholds = {"secrets": 0.5}  # entropy-only finds (0.35-0.7) count from about 28 characters

    def secrets(self, text: str) -> list[Secret]:
        """Every secret found, with its own score; overlapping finds keep the strongest."""
        found: list[Secret] = []
        for kind in KNOWN:
            if kind.needs not in text:
                continue
            for m in kind.pattern.finditer(text):
                group = "v" if "v" in kind.pattern.groupindex else 0
                if group == "v" and _TEMPLATE.match(m.group("v")):
                    continue
                found.append(Secret(Span(m.start(group), m.end(group), kind.label), 1.0))
        lower = text.lower()
        found.extend(self._aws_secrets(text, lower, found))
        found.extend(self._assigned(text, lower))
        found.extend(self._high_entropy(text))
        return _strongest(found)

    def scan(self, text: str) -> list[Finding]:
        found = self.secrets(text)
        score = max((s.score for s in found), default=0.0)
        return [Finding(self.name, "secrets", score, tuple(s.span for s in found))]

    @staticmethod
    def _aws_secrets(text: str, lower: str, found: list[Secret]) -> Iterator[Secret]:
        key_ids = [s.span for s in found if s.span.label == "AWS_ACCESS_KEY"]
        named = "secret" in lower and _AWS_SECRET_NAME.search(text) is not None
        if not key_ids and not named:
            return
        for m in _AWS_SECRET.finditer(text):
            near = any(abs(m.start() - k.end) < 300 or abs(k.start - m.end()) < 300 for k in key_ids)
            if (near or named) and entropy(m.group()) > 4.0:
                yield Secret(Span(m.start(), m.end(), "AWS_SECRET_KEY"), 1.0)

    @staticmethod
    def _assigned(text: str, lower: str) -> Iterator[Secret]:
        if not any(w in lower for w in ("pass", "pwd", "secret", "key", "token")):
            return
        matches = _ASSIGNED_LOWER.finditer(lower) if len(lower) == len(text) else _ASSIGNED_ANY_CASE.finditer(text)
        for m in matches:
            value = text[m.start("v"):m.end("v")]
            # Code that reads a secret from somewhere (os.environ[...], self.password, f(x)) holds none.
            if _TEMPLATE.match(value) or _EXAMPLE.match(value) or not m.group("q") and _CODE.search(value):
                continue
            label = "PASSWORD" if _PASSWORD_NAME.match(m.group()) else "SECRET"
            # A token or key is random-looking; a plain word after "token_type =" is a name.
            if label == "SECRET" and not (_HAS_DIGIT.search(value) and _HAS_LETTER.search(value)):
                continue
            yield Secret(Span(m.start("v"), m.end("v"), label), 0.8)

    @staticmethod
    def _high_entropy(text: str) -> Iterator[Secret]:
        for m in _TOKEN.finditer(text):
            score = entropy_score(m.group())
            if score:
                yield Secret(Span(m.start(), m.end(), "SECRET"), score)


def _strongest(found: list[Secret]) -> list[Secret]:
    kept: list[Secret] = []
    for s in sorted(found, key=lambda s: (-s.score, s.span.start - s.span.end)):
        if all(s.span.end <= k.span.start or s.span.start >= k.span.end for k in kept):
            kept.append(s)
    return sorted(kept, key=lambda s: s.span.start)
