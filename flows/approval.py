"""The approval gate in front of every destructive step.

The run pauses with a form (``Approval``) whose description is the plan in markdown. Defaults
mean "not approved": the UI's plain Resume button or an empty ``run_input`` resumes the run with
``approved=False`` and it stops there, changing nothing. Approving takes the box ticked AND an
approver's name AND a reason. Self-hosted Prefect records no actor, so every decision (who,
when, why, what) is written as an artifact.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from uuid import UUID

from prefect.exceptions import FlowPauseTimeout, NotPausedError, ObjectNotFound
from prefect.flow_runs import pause_flow_run, resume_flow_run
from prefect.input import RunInput
from pydantic import Field

from tasks.core.approvals import ApprovalDecision, Outcome, record_decision
from tasks.core.errors import RunbookError
from tasks.core.runlog import run_logger

# How often a paused run looks for its resume: Prefect's default of 10 s would add up to 10 s
# to every recovery after the approval is given.
RESUME_POLL_S = 1


class Approval(RunInput):
    """The form shown when a recovery waits for approval."""

    approved: bool = Field(default=False, description="Tick to approve the plan above.")
    approver: str = Field(default="", description="Your name (recorded with the decision).")
    reason: str = Field(default="", description="Why (incident id, ticket, context).")


def judge(answer: Approval | None) -> tuple[Outcome, str, str]:
    """What an answer means: approval needs the box ticked, a name and a reason."""
    if answer is None:
        return "timed-out", "", ""
    approver, reason = answer.approver.strip(), answer.reason.strip()
    if answer.approved and approver and reason:
        return "approved", approver, reason
    if not answer.approved and (approver or reason):
        return "rejected", approver, reason
    return "empty", approver, reason


def request_approval(step: str, plan_markdown: str, timeout_s: int) -> ApprovalDecision:
    """Pause the flow run until someone decides on ``plan_markdown``; record the decision.

    Call from a flow (never one with a flow-level timeout: it would count the paused time).
    """
    logger = run_logger()
    logger.info("Waiting up to %s s for approval of: %s", timeout_s, step)
    form = Approval.with_initial_data(description=plan_markdown, approved=False)
    try:
        answer: Approval | None = pause_flow_run(
            wait_for_input=form,
            timeout=timeout_s,
            poll_interval=RESUME_POLL_S,
            key=f"approve-{step}",
        )
    except FlowPauseTimeout:
        answer = None
    outcome, approver, reason = judge(answer)
    decision = ApprovalDecision(
        step=step,
        outcome=outcome,
        approver=approver,
        reason=reason,
        decided_at=datetime.now(UTC),
        plan_digest=hashlib.sha256(plan_markdown.encode()).hexdigest(),
    )
    record_decision(decision, plan_markdown)
    logger.info("%s", decision.summary())
    return decision


class ApprovalError(RunbookError):
    """A decision could not be delivered to the run."""


def answer_approval(
    flow_run_id: UUID, *, approved: bool, approver: str, reason: str, wait_s: float = 30
) -> None:
    """Resume a run paused at an approval gate with a decision (for people and services).

    Waits up to ``wait_s`` for the run to be paused with its form saved (a run that has just
    paused saves its form a moment later). Raises ApprovalError naming the run's state otherwise.
    """
    if approved and not (approver.strip() and reason.strip()):
        raise ApprovalError(
            "an approval needs an approver and a reason", hint="pass --approver NAME --reason TEXT"
        )
    run_input = {"approved": approved, "approver": approver, "reason": reason}
    deadline = time.monotonic() + wait_s
    while True:
        try:
            resume_flow_run(flow_run_id, run_input=run_input)
            return
        except ObjectNotFound:
            raise ApprovalError(f"no flow run {flow_run_id}", hint="check the run id") from None
        except FlowPauseTimeout:
            raise ApprovalError(
                f"run {flow_run_id} timed out waiting for approval", hint="start the recovery again"
            ) from None
        except (NotPausedError, RuntimeError) as exc:
            if time.monotonic() > deadline:
                raise ApprovalError(
                    f"run {flow_run_id} is not waiting for approval: {exc}",
                    hint="look at the run's state in the Prefect UI",
                ) from None
        time.sleep(0.2)
