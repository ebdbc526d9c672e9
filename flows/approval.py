"""The approval gate in front of every destructive step, and answering it.

A gate pauses the run with a form (``Approval``): the plan in markdown as its description, the
gate's ``step`` and the plan's digest filled in, ``approved`` unticked, and ``approver`` and
``reason`` to fill. Every field is required in the form's schema, so the Prefect server itself
refuses an answer that leaves one out (an empty resume, an old client that sends no step): the run
stays paused at the same gate. What reaches the run is judged by ``tasks.core.approvals.judge``: an
answer bound to another gate or plan, one that approves nothing, or one from a name that may not
approve is recorded and ignored, and the run pauses again at the same gate (a new pause key) for the
rest of its time; a bound rejection or a timeout stops it; only a bound, complete approval proceeds.
Self-hosted Prefect records no actor, so every decision (who, when, why, on which plan) is an
``approval-<step>`` artifact.

People and services answer through ``answer_gate`` (the ``runbook approve|reject`` commands), which
reads the gate the run is paused at, sends that gate's step and digest, and never waits or retries.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.responses import SetStateStatus
from prefect.exceptions import FlowPauseTimeout, ObjectNotFound
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.settings import PREFECT_API_URL
from pydantic import BaseModel, ConfigDict, Field

from flows.lock import held_by
from tasks.core.approvals import (
    Answer,
    ApprovalDecision,
    ApprovalPolicy,
    judge,
    plan_digest,
    record_decision,
)
from tasks.core.errors import RunbookError
from tasks.core.runlog import run_logger

# How often a paused run looks for its resume: Prefect's default of 10 s would add up to 10 s
# to every recovery after the approval is given.
RESUME_POLL_S = 1
MIN_WAIT_S = 2  # less time than this left at a gate: it has timed out


def _every_field_required(schema: dict[str, Any]) -> None:
    # Initial data become defaults (RunInput.with_initial_data), which would make the fields
    # optional: an answer without step or digest would then reach the run with this gate's own.
    schema["required"] = list(schema.get("properties", {}))


class Approval(RunInput):
    """The form of an approval gate. Every field is required; step and digest come filled in."""

    model_config = ConfigDict(json_schema_extra=_every_field_required)

    approved: bool = Field(default=False, description="Tick to approve the plan above.")
    approver: str = Field(description="Your name (recorded with the decision).")
    reason: str = Field(description="Why: the incident id, ticket or context.")
    step: str = Field(default="", description="The gate this answers (filled in).")
    plan_digest: str = Field(default="", description="The plan this answers (filled in).")


def gate_text(
    step: str,
    plan_markdown: str,
    digest: str,
    policy: ApprovalPolicy,
    earlier: Sequence[ApprovalDecision] = (),
) -> str:
    """The form's description: the gate and plan it binds, what approving needs, the plan."""
    needs = [
        "tick **approved**, give your name and a reason",
        *policy.requirements(earlier),
    ]
    return (
        f"**Gate `{step}`**, plan digest `{digest}`: an answer counts only for this gate "
        "and this plan.\n\n"
        f"Approving needs: {'; '.join(needs)}. Rejecting stops the run; nothing is changed.\n\n"
        f"{plan_markdown}"
    )


def request_approval(
    step: str,
    plan_markdown: str,
    policy: ApprovalPolicy,
    earlier: Sequence[ApprovalDecision] = (),
) -> ApprovalDecision:
    """Pause the run at gate ``step`` until a bound decision on ``plan_markdown`` arrives.

    Each answer is recorded (``approval-<step>`` artifact); ignored ones (stray, empty, not
    allowed, same approver as one in ``earlier``) make the run pause again at the same gate for
    what is left of ``policy.timeout_s``. Call from a flow without a flow-level timeout (it would
    count the paused time).

    Returns:
        The final decision: ``approved``, ``rejected`` or ``timed-out`` (Prefect then ends the
        run Failed, "never resumed", whatever the flow returns).
    """
    logger = run_logger()
    digest = plan_digest(plan_markdown)
    shown = gate_text(step, plan_markdown, digest, policy, earlier)
    deadline = time.monotonic() + policy.timeout_s
    logger.info("Waiting up to %s s at gate %s for plan %s", policy.timeout_s, step, digest)
    attempt = 0
    while True:
        attempt += 1
        left = deadline - time.monotonic()
        answer = (
            _wait_for_answer(step, digest, shown, left, attempt) if left >= MIN_WAIT_S else None
        )
        decision = judge(step, digest, answer, policy, earlier, datetime.now(UTC), attempt)
        record_decision(decision, plan_markdown)
        if decision.final:
            logger.info("%s", decision.summary())
            return decision
        logger.warning("%s (%.0f s left)", decision.summary(), deadline - time.monotonic())


def _wait_for_answer(
    step: str, digest: str, shown: str, left: float, attempt: int
) -> Answer | None:
    """One pause (a key of its own: Prefect refuses to pause twice with one key)."""
    form = Approval.with_initial_data(
        description=shown, step=step, plan_digest=digest, approved=False
    )
    try:
        given: Approval = pause_flow_run(
            wait_for_input=form,
            timeout=math.ceil(left),
            poll_interval=RESUME_POLL_S,
            key=f"approve-{step}-{attempt}",
        )
    except FlowPauseTimeout:
        return None
    return Answer.model_validate(given.model_dump(include=set(Answer.model_fields)))


