"""One recovery per stanza: a one-slot global concurrency limit, held by lease across pauses.

The holder takes the slot of ``recovery-<stanza>`` with a lease (``LOCK_LEASE_S``), renews it from
a thread every ``RENEW_EVERY_S`` while the run lives (approval pauses included), and releases it
when the run ends. Who holds it, with which lease, and when it last renewed is kept in the Prefect
Variable ``recovery-<stanza>-holder``: the concurrency API says none of it.

A holder can die without releasing (its process killed, its worker gone, the Prefect server
restarted while it was away). The next recovery, and the daily health check, judge the recorded
holder by its run's state and its renewals, never by a process id (workers run on other hosts):
it is dead when its run has ended, when it is Paused or Cancelling and has stopped renewing, when
it has been Cancelling for longer than a lease, or when it has not renewed for longer than a
lease. A dead holder is taken over by releasing its recorded lease (never by resetting the limit's
slots: a reset plus the old lease expiring later would free the slot twice) and its run is marked
Crashed (Cancelled if it was Cancelling) with the reason; the decision is logged, emitted as a
``runbook.recovery-lock.taken-over`` event and, inside a run, kept as an artifact. Takeovers are
serialised by a second one-slot limit, so two recoveries never both take over and both run.

The Prefect server must keep leases durably (``PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=
prefect.server.concurrency.lease_storage.filesystem`` for one server; the sandbox runs it so):
with the default memory storage a server restart forgets every lease and their slots stay taken.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import ConcurrencyLeaseHolder, FlowRun, StateType
from prefect.context import FlowRunContext
from prefect.events import emit_event
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound, PrefectHTTPStatusError
from prefect.states import Cancelled, Crashed, State
from prefect.variables import Variable
from pydantic import AwareDatetime, BaseModel, ValidationError

from tasks.core.errors import RefusedError
from tasks.core.reports import CheckResult, publish_markdown
from tasks.core.retry import ops_task
from tasks.core.runlog import run_logger

LOCK_LEASE_S = 60  # the shortest lease Prefect 3.9 accepts; a dead holder's slot frees itself
RENEW_EVERY_S = 15  # four renewals per lease: a missed one or two costs nothing
STOPPED_RENEWING_S = 3 * RENEW_EVERY_S + 5  # a paused holder this quiet has no process behind it
LEASE_LOST_S = LOCK_LEASE_S + 15  # any holder this quiet has lost its lease (15 s clock slack)
TAKEOVER_WAIT_S = 30
TAKEN_OVER_EVENT = "runbook.recovery-lock.taken-over"
SYSTEM = "recovery"  # the daily report's system for the lock's check


class RecoveryBusy(RefusedError):
    """Another recovery holds the stanza (or its slot could not be taken in time)."""


class LockLost(RefusedError):
    """This run no longer holds its recovery lock (its lease was lost or taken over)."""


def lock_name(stanza: str) -> str:
    """The global concurrency limit that serialises recoveries of ``stanza``."""
    return f"recovery-{stanza}"


def holder_variable(stanza: str) -> str:
    """The Prefect Variable naming who holds ``stanza``'s recovery lock."""
    return f"{lock_name(stanza)}-holder"


class LockHolder(BaseModel):
    """The recorded holder of a recovery lock: its run, its lease, and its last renewal."""

    stanza: str
    flow_run_id: UUID | None
    run_name: str
    lease_id: UUID
    since: AwareDatetime
    renewed_at: AwareDatetime
    host: str


class Verdict(BaseModel):
    """A judgement of a recorded holder: ``dead`` means it can be taken over; ``why`` says why
    (or what it is doing), in words for messages."""

    dead: bool
    why: str
    run_state: str = ""


