"""The monthly dependency audit: real pip-audit and npm runs against lock files, pointed at a fake
vulnerability service on loopback (tests/fake_advisories.py: the registries' audit endpoints
cannot be reached from here), and at a closed port to show an unreachable registry."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.checks import UNHEALTHY
from flows.maintenance.monthly import monthly_system_updates
from tasks.core.settings import MaintenanceSettings
from tasks.reviews.dependency_audit import audit_lock_file
from tests.fake_advisories import fake_advisories

PACKAGE_LOCK = {
    "name": "linkist-web",
    "version": "1.0.0",
    "lockfileVersion": 3,
    "requires": True,
    "packages": {
        "": {"name": "linkist-web", "version": "1.0.0", "dependencies": {"lodash": "4.17.4"}},
        "node_modules/lodash": {
            "version": "4.17.4",
            "integrity": "sha512-6X37Sq9KCpLSXEh8uM12AKYlviHPNNk4RxiGBn4cmKGJinbXBneWIV7iE/"
            "nXkM928O7ytHcHb6+X6Svl0f4hXg==",
            "license": "MIT",
        },
    },
}
REQUIREMENTS = "requests==2.19.0\nidna==3.7\n"


@pytest.fixture(scope="module")
def advisories() -> Iterator[str]:
    with fake_advisories() as url:
        yield url


@pytest.fixture
def lock_files(tmp_path: Path) -> dict[str, Path]:
    node = tmp_path / "web"
    node.mkdir()
    (node / "package.json").write_text(
        json.dumps({"name": "linkist-web", "dependencies": {"lodash": "4.17.4"}})
    )
    (node / "package-lock.json").write_text(json.dumps(PACKAGE_LOCK, indent=2))
    python = tmp_path / "requirements.txt"
    python.write_text(REQUIREMENTS)
    return {"node": node / "package-lock.json", "python": python}


def aimed_at(url: str, **more: object) -> MaintenanceSettings:
    return MaintenanceSettings(
        npm_registry=f"{url}/",
        python_audit_service="osv",
        osv_url=f"{url}/v1/query",
        audit_deadline_s=120,
        **more,  # type: ignore[arg-type]
    )


def test_node_lock_file_findings_are_counted_by_severity_with_the_fixed_version_proposed(
    advisories, lock_files
):
    check, findings = audit_lock_file(lock_files["node"], aimed_at(advisories))
    assert check.status == "fail"
    assert check.figure == "vulnerabilities: 1 critical, 1 moderate"
    assert check.metrics["vulnerabilities.critical"] == 1
    assert {f.severity for f in findings} == {"critical", "moderate"}
    assert "Prototype Pollution in lodash" in check.detail
    assert check.hint == "proposed (nothing was changed): lodash: upgrade lodash to 4.17.21"


def test_python_lock_file_findings_propose_the_first_fixed_release(advisories, lock_files):
    check, findings = audit_lock_file(lock_files["python"], aimed_at(advisories))
    (finding,) = findings
    assert (finding.package, finding.version, finding.severity) == ("requests", "2.19.0", "unrated")
    assert "CVE-2018-18074" in finding.advisory
    assert finding.fix == "upgrade to 2.20.0"
    assert check.status == "warn"  # PyPI's advisories carry no severity
    assert "idna" not in check.detail


def test_an_unreachable_registry_is_a_failed_check_with_a_hint_not_a_crash(lock_files):
    closed = aimed_at("http://127.0.0.1:1")  # nothing listens on port 1
    for lock in lock_files.values():
        check, findings = audit_lock_file(lock, closed)
        assert check.status == "fail", check.detail
        assert "could not reach" in check.hint
        assert findings == []


def test_a_missing_or_unknown_lock_file_is_a_failed_check_naming_the_setting(tmp_path):
    missing, findings = audit_lock_file(tmp_path / "nope.txt", MaintenanceSettings())
    assert missing.status == "fail"
    assert "RUNBOOK_MAINTENANCE_LOCK_FILES" in missing.hint
    (tmp_path / "Gemfile.lock").write_text("GEM\n")
    unknown, _ = audit_lock_file(tmp_path / "Gemfile.lock", MaintenanceSettings())
    assert unknown.status == "fail"
    assert "package-lock.json" in unknown.hint


def test_monthly_system_updates_proposes_upgrades_and_changes_no_file(
    prefect_server, advisories, lock_files, monkeypatch
):
    for name, value in {
        "LOCK_FILES": json.dumps([str(p) for p in lock_files.values()]),
        "NPM_REGISTRY": f"{advisories}/",
        "PYTHON_AUDIT_SERVICE": "osv",
        "OSV_URL": f"{advisories}/v1/query",
    }.items():
        monkeypatch.setenv(f"RUNBOOK_MAINTENANCE_{name}", value)
    project = lock_files["node"].parent
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in project.parent.rglob("*")
              if p.is_file()}  # fmt: skip
    state = monthly_system_updates(return_state=True)
    assert state.is_completed()
    assert state.name == UNHEALTHY  # a critical finding
    report = state.result()
    proposals = report.sections["Proposed upgrades (nothing was changed)"]
    assert proposals.index("critical") < proposals.index("moderate") < proposals.index("unrated")
    assert "upgrade lodash to 4.17.21" in proposals and "upgrade to 2.20.0" in proposals
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in project.parent.rglob("*")
             if p.is_file()}  # fmt: skip
    assert after == before
    assert not (project / "node_modules").exists()


def test_monthly_system_updates_without_lock_files_says_what_to_configure(
    prefect_server, monkeypatch
):
    monkeypatch.delenv("RUNBOOK_MAINTENANCE_LOCK_FILES", raising=False)
    report = monthly_system_updates()
    (check,) = report.checks
    assert check.status == "skipped"
    assert "RUNBOOK_MAINTENANCE_LOCK_FILES" in check.hint
