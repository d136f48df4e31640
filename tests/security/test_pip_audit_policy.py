"""scripts/pip_audit.py fails CI only for an advisory that has a fix in a direct dependency."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "scripts" / "pip_audit.py"
_spec = importlib.util.spec_from_file_location("pip_audit_script", SCRIPT)
pip_audit = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pip_audit)


def _dep(name: str, *fixes: str) -> dict:
    return {"name": name, "version": "1.0", "vulns": [{"id": f"GHSA-{name}", "fix_versions": list(fixes), "aliases": []}]}


def test_only_a_fixed_advisory_in_a_direct_dependency_fails_the_run():
    report = {"dependencies": [
        _dep("FastAPI", "1.1"),  # direct, fixed: must move the pin
        _dep("fastapi-extra"),  # no fix yet
        _dep("h11", "0.17"),  # transitive: moves with what pulls it in
        {"name": "quiet", "version": "2.0", "vulns": []},
        {"name": "mirror-only", "skip_reason": "Dependency not found on PyPI"},
    ]}
    lines, fatal = pip_audit.judge(report, {"fastapi", "uvicorn"})
    assert fatal == 1
    assert [line.split()[0] for line in lines] == ["MUST", "no", "transitive"]


def test_the_direct_dependencies_are_read_from_pyproject():
    direct = pip_audit.direct_dependencies()
    assert {"fastapi", "uvicorn", "httpx", "torch"} <= direct and "pytest" not in direct
