"""The monthly dependency audit: known vulnerabilities in the configured lock files.

Python requirement files go through ``pip-audit`` (pinned, no resolution: ``--no-deps
--disable-pip``), ``package-lock.json`` through ``npm audit --json --package-lock-only``. Both
only ask their registry's vulnerability service. Nothing is installed or updated: the result is
the findings by severity and the upgrades that would fix them, as a proposal.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, field_validator

from tasks.core.errors import RunbookError
from tasks.core.process import NETWORK_ENVIRONMENT, require_tool, run_command
from tasks.core.reports import CheckResult, Status, markdown_table, timed_check
from tasks.core.retry import ops_task
from tasks.core.runlog import run_logger
from tasks.core.settings import MaintenanceSettings

SYSTEM = "dependencies"
SEVERITIES = ("critical", "high", "moderate", "low", "info", "unrated")
FAILING = {"critical", "high"}
NPM_HINT = "install Node.js and npm (apt-get install npm)"
# What each tool documents it reads from the environment, beyond the base set every child gets:
# its own options (PIP_AUDIT_*, and pip's PIP_* such as an index or certificate; npm's
# npm_config_*), the cache and config directories, and the way out to its service.
PIP_AUDIT_ENVIRONMENT = (*NETWORK_ENVIRONMENT, "PIP_*", "PIP_AUDIT_*", "XDG_CACHE_HOME")
NPM_ENVIRONMENT = (*NETWORK_ENVIRONMENT, "npm_config_*", "NPM_CONFIG_*", "XDG_CONFIG_HOME")


class AuditUnavailable(RunbookError):
    """The audit could not ask its vulnerability service."""


class Finding(BaseModel):
    """One known vulnerability of a package in a lock file (pip-audit or npm audit), and its fix."""

    lock_file: str
    package: str
    version: str
    advisory: str
    severity: str  # one of SEVERITIES; PyPI advisories carry none: "unrated"
    fix: str  # the proposed upgrade, or why there is none

    @field_validator("severity")
    @classmethod
    def _known_severity(cls, value: str) -> str:
        return value if value in SEVERITIES else "unrated"


def _json_output(stdout: str, what: str, registry_hint: str) -> Any:
    try:
        return json.loads(stdout)
    except ValueError:
        raise AuditUnavailable(
            f"{what} gave no report: {stdout.strip()[-300:] or 'no output'}",
            hint=registry_hint,
        ) from None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][-300:] if lines else "no output"


def audit_python(lock: Path, m: MaintenanceSettings) -> tuple[list[Finding], list[str]]:
    """(findings, packages that could not be audited) of a pinned requirements file."""
    args = [
        sys.executable,  # pip-audit is one of our dependencies: the same environment has it
        "-m",
        "pip_audit",
        "--requirement",
        str(lock),
        "--no-deps",
        "--disable-pip",
        "--format=json",
        "--progress-spinner=off",
        f"--vulnerability-service={m.python_audit_service}",
        f"--timeout={max(int(m.audit_deadline_s / 4), 5)}",
    ]
    if m.osv_url:
        args.append(f"--osv-url={m.osv_url}")
    result = run_command(
        args,
        timeout=m.audit_deadline_s,
        inherit=PIP_AUDIT_ENVIRONMENT,
        check=False,
        what=f"pip-audit {lock.name}",
    )
    hint = (
        f"pip-audit could not reach the {m.python_audit_service} vulnerability service; check "
        "the network path to it (proxy, firewall) and run the audit again"
    )
    if result.returncode not in (0, 1) or not result.stdout.strip():
        raise AuditUnavailable(
            f"pip-audit failed on {lock}: {_last_line(result.stderr)}",
            hint=hint,
        )
    report = _json_output(result.stdout, f"pip-audit {lock}", hint)
    findings, skipped = [], []
    for dep in report.get("dependencies", []):
        if dep.get("skip_reason"):
            skipped.append(f"{dep.get('name')}: {dep['skip_reason']}")
        for vuln in dep.get("vulns", []):
            fixes = vuln.get("fix_versions") or []
            findings.append(
                Finding(
                    lock_file=str(lock),
                    package=dep["name"],
                    version=dep.get("version", "?"),
                    advisory=" ".join(
                        [", ".join([vuln.get("id", "?"), *vuln.get("aliases", [])[:2]])]
                        + [str(vuln.get("description") or "")[:120]]
                    ).strip(),
                    severity="unrated",
                    fix=f"upgrade to {fixes[0]}" if fixes else "no fixed release yet",
                )
            )
    if skipped and len(skipped) == len(report.get("dependencies", [])):
        raise AuditUnavailable(
            f"the {m.python_audit_service} vulnerability service knew none of the "
            f"{len(skipped)} packages of {lock} ({skipped[0]})",
            hint=hint + "; a proxy that serves only the package index answers this way",
        )
    return findings, skipped


def _npm_fix(fix: Any) -> str:
    if isinstance(fix, dict):
        major = " (semver major: test before)" if fix.get("isSemVerMajor") else ""
        return f"upgrade {fix.get('name')} to {fix.get('version')}{major}"
    return "npm audit fix resolves it" if fix else "no fixed release yet"


def audit_node(lock: Path, m: MaintenanceSettings) -> tuple[list[Finding], list[str]]:
    """Findings of a package-lock.json (npm audit, without installing anything)."""
    args = [
        require_tool("npm", hint=NPM_HINT),
        "audit",
        "--json",
        "--package-lock-only",
        "--fetch-retries=1",
    ]
    if m.npm_registry:
        args.append(f"--registry={m.npm_registry}")
    result = run_command(
        args,
        timeout=m.audit_deadline_s,
        inherit=NPM_ENVIRONMENT,
        cwd=lock.parent,
        check=False,
        what=f"npm audit {lock}",
    )
    hint = (
        "npm could not reach the registry's audit endpoint (POST /-/npm/v1/security/advisories/"
        "bulk); check the registry setting, proxy and network, and run the audit again"
    )
    report = _json_output(result.stdout, f"npm audit {lock}", hint)
    if "error" in report or "vulnerabilities" not in report:
        error = report.get("error") or {}
        reason = report.get("message") or error.get("summary") or error.get("code") or "error"
        raise AuditUnavailable(f"npm audit of {lock} failed: {reason}", hint=hint)
    findings = []
    for name, vuln in sorted(report["vulnerabilities"].items()):
        # one finding per advisory; a package vulnerable only through another names that one
        advisories = [v for v in vuln.get("via", []) if isinstance(v, dict)] or [
            {"title": f"through {', '.join(map(str, vuln.get('via', [])))}"}
        ]
        findings += [
            Finding(
                lock_file=str(lock),
                package=name,
                version=vuln.get("range", "?"),
                advisory=f"{v.get('title', '?')} {v.get('url', '')}".strip(),
                severity=v.get("severity") or vuln.get("severity") or "unrated",
                fix=_npm_fix(vuln.get("fixAvailable")),
            )
            for v in advisories
        ]
    return findings, []


def judge_findings(lock: Path, findings: list[Finding], skipped: list[str]) -> CheckResult:
    """The check of one lock file: fails on a critical or high finding, warns on any other.

    Also warns when packages could not be audited (``skipped``). Metrics:
    ``vulnerabilities.<severity>`` and ``not_audited`` (counts).
    """
    counts = Counter(f.severity for f in findings)
    by_severity = ", ".join(f"{counts[s]} {s}" for s in SEVERITIES if counts[s]) or "none"
    status: Status = "ok"
    if FAILING & set(counts):
        status = "fail"
    elif findings or skipped:
        status = "warn"
    ordered = sorted(findings, key=lambda f: SEVERITIES.index(f.severity))
    detail = "; ".join(f"{f.package} {f.version} [{f.severity}] {f.advisory}" for f in ordered)
    if skipped:
        detail = "; ".join([detail, f"not audited: {'; '.join(skipped)}"] if detail else skipped)
    hints = sorted({f"{f.package}: {f.fix}" for f in findings})
    if skipped:
        hints.append("packages not audited were not found by the vulnerability service")
    return CheckResult(
        name=str(lock),
        status=status,
        system=SYSTEM,
        figure=f"vulnerabilities: {by_severity}",
        detail=detail or "no known vulnerabilities",
        hint="proposed (nothing was changed): " + "; ".join(hints) if hints else "",
        metrics={f"vulnerabilities.{s}": float(counts[s]) for s in SEVERITIES}
        | {"not_audited": float(len(skipped))},
    )


def audit_lock_file(lock: Path, m: MaintenanceSettings) -> tuple[CheckResult, list[Finding]]:
    """The check of one lock file, and its findings (for the proposal table)."""
    findings: list[Finding] = []

    def run() -> CheckResult:
        if not lock.is_file():
            raise AuditUnavailable(
                f"lock file {lock} does not exist", hint="fix RUNBOOK_MAINTENANCE_LOCK_FILES"
            )
        if lock.name in ("package-lock.json", "npm-shrinkwrap.json"):
            found, skipped = audit_node(lock, m)
        elif lock.suffix == ".txt":
            found, skipped = audit_python(lock, m)
        else:
            raise AuditUnavailable(
                f"{lock.name} is not a lock file this audit reads",
                hint="list requirements*.txt (pinned) or package-lock.json files",
            )
        findings.extend(found)
        return judge_findings(lock, found, skipped)

    # a missing tool or a deadline (CommandError) is a failed check too, never a crash
    return timed_check(str(lock), run, system=SYSTEM), findings


@ops_task("audit-dependencies")
def audit_dependencies(settings: MaintenanceSettings) -> tuple[list[CheckResult], list[Finding]]:
    """Every configured lock file's check, and all findings; never updates anything."""
    if not settings.lock_files:
        return [
            CheckResult(
                name="lock-files",
                status="skipped",
                system=SYSTEM,
                detail="no lock files configured",
                hint="list them in RUNBOOK_MAINTENANCE_LOCK_FILES (JSON list of paths)",
            )
        ], []
    logger = run_logger()
    checks, findings = [], []
    for lock in settings.lock_files:
        check, found = audit_lock_file(lock, settings)
        logger.info("Audit of %s: %s, %s", lock, check.status, check.figure or check.detail)
        checks.append(check)
        findings.extend(found)
    return checks, findings


def proposals_table(findings: list[Finding]) -> str:
    """The upgrades that would fix the findings, worst first (markdown)."""
    if not findings:
        return "Nothing to upgrade: no known vulnerabilities in the audited lock files."
    ordered = sorted(findings, key=lambda f: (SEVERITIES.index(f.severity), f.package))
    return markdown_table(
        ["severity", "package", "version", "proposal", "advisory", "lock file"],
        [[f.severity, f.package, f.version, f.fix, f.advisory, f.lock_file] for f in ordered],
    )