def judge_holder(holder: LockHolder, run: FlowRun | None, now: datetime) -> Verdict:
    """Whether ``holder`` (whose run is ``run``, None when it no longer exists) is dead.

    Pure: reads the run's state and the holder's last renewal, measured against ``now``.
    """
    quiet = (now - holder.renewed_at).total_seconds()
    renewed = f"last lease renewal {quiet:.0f} s ago"
    if run is None:
        return Verdict(dead=True, why=f"its run {holder.flow_run_id} no longer exists; {renewed}")
    state = run.state
    name = state.name if state else "no state"
    if state is None or state.is_final():
        return Verdict(
            dead=True, why=f"its run ended ({name}) without releasing; {renewed}", run_state=name
        )
    if (state.is_paused() or state.type == StateType.CANCELLING) and quiet > STOPPED_RENEWING_S:
        return Verdict(
            dead=True,
            why=f"its run is {name} and stopped renewing its lease ({renewed}): its process is "
            "gone",
            run_state=name,
        )
    in_state = (now - state.timestamp).total_seconds() if state.timestamp else 0.0
    if state.type == StateType.CANCELLING and in_state > LEASE_LOST_S:
        return Verdict(
            dead=True,
            why=f"its run has been Cancelling for {in_state:.0f} s; {renewed}",
            run_state=name,
        )
    if quiet > LEASE_LOST_S:
        return Verdict(
            dead=True,
            why=f"its lease ({LOCK_LEASE_S} s) has expired: {renewed}",
            run_state=name,
        )
    return Verdict(dead=False, why=f"its run is {name}; {renewed}", run_state=name)


# -- the Prefect API ------------------------------------------------------------------------------


def ensure_lock_exists(client: SyncPrefectClient, name: str) -> None:
    """Create the one-slot global concurrency limit ``name`` if it is missing."""
    try:
        client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        with contextlib.suppress(ObjectAlreadyExists):
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


def _try_acquire(client: SyncPrefectClient, name: str, run_id: UUID | None) -> UUID | None:
    """Take the slot with a lease; None when it is taken (423)."""
    holder = ConcurrencyLeaseHolder(type="flow_run", id=run_id) if run_id else None
    try:
        response = client.increment_concurrency_slots_with_lease(
            names=[name],
            slots=1,
            mode="concurrency",
            lease_duration=LOCK_LEASE_S,
            holder=holder,
        )
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code == 423:
            return None
        raise
    return UUID(response.json()["lease_id"])


def read_holder(stanza: str) -> LockHolder | None:
    """The recorded holder of ``stanza``'s lock (None when none is recorded)."""
    raw = Variable.get(holder_variable(stanza), default=None)
    if not isinstance(raw, dict):
        return None
    try:
        return LockHolder.model_validate(raw)
    except ValidationError:  # written by an older version: treat as unknown
        return None


def _write_holder(holder: LockHolder) -> None:
    Variable.set(holder_variable(holder.stanza), holder.model_dump(mode="json"), overwrite=True)


def _read_run(client: SyncPrefectClient, run_id: UUID | None) -> FlowRun | None:
    if run_id is None:
        return None
    try:
        return client.read_flow_run(run_id)
    except ObjectNotFound:
        return None


# -- taking a dead holder's place -----------------------------------------------------------------


class Takeover(BaseModel):
    """What a takeover did: whose lock, why, and how its run was marked."""

    stanza: str
    holder: LockHolder
    why: str
    marked: str
    by_run: str
    at: AwareDatetime

    def markdown(self) -> str:
        """The decision as the ``recovery-lock-takeover`` artifact shows it."""
        return (
            f"# Recovery lock of stanza {self.stanza} taken over\n\n"
            f"- **Dead holder:** run {self.holder.run_name} ({self.holder.flow_run_id}), holding "
            f"since {self.holder.since.isoformat()}, lease {self.holder.lease_id}\n"
            f"- **Why:** {self.why}\n"
            f"- **Its run:** {self.marked}\n"
            f"- **Taken over by:** {self.by_run}, at {self.at.isoformat()}\n"
        )


