"""Restored copies and kept data directories on real clusters: the daily check reports them,
discard-restored-cluster removes them behind an approval, and refuses live and anything no
recovery made."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import httpx
import pytest

from flows.recovery.discard_restored_cluster import discard_restored_cluster
from sandbox.platform import Sandbox
from tasks.core.errors import RefusedError
from tasks.postgres.cluster import port_in_use
from tasks.postgres.layout import live_cluster
from tasks.postgres.ownership import MARK_FILE, mark_owned
from tasks.postgres.restored_copies import (
    check_leftovers,
    leftover_roots,
    plan_discard,
    run_restored_copy_checks,
)
from tasks.postgres.scratch import remove_scratch_cluster
from tasks.postgres.switchover import switch_over
from tests.conftest import engine_for
from tests.recovery_support import APPROVE, REJECT, decisions, stage_at
from tests.restored import restored_copy, staged_sandbox
from tests.test_serving import served  # noqa: F401 - the fixture: `runbook serve` in a process


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    with staged_sandbox() as sandbox:
        yield sandbox


def test_leftovers_are_reported_then_discarded_behind_an_approval(
    prefect_server, box, use_platform
):
    settings = use_platform(box)
    live_dsn = settings.live_dsn()
    replaced = restored_copy(box, settings)  # a replace keeps the old live data directory
    switched = switch_over.fn(
        replaced.cluster(),
        live_cluster(settings),
        live_dsn,
        engine_for(box).list_backups()[-1].system_id,
        settings.recovery,
    )
    remove_scratch_cluster.fn(replaced)
    kept = switched.kept_data_dir
    copy = restored_copy(box, settings)  # a side-by-side recovery leaves its copy running
    roots = leftover_roots(settings)

    reported = check_leftovers(roots)
    assert reported.status == "warn" and reported.metrics["leftovers"] == 2
    assert reported.metrics["leftover_bytes"] > 10e6  # two copies of the sandbox's database
    assert reported.metrics["oldest_leftover_age_s"] >= 0
    assert "discard-restored-cluster/on-demand" in reported.hint
    assert str(kept) in reported.detail and str(copy.root) in reported.detail

    planned = discard_restored_cluster(path=str(copy.data_dir), dry_run=True)
    assert planned.outcome == "planned" and planned.plan.leftover.path == copy.root
    assert "stopped first" in planned.plan.markdown() and "MiB" in planned.plan.markdown()
    assert copy.cluster().is_running()

    with decisions("discard-restored-cluster", ("discard", REJECT)):
        state = discard_restored_cluster(path=str(copy.data_dir), return_state=True)
    assert state.is_cancelled() and copy.cluster().is_running()

    with decisions("discard-restored-cluster", ("discard", APPROVE)):
        done = discard_restored_cluster(path=str(copy.data_dir))
    assert done.outcome == "discarded"
    assert not copy.root.exists() and not port_in_use(copy.port)

    with decisions("discard-restored-cluster", ("discard", APPROVE)):
        discard_restored_cluster(path=str(kept))
    assert not kept.exists()
    assert [c.status for c in run_restored_copy_checks.fn(settings.postgres.data_dir, roots)] == [
        "ok",
        "ok",
    ]
    assert stage_at(live_dsn) == 1, "live was touched"


def test_discard_refuses_live_and_what_no_recovery_made(box, use_platform):
    settings = use_platform(box)
    data_dir = settings.postgres.data_dir
    for path in (data_dir, data_dir.parent, data_dir / "base"):
        with pytest.raises(RefusedError, match="is, holds or lies inside the live data directory"):
            plan_discard.fn(path, settings)
    with pytest.raises(RefusedError, match="is, holds or lies inside"):
        discard_restored_cluster(path=str(data_dir))

    by_hand = data_dir.parent / "restore-by-hand"
    by_hand.mkdir()
    copied = data_dir.parent / "restore-copied-mark"
    copied.mkdir()
    try:
        with pytest.raises(RefusedError, match="carries no runbook-owner.json"):
            plan_discard.fn(by_hand, settings)
        mark_owned(by_hand, "restored", "made here, then its mark copied elsewhere")
        shutil.copy(by_hand / MARK_FILE, copied / MARK_FILE)
        with pytest.raises(RefusedError, match="carries no runbook-owner.json made for it there"):
            plan_discard.fn(copied, settings)
        assert by_hand.exists() and copied.exists()
    finally:
        shutil.rmtree(by_hand)
        shutil.rmtree(copied)
    assert live_cluster(settings).is_running()


def test_the_demo_discards_its_restored_copy_through_the_served_deployment(
    served,  # noqa: F811 - the fixture imported above
    platform,
    use_platform,
):
    from deployments.demo import DISCARD, discard_step

    deadline = time.monotonic() + 90  # serve registers the deployments one after another
    while httpx.get(f"{served}/deployments/name/{DISCARD}").status_code != 200:
        assert time.monotonic() < deadline, f"{DISCARD} was not registered in 90 s"
        time.sleep(0.5)
    copy = restored_copy(platform, use_platform(platform))
    discard_step(copy.data_dir, "demo test", timeout=180)
    assert not copy.root.exists() and not port_in_use(copy.port)
    assert platform.cluster().is_running()
