"""One recovery per stanza: a strict global concurrency limit held across approval pauses."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.variables import Variable

from tasks.core.errors import RefusedError
from tasks.core.retry import ops_task
from tasks.core.runlog import run_logger

# -- one recovery per cluster ------------------------------------------------------------------


class RecoveryBusy(RefusedError):
    """Another recovery holds the cluster."""


LOCK_LEASE_S = 300  # a slot its holder stopped renewing (process gone) frees itself after this


def lock_name(stanza: str) -> str:
    """The name of ``stanza``'s recovery lock, a global concurrency limit: ``recovery-<stanza>``."""
    return f"recovery-{stanza}"


@ops_task("ensure-recovery-lock", retries=2)
def ensure_lock_exists(name: str) -> None:
    """Create the global concurrency limit (1 slot) if missing: ``strict=True`` needs it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )


def lock_refusal(stanza: str, wait_s: float, holder: dict[str, Any]) -> RecoveryBusy:
    """Name the run holding the lock, or say that none is recorded and what that means."""
    if holder:
        return RecoveryBusy(
            f"another recovery holds stanza {stanza!r}: run {holder.get('name', '?')!r} "
            f"({holder.get('flow_run_id', '?')}) since {holder.get('since', '?')}",
            hint="wait for that run to finish, or reject or cancel it in the Prefect UI",
        )
    return RecoveryBusy(
        f"could not take the recovery lock of stanza {stanza!r} within {wait_s:g} s, and no "
        "run is recorded as holding it: the Prefect API was slow to answer, or a run that "
        "ended without releasing it holds the slot until its lease expires "
        f"({LOCK_LEASE_S:g} s)",
        hint=f"retry; if it persists, raise RUNBOOK_RECOVERY_LOCK_WAIT_S or look at the "
        f"global concurrency limit {lock_name(stanza)!r} in the Prefect UI",
    )


@contextmanager
def recovery_lock(stanza: str, wait_s: float) -> Iterator[None]:
    """Hold the cluster's recovery slot for the whole run, approval pauses included.

    A paused run keeps its process, so the slot's lease stays renewed while it waits. Who holds
    it is kept in a Prefect Variable, because the concurrency API does not say.
    """
    name = lock_name(stanza)
    ensure_lock_exists(name)
    holder_key = f"{name}-holder"
    slot = ExitStack()
    try:
        slot.enter_context(
            concurrency(
                name, occupy=1, timeout_seconds=wait_s, lease_duration=LOCK_LEASE_S, strict=True
            )
        )
    except TimeoutError:
        raise lock_refusal(stanza, wait_s, Variable.get(holder_key, default={}) or {}) from None
    with slot:
        context = FlowRunContext.get()
        run = context.flow_run if context else None
        Variable.set(
            holder_key,
            {
                "flow_run_id": str(run.id) if run else "",
                "name": run.name if run else "",
                "since": datetime.now(UTC).isoformat(),
            },
            overwrite=True,
        )
        run_logger().info("Holding the recovery lock %s", name)
        try:
            yield
        finally:
            Variable.unset(holder_key)
