"""Which scanner does what, per stage: the config's defaults, then a tenant's overrides, then a
scenario's, merged field by field (`{"input": {"pii": {"action": "redact"}}}` changes only the
action of the input PII scanner)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from genloom.config import GuardMode, GuardrailSettings, ScannerPolicy

STAGES = ("input", "output")
_OVERRIDABLE = frozenset(STAGES)
_SEVERITY = {GuardMode.OFF: 0, GuardMode.FLAG: 1, GuardMode.REDACT: 2, GuardMode.BLOCK: 3}


class PolicyError(ValueError):
    """Overrides that cannot be used as given; `param` names the field to fix."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def severity(mode: GuardMode) -> int:
    return _SEVERITY[mode]


@dataclass(frozen=True)
class Rule:
    """One scanner's policy at one stage, thresholds resolved."""

    scanner: str
    action: GuardMode
    threshold: float | None  # None: each category's calibrated threshold
    restore: bool


@dataclass(frozen=True)
class StagePolicy:
    rules: tuple[Rule, ...]  # the scanners that are on, in a fixed order

    @property
    def active(self) -> bool:
        return bool(self.rules)


class Policies:
    """Effective policies for a set of overrides, checked against the scanners that exist."""

    def __init__(self, settings: GuardrailSettings, *, scanners: Iterable[str], redacting: Iterable[str]) -> None:
        self._scanners = frozenset(scanners)
        self._redacting = frozenset(redacting)
        self.settings = settings
        self._check(settings, "guardrails")
        self._base = {stage: self._stage(settings, stage) for stage in STAGES}
        self._cached = lru_cache(maxsize=1024)(self._resolve)

    def stage(self, stage: str, overrides: Mapping[str, Any] | None = None) -> StagePolicy:
        if not overrides:
            return self._base[stage]
        return self._cached(json.dumps(overrides, sort_keys=True, separators=(",", ":")))[stage]

    def check_overrides(self, overrides: Any, where: str) -> dict[str, Any]:
        """A tenant's or scenario's `guardrails`, validated (PolicyError names the field); the
        stored form keeps only what was given."""
        if overrides is None:
            return {}
        if not isinstance(overrides, dict):
            raise PolicyError(f"{where} must be an object like {{\"input\": {{\"pii\": {{\"action\": \"redact\"}}}}}}", where)
        for key in overrides:
            if key not in _OVERRIDABLE:
                raise PolicyError(f"unknown field '{key}' in {where}; use input or output", f"{where}.{key}")
        merged = merge(self.settings, overrides, where=where)
        self._check(merged, where)
        return json.loads(json.dumps(overrides))

    def _resolve(self, key: str) -> dict[str, StagePolicy]:
        merged = merge(self.settings, json.loads(key), where="guardrails")
        return {stage: self._stage(merged, stage) for stage in STAGES}

    def _stage(self, settings: GuardrailSettings, stage: str) -> StagePolicy:
        policies: dict[str, ScannerPolicy] = getattr(settings, stage)
        return StagePolicy(tuple(
            Rule(name, p.action, p.threshold, p.restore) for name, p in sorted(policies.items()) if p.action is not GuardMode.OFF
        ))

    def _check(self, settings: GuardrailSettings, where: str) -> None:
        for stage in STAGES:
            for name, p in getattr(settings, stage).items():
                if name not in self._scanners:
                    known = ", ".join(sorted(self._scanners))
                    raise PolicyError(f"{where}.{stage}: no scanner named '{name}'; the scanners are {known}", f"{where}.{stage}.{name}")
                if p.action is GuardMode.REDACT and name not in self._redacting:
                    can = ", ".join(sorted(self._redacting)) or "none"
                    raise PolicyError(
                        f"{where}.{stage}.{name}: '{name}' finds no spans to redact; use flag or block (redact: {can})",
                        f"{where}.{stage}.{name}.action",
                    )
                if p.restore and stage == "output":
                    raise PolicyError(f"{where}.output.{name}.restore: only input redaction can be restored",
                                      f"{where}.output.{name}.restore")


def layered(*overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Overrides laid over each other in order (a tenant's, then a scenario's), per scanner and field."""
    out: dict[str, Any] = {}
    for given in overrides:
        for stage, scanners in (given or {}).items():
            for name, fields in scanners.items():
                out.setdefault(stage, {}).setdefault(name, {}).update(fields)
    return out


def merge(settings: GuardrailSettings, overrides: Mapping[str, Any], *, where: str) -> GuardrailSettings:
    """`settings` with `overrides` laid over it per scanner and field."""
    data = settings.model_dump()
    for stage in STAGES:
        given = overrides.get(stage)
        if given is None:
            continue
        if not isinstance(given, dict):
            raise PolicyError(f"{where}.{stage} must be an object of scanner policies", f"{where}.{stage}")
        for name, fields in given.items():
            if not isinstance(fields, dict):
                raise PolicyError(f"{where}.{stage}.{name} must be an object like {{\"action\": \"block\"}}", f"{where}.{stage}.{name}")
            data[stage][name] = data[stage].get(name, {}) | fields
    try:
        return GuardrailSettings.model_validate(data)
    except ValidationError as e:
        error = e.errors()[0]
        path = ".".join(str(part) for part in error["loc"])
        raise PolicyError(f"{where}.{path}: {error['msg']}", f"{where}.{path}") from None