def reclaim_if_dead(client: SyncPrefectClient, stanza: str, by: str) -> Takeover | Verdict | None:
    """Take over ``stanza``'s lock when its recorded holder is dead.

    Serialised by the ``recovery-<stanza>-takeover`` limit, and the holder is read again inside
    it, so only one caller takes over a given holder. Releases the holder's recorded lease, marks
    its run Crashed (Cancelled when Cancelling) with the reason, clears the record.

    Returns:
        The takeover, the verdict on a living holder, or None when no holder is recorded.
    """
    mutex = f"{lock_name(stanza)}-takeover"
    ensure_lock_exists(client, mutex)
    lease = None
    deadline = time.monotonic() + TAKEOVER_WAIT_S
    while lease is None:
        lease = _try_acquire(client, mutex, None)
        if lease is None:
            if time.monotonic() > deadline:
                return None  # another caller is taking over: let the lock loop look again
            time.sleep(0.5)
    try:
        holder = read_holder(stanza)
        if holder is None:
            return None
        run = _read_run(client, holder.flow_run_id)
        verdict = judge_holder(holder, run, datetime.now(UTC))
        if not verdict.dead:
            return verdict
        client.release_concurrency_slots_with_lease(holder.lease_id)  # a no-op once it is gone
        marked = _mark_dead_run(
            client, run, f"its recovery lock was taken over by {by}: {verdict.why}"
        )
        Variable.unset(holder_variable(stanza))
    finally:
        client.release_concurrency_slots_with_lease(lease)
    return _record_takeover(stanza, holder, verdict.why, marked, by)


def _mark_dead_run(client: SyncPrefectClient, run: FlowRun | None, message: str) -> str:
    if run is None or run.state is None:
        return "no longer exists"
    if run.state.is_final():
        return f"already {run.state.name}"
    new: State[Any] = (
        Cancelled(message=message)
        if run.state.type == StateType.CANCELLING
        else Crashed(message=message)
    )
    client.set_flow_run_state(run.id, new, force=True)
    return f"marked {new.name} ({message})"


def _close_previous_holder(
    client: SyncPrefectClient, stanza: str, run_id: UUID | None, by: str
) -> None:
    """After taking a free slot: a record naming another run means its lease expired and the
    server freed the slot before anyone took it over; mark that run so it stops looking alive."""
    previous = read_holder(stanza)
    if previous is None or previous.flow_run_id in (None, run_id):
        return
    run = _read_run(client, previous.flow_run_id)
    verdict = judge_holder(previous, run, datetime.now(UTC))
    if not verdict.dead:  # only a limit reset by hand frees the slot of a living holder
        run_logger().warning(
            "Took the recovery lock of stanza %s although run %s is recorded as holding it and "
            "looks alive (%s): was the limit reset by hand?",
            stanza,
            previous.run_name,
            verdict.why,
        )
        return
    marked = _mark_dead_run(client, run, f"its recovery lock lease expired and {by} took the lock")
    _record_takeover(stanza, previous, verdict.why, marked, by)


def _record_takeover(stanza: str, holder: LockHolder, why: str, marked: str, by: str) -> Takeover:
    """Log, emit and (inside a run) publish the takeover of ``holder``'s lock."""
    takeover = Takeover(
        stanza=stanza, holder=holder, why=why, marked=marked, by_run=by, at=datetime.now(UTC)
    )
    run_logger().warning(
        "Took over the recovery lock of stanza %s from run %s: %s; %s",
        takeover.stanza,
        takeover.holder.run_name,
        takeover.why,
        takeover.marked,
    )
    emit_event(
        event=TAKEN_OVER_EVENT,
        resource={
            "prefect.resource.id": f"runbook.recovery-lock.{takeover.stanza}",
            "prefect.resource.name": lock_name(takeover.stanza),
        },
        payload=takeover.model_dump(mode="json"),
    )
    publish_markdown(
        "recovery-lock-takeover",
        takeover.markdown(),
        description=f"took over the lock from dead run {takeover.holder.run_name}",
    )
    return takeover


# -- holding it -----------------------------------------------------------------------------------


