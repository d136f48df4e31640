"""The secrets scanner finds keys and tokens of each known kind with spans on the secret itself,
scores entropy-only finds lower, and leaves ordinary prose and code alone."""

from __future__ import annotations

import inspect
import json
import random
import string

import pytest

from genloom.guardrails.secrets import SecretsScanner, entropy_score

scanner = SecretsScanner()
rng = random.Random(3)
ALNUM = string.ascii_letters + string.digits


def r(n: int, alphabet: str = ALNUM) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def found(text: str) -> list[tuple[str, str, float]]:
    return [(s.span.label, text[s.span.start:s.span.end], s.score) for s in scanner.secrets(text)]


KEYS = [
    ("OPENAI_KEY", "sk-" + r(48)),
    ("OPENAI_KEY", "sk-proj-" + r(60, ALNUM + "_-") + "T3BlbkFJ" + r(60, ALNUM + "_-")),
    ("ANTHROPIC_KEY", "sk-ant-api03-" + r(93, ALNUM + "_-") + "AA"),
    ("GITHUB_TOKEN", "ghp_" + r(36)),
    ("GITHUB_TOKEN", "gho_" + r(36)),
    ("GITHUB_TOKEN", "github_pat_" + r(22) + "_" + r(59)),
    ("AWS_ACCESS_KEY", "AKIA" + r(16, string.ascii_uppercase + "234567")),
    ("AWS_ACCESS_KEY", "ASIA" + r(16, string.ascii_uppercase + "234567")),
    ("GOOGLE_API_KEY", "AIza" + r(35, ALNUM + "_-")),
    ("SLACK_TOKEN", "xoxb-" + r(12, string.digits) + "-" + r(12, string.digits) + "-" + r(24)),
    ("STRIPE_KEY", "sk_live_" + r(24)),
    ("STRIPE_KEY", "rk_live_" + r(24)),
    ("JWT", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
]


@pytest.mark.parametrize("label, key", KEYS, ids=[f"{k[0]}-{i}" for i, k in enumerate(KEYS)])
def test_each_known_kind_is_found_with_score_one(label, key):
    for text in (f"my key is {key}, please rotate it", f'client = Client(api_key="{key}")', json.dumps({"k": key})):
        assert found(text) == [(label, key, 1.0)]


def test_private_key_blocks_are_found_whole():
    block = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + r(64) + "\n" + r(40) + "\n-----END OPENSSH PRIVATE KEY-----"
    assert found(f"here:\n{block}\nthanks") == [("PRIVATE_KEY", block, 1.0)]
    truncated = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA"
    assert found(truncated) == [("PRIVATE_KEY", truncated, 1.0)]


def test_aws_secret_key_is_found_next_to_its_key_id():
    secret = r(40, ALNUM + "/+")
    text = f"aws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = {secret}\n"
    assert ("AWS_SECRET_KEY", secret, 1.0) in found(text)


def test_connection_string_and_bearer_spans_cover_only_the_secret():
    assert found("DATABASE_URL=postgres://app:s3cr3t-Pa55@db.internal:5432/main") == [("PASSWORD", "s3cr3t-Pa55", 1.0)]
    assert found("curl -H 'Authorization: Bearer abc123def456ghi789' https://x") == [
        ("BEARER_TOKEN", "abc123def456ghi789", 1.0)]
    assert found("postgres://app:${DB_PASSWORD}@db/main") == []


def test_values_assigned_to_secret_names_score_below_known_kinds():
    assert found('db_password = "Tr0ub4dor&3"') == [("PASSWORD", "Tr0ub4dor&3", 0.8)]
    assert found("password = os.environ['DB_PASSWORD']; token = self.token; token_type = 'unstructured'") == []
    assert found('password = "changeme"') == []


def test_random_strings_without_a_prefix_are_flagged_by_entropy_with_a_lower_score():
    token = r(48, ALNUM + "+/")
    [(label, value, score)] = found(f"use {token} to sign in")
    assert (label, value) == ("SECRET", token) and 0.5 <= score < 1.0
    assert entropy_score("3f786850e387550fdab836ed7e6dc881de23001b") == 0.3  # a hex digest: low
    assert entropy_score("123e4567-e89b-12d3-a456-426614174000") == 0.0  # a UUID


def test_ordinary_prose_and_code_are_not_flagged():
    prose = ("The internationalization_of_applications module manages HTTPConnectionPoolManager objects; "
             "see https://docs.python.org/3/library/json.html#json.JSONEncoder for details. Your token "
             "expires after 30 days, and the secret to good bread is patience.")
    assert scanner.scan(prose)[0].score == 0.0
    code = inspect.getsource(json) + inspect.getsource(string)
    assert [s for s in scanner.secrets(code) if s.score >= scanner.thresholds["secrets"]] == []


def test_scan_reports_one_finding_with_the_best_score():
    text = f"key sk-{r(40)} and digest 3f786850e387550fdab836ed7e6dc881de23001b"
    [finding] = scanner.scan(text)
    assert (finding.scanner, finding.category, finding.score) == ("secrets", "secrets", 1.0)
    assert [s.label for s in finding.spans] == ["OPENAI_KEY", "SECRET"]
