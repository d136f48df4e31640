#!/usr/bin/env python
"""Audit the installed Python packages for known vulnerabilities with pip-audit, write a report,
and fail only on what Genloom can and must fix.

    python scripts/pip_audit.py [--report-dir build/pip-audit]

Writes `<report-dir>/pip-audit.json` (pip-audit's own report) and `<report-dir>/pip-audit.txt`
(one line per advisory). The exit status is 1 only when an advisory has a fixed version AND
names a direct dependency of Genloom (`[project].dependencies` in pyproject.toml): then the pin
can and must move. An advisory with no fix yet, or in a transitive or test-only package, is
reported and does not fail the run: there is nothing to change here, and a transitive package
moves when the direct one that pulls it in does. When no advisory service answers (the PyPI
JSON API, then OSV; CI without network), it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("pypi", "osv")  # tried in this order
TIMEOUT_S = 600


def direct_dependencies() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(Requirement(spec).name) for spec in project["dependencies"]}


def audit(service: str) -> tuple[dict | None, str]:
    """pip-audit's JSON report from one service, or None and why it could not be had."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        command = [sys.executable, "-m", "pip_audit", "--vulnerability-service", service, "--format", "json",
                   "--progress-spinner", "off", "--skip-editable", "--output", str(out)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return None, f"{service}: no answer within {TIMEOUT_S} s"
        if not out.exists():  # pip-audit writes its report only when it could query the service
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return None, f"{service}: {last[:300]}"
        report = json.loads(out.read_text())
    audited = [d for d in report["dependencies"] if "skip_reason" not in d]
    if not audited:  # e.g. a mirror that is no PyPI JSON API: every package "not found"
        return None, f"{service}: none of {len(report['dependencies'])} packages could be looked up"
    return report, ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report-dir", type=Path, default=ROOT / "build" / "pip-audit")
    args = parser.parse_args()
    args.report_dir.mkdir(parents=True, exist_ok=True)
    summary = args.report_dir / "pip-audit.txt"

    reasons = []
    for service in SERVICES:
        report, why = audit(service)
        if report is not None:
            break
        reasons.append(why)
    else:
        text = "pip-audit: no advisory service could be reached, nothing was audited:\n  " + "\n  ".join(reasons)
        summary.write_text(text + "\n")
        print(text)
        return 0

    (args.report_dir / "pip-audit.json").write_text(json.dumps(report, indent=1))
    lines, fatal = judge(report, direct_dependencies())
    skipped = [d["name"] for d in report["dependencies"] if "skip_reason" in d]
    audited = len(report["dependencies"]) - len(skipped)
    head = (f"pip-audit ({service}): {audited} packages audited, {len(skipped)} skipped, {len(lines)} advisories, "
            f"{fatal} with a fix in a direct dependency")
    text = "\n".join([head, *lines, *(["skipped: " + ", ".join(skipped)] if skipped else [])])
    summary.write_text(text + "\n")
    print(text)
    return 1 if fatal else 0


def judge(report: dict, direct: set[str]) -> tuple[list[str], int]:
    """One line per advisory, and how many must fail the run (a fix exists, in a direct dependency)."""
    lines, fatal = [], 0
    for dep in report["dependencies"]:
        for vuln in dep.get("vulns", []):
            fixes = vuln.get("fix_versions") or []
            must_fix = bool(fixes) and canonicalize_name(dep["name"]) in direct
            fatal += must_fix
            verdict = "MUST FIX" if must_fix else ("no fix yet" if not fixes else "transitive")
            lines.append(f"{verdict:10} {dep['name']} {dep['version']}: {vuln['id']} "
                         f"(aliases: {', '.join(vuln.get('aliases', [])) or 'none'}; fixed in: {', '.join(fixes) or 'none'})")
    return lines, fatal


if __name__ == "__main__":
    sys.exit(main())