class HeldLock:
    """The lock while this run holds it: renews its lease and record from a daemon thread."""

    def __init__(self, holder: LockHolder) -> None:
        self.holder = holder
        self.lost: str | None = None  # why the lease was lost, once it is
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._renew_until_stopped,
            name=f"recovery-lock-renewal-{holder.stanza}",
            daemon=True,
        )

    def start(self) -> None:
        """Start renewing."""
        self._thread.start()

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(RENEW_EVERY_S):
            try:
                self.renew()
            except Exception as exc:  # noqa: BLE001 - the server may be restarting: try again
                run_logger().warning("Could not renew the recovery lock's lease: %s", exc)
            if self.lost:
                return

    def renew(self) -> None:
        """Renew the lease and the record; a lease the server no longer knows is lost."""
        with get_client(sync_client=True) as client:
            try:
                client.renew_concurrency_lease(self.holder.lease_id, LOCK_LEASE_S)
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code != 410:
                    raise
                self.lost = (
                    "the Prefect server no longer knows its lease (it expired and was revoked, "
                    "or another recovery took the lock over)"
                )
                return
        self.holder = self.holder.model_copy(update={"renewed_at": datetime.now(UTC)})
        _write_holder(self.holder)

    def check(self) -> None:
        """Raise LockLost unless this run still holds the lock (renews once to be sure)."""
        if self.lost is None:
            self.renew()
        if self.lost is not None:
            raise LockLost(
                f"this run no longer holds the recovery lock of stanza {self.holder.stanza}: "
                f"{self.lost}; nothing was changed",
                hint="start the recovery again: it plans afresh against the current state",
            )

    def release(self) -> None:
        """Stop renewing, release the lease, clear the record if it is still ours."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        try:
            with get_client(sync_client=True) as client:
                client.release_concurrency_slots_with_lease(self.holder.lease_id)
            current = read_holder(self.holder.stanza)
            if current is not None and current.lease_id == self.holder.lease_id:
                Variable.unset(holder_variable(self.holder.stanza))
        except Exception as exc:  # noqa: BLE001 - never hide how the run itself ended
            run_logger().warning(
                "Could not release the recovery lock (%s): its slot frees itself when its lease "
                "(%s s) expires",
                exc,
                LOCK_LEASE_S,
            )


def _this_run() -> tuple[UUID | None, str]:
    context = FlowRunContext.get()
    run = context.flow_run if context else None
    return (run.id, run.name) if run else (None, "")


@contextlib.contextmanager
def recovery_lock(stanza: str, wait_s: float) -> Iterator[HeldLock]:
    """Hold ``stanza``'s recovery lock for the block (approval pauses included).

    Waits up to ``wait_s`` seconds; takes over a dead holder on the way (see the module docstring).

    Raises:
        RecoveryBusy: a living run holds it, or the slot stayed taken; the message names the
            holder, and the hint says what frees it.
    """
    name = lock_name(stanza)
    run_id, run_name = _this_run()
    by = f"run {run_name} ({run_id})" if run_id else "a recovery outside any run"
    deadline = time.monotonic() + wait_s
    verdict: Verdict | None = None
    with get_client(sync_client=True) as client:
        ensure_lock_exists(client, name)
        while (lease := _try_acquire(client, name, run_id)) is None:
            outcome = reclaim_if_dead(client, stanza, by)
            if isinstance(outcome, Takeover):
                continue  # its slot is free now: take it
            verdict = outcome
            if time.monotonic() > deadline:
                raise lock_refusal(stanza, wait_s, read_holder(stanza), verdict)
            time.sleep(0.5)
        _close_previous_holder(client, stanza, run_id, by)
    now = datetime.now(UTC)
    held = HeldLock(
        LockHolder(
            stanza=stanza,
            flow_run_id=run_id,
            run_name=run_name,
            lease_id=lease,
            since=now,
            renewed_at=now,
            host=socket.gethostname(),
        )
    )
    _write_holder(held.holder)
    held.start()
    run_logger().info("Holding the recovery lock %s (lease %s)", name, lease)
    try:
        yield held
    finally:
        held.release()


def lock_refusal(
    stanza: str, wait_s: float, holder: LockHolder | None, verdict: Verdict | None
) -> RecoveryBusy:
    """The refusal: the living holder and what frees it, or why no holder can be named."""
    if holder is not None and verdict is not None and not verdict.dead:
        return RecoveryBusy(
            f"another recovery holds stanza {stanza!r}: run {holder.run_name!r} "
            f"({holder.flow_run_id}) since {holder.since.isoformat(timespec='seconds')}; "
            f"{verdict.why}",
            hint=f"approve or reject it (runbook approve|reject {holder.flow_run_id} ...), or "
            "cancel it in the Prefect UI: a cancelled or dead holder is taken over by the next "
            f"recovery within {LEASE_LOST_S} s; then start this one again",
        )
    return RecoveryBusy(
        f"could not take the recovery lock of stanza {stanza!r} within {wait_s:g} s, and no "
        "living run is recorded as holding it: the Prefect API was slow to answer, or a run "
        f"that died before recording itself holds the slot until its lease ({LOCK_LEASE_S} s) "
        "expires and the server frees it",
        hint="retry in a minute (raise RUNBOOK_RECOVERY_LOCK_WAIT_S if the API is slow); if it "
        "persists, the Prefect server's lease storage is not "
        "durable (set PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE="
        "prefect.server.concurrency.lease_storage.filesystem) and a restart lost the lease: once "
        f"no recovery runs, set the active slots of limit {lock_name(stanza)!r} to 0 in the "
        "Prefect UI (Concurrency)",
    )


def held_by(run_id: UUID) -> tuple[LockHolder, Verdict] | None:
    """If ``run_id`` is recorded as holding a recovery lock: that record and the verdict on it."""
    with get_client(sync_client=True) as client:
        for variable in client.read_variables():
            name = variable.name
            if not (name.startswith("recovery-") and name.endswith("-holder")):
                continue
            try:
                holder = LockHolder.model_validate(variable.value)
            except ValidationError:
                continue
            if holder.flow_run_id == run_id:
                run = _read_run(client, run_id)
                return holder, judge_holder(holder, run, datetime.now(UTC))
    return None


def recovery_in_progress(stanza: str) -> LockHolder | None:
    """The living holder of ``stanza``'s lock, if a recovery holds it now (None otherwise).

    For take-backup and verify-backup, which never take the lock: a taken slot with no living
    recorded holder counts as held (a holder that has not recorded itself yet).
    """
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(lock_name(stanza))
        except ObjectNotFound:
            return None
        if not limit.active_slots:
            return None
        holder = read_holder(stanza)
        if holder is None:
            return LockHolder(
                stanza=stanza,
                flow_run_id=None,
                run_name="(not recorded)",
                lease_id=UUID(int=0),
                since=datetime.now(UTC),
                renewed_at=datetime.now(UTC),
                host="",
            )
        verdict = judge_holder(holder, _read_run(client, holder.flow_run_id), datetime.now(UTC))
        return None if verdict.dead else holder


@ops_task("check-recovery-lock", retries=2)
def check_recovery_lock(stanza: str) -> list[CheckResult]:
    """The daily check's view of ``stanza``'s recovery lock, reclaiming it from a dead holder.

    A living holder is reported (a recovery in progress); a dead one (see ``judge_holder``) is
    taken over as a recovery would (its lease released, its run marked Crashed, so that it no
    longer looks approvable) and reported as a failure to look at; a slot taken with no holder
    recorded is a warning with what frees it. Never raises for an expected failure.
    """
    name = "recovery-lock"
    by = "the daily health check"
    context = FlowRunContext.get()
    if context and context.flow_run:
        by = f"the daily health check (run {context.flow_run.name})"
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(lock_name(stanza))
        except ObjectNotFound:
            return [CheckResult(name=name, status="ok", system=SYSTEM, figure="free")]
        taken = limit.active_slots
        outcome = reclaim_if_dead(client, stanza, by) if taken else None
    if isinstance(outcome, Takeover):
        return [
            CheckResult(
                name=name,
                status="fail",
                system=SYSTEM,
                figure=f"dead recovery {outcome.holder.run_name}",
                detail=f"run {outcome.holder.run_name} ({outcome.holder.flow_run_id}) held the "
                f"lock of stanza {stanza} but was dead: {outcome.why}; its lease was released "
                f"and its run {outcome.marked}",
                hint="a recovery died mid-way (its worker or the Prefect server went away): if it "
                "is still needed, start it again; look for a restored copy it left beside live",
            )
        ]
    if isinstance(outcome, Verdict):
        holder = read_holder(stanza)
        who = f"run {holder.run_name} ({holder.flow_run_id})" if holder else "a run"
        return [
            CheckResult(
                name=name,
                status="ok",
                system=SYSTEM,
                figure="recovery in progress",
                detail=f"{who} holds stanza {stanza}: {outcome.why}",
            )
        ]
    if taken:
        refusal = lock_refusal(stanza, 0, None, None)
        return [
            CheckResult(
                name=name,
                status="warn",
                system=SYSTEM,
                figure="taken, no holder recorded",
                detail=refusal.message,
                hint=refusal.hint,
            )
        ]
    return [CheckResult(name=name, status="ok", system=SYSTEM, figure="free")]
