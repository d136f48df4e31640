"""Guardrails: the scanners that read requests and answers (prompt injection, PII, secrets,
unsafe content) and the policies that decide what happens to what they find."""