# -- answering a gate (people and services) ---------------------------------------------------


class ApprovalError(RunbookError):
    """A decision could not be delivered: the message says where the run is and which API."""


class Gate(BaseModel):
    """The gate a run is paused at, as read from the Prefect API."""

    run_id: UUID
    run_name: str
    step: str
    plan_digest: str
    plan_markdown: str = Field(description="the form's description: the gate and its plan")
    pause_key: str


def _api() -> str:
    return str(PREFECT_API_URL.value() or "an ephemeral Prefect API")


def read_gate(run_id: UUID, step: str | None = None) -> Gate:
    """The approval gate ``run_id`` is paused at now (and, given ``step``, that it is that one).

    Raises:
        ApprovalError: no such run, the run is not paused at an approval gate (the message gives
            its state), it is at another gate than ``step``, or its form is not saved yet.
    """
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(run_id)
        except ObjectNotFound:
            raise ApprovalError(
                f"no flow run {run_id} at {_api()}",
                hint="check the run id, and that PREFECT_API_URL names the right Prefect server",
            ) from None
        keyset = _paused_keyset(run)
        try:
            schema = json.loads(client.read_flow_run_input(run_id, keyset["schema"]))
            description = json.loads(client.read_flow_run_input(run_id, keyset["description"]))
        except ObjectNotFound:
            raise ApprovalError(
                f"run {run.name} ({run_id}) is pausing but has not saved its form yet ({_api()})",
                hint="run the command again in a moment",
            ) from None
    fields = schema.get("properties", {})
    if "plan_digest" not in fields or "step" not in fields:
        raise ApprovalError(
            f"run {run.name} ({run_id}) is paused for input that is not an approval ({_api()})",
            hint="answer it in the Prefect UI",
        )
    gate = Gate(
        run_id=run_id,
        run_name=run.name,
        step=str(fields["step"].get("default", "")),
        plan_digest=str(fields["plan_digest"].get("default", "")),
        plan_markdown=str(description),
        pause_key=str(run.state.state_details.pause_key if run.state else ""),
    )
    if step is not None and gate.step != step:
        raise ApprovalError(
            f"run {run.name} ({run_id}) is paused at gate {gate.step!r}, not {step!r}; "
            f"nothing was sent ({_api()})",
            hint=f"read its plan, then answer gate {gate.step!r} if you mean to",
        )
    return gate


def _paused_keyset(run: FlowRun) -> dict[str, str]:
    state = run.state
    keyset = state.state_details.run_input_keyset if state and state.is_paused() else None
    if not keyset:
        where = f"{state.name} ({state.type.value})" if state else "without a state"
        raise ApprovalError(
            f"run {run.name} ({run.id}) is {where}, not paused at an approval gate; "
            f"nothing was sent ({_api()})",
            hint="look at the run in the Prefect UI; answer only a run that waits at a gate",
        )
    return dict(keyset)


def wait_for_gate(run_id: UUID, step: str, timeout_s: float) -> Gate:
    """For programs that answer as soon as a run arrives at gate ``step`` (the demo, tests):
    poll until it is paused there with its form saved, at most ``timeout_s`` seconds.

    Raises:
        ApprovalError: it did not get there in time (the last reason is in the message).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return read_gate(run_id, step)
        except ApprovalError as exc:
            if time.monotonic() > deadline:
                raise ApprovalError(
                    f"run {run_id} did not reach gate {step!r} within {timeout_s:g} s: "
                    f"{exc.message}",
                    hint=exc.hint,
                ) from None
        time.sleep(0.2)


def answer_gate(
    run_id: UUID, *, approved: bool, approver: str, reason: str, step: str | None = None
) -> Gate:
    """Send a decision to the gate ``run_id`` is paused at now, bound to that gate and its plan.

    Reads the gate once, sends one answer, and never waits or retries: a run that is not (or no
    longer) paused there gets nothing. The run itself then judges the answer (four eyes, allowed
    approvers) and records it.

    Returns:
        The gate the answer was delivered to.
    Raises:
        ApprovalError: see ``read_gate``; also when the answer is incomplete, or the server did not
            accept it (someone answered first, the pause timed out, the form refused it).
    """
    if not approver.strip() or (approved and not reason.strip()):
        raise ApprovalError(
            "an approval needs an approver and a reason, a rejection an approver",
            hint="pass --approver NAME --reason TEXT",
        )
    gate = read_gate(run_id, step)
    holding = held_by(run_id)
    if holding is not None and holding[1].dead:
        raise ApprovalError(
            f"run {gate.run_name} ({run_id}) waits at gate {gate.step!r} but is dead: "
            f"{holding[1].why}; approving it would change nothing ({_api()})",
            hint="start the recovery again: it takes the lock over and marks this run Crashed",
        )
    answer = Answer(
        step=gate.step,
        plan_digest=gate.plan_digest,
        approved=approved,
        approver=approver,
        reason=reason,
    )
    with get_client(sync_client=True) as client:
        result = client.resume_flow_run(run_id, run_input=answer.model_dump())
    if result.status != SetStateStatus.ACCEPT:
        reason_given = getattr(result.details, "reason", "") or result.status.value
        raise ApprovalError(
            f"gate {gate.step!r} of run {gate.run_name} ({run_id}) did not take the answer: "
            f"{reason_given} ({_api()})",
            hint="someone may have answered first or the gate timed out: look at the run's state "
            "and its approval artifacts",
        )
    return gate
