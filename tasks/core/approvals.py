"""Approval decisions as data: which gate and plan an answer names, what it decides, its record.

An answer approves only when it names the gate's step and the digest of the plan that gate shows,
ticks ``approved``, gives an approver and a reason, and the approver may approve (the allowed list,
when one is set; someone other than whoever approved an earlier step of the same run, when four
eyes are required). A bound rejection ends the run. Anything else (an answer for another gate or
plan, one that approves nothing, one from a name that may not approve) is recorded and ignored: the
gate waits again for the rest of its time. The pause itself only works inside a flow run:
``flows.approval``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from tasks.core.reports import markdown_table, publish_markdown
from tasks.core.settings import RecoverySettings

Outcome = Literal[
    "approved",
    "rejected",
    "timed-out",
    "stray",
    "empty",
    "not-allowed",
    "same-approver",
]
FINAL: frozenset[Outcome] = frozenset({"approved", "rejected", "timed-out"})
DIGEST_CHARS = 16  # hex characters of the plan's sha256 that name it


def plan_digest(plan_markdown: str) -> str:
    """The name of a plan: the first 16 hex characters of the sha256 of its markdown."""
    return hashlib.sha256(plan_markdown.encode()).hexdigest()[:DIGEST_CHARS]


class ApprovalPolicy(BaseModel):
    """Who may approve and for how long a gate waits (``RUNBOOK_RECOVERY_*`` settings).

    Names are self-declared: self-hosted Prefect records no actor, so these rules stop mistakes
    (one person approving both the restore and the switchover, a typo'd or unknown name), not an
    attacker who can reach the Prefect API.
    """

    timeout_s: int = Field(gt=0, description="how long a gate waits in all, in seconds")
    distinct_approvers: bool = Field(
        default=True, description="a later step of a run needs someone other than earlier ones"
    )
    allowed_approvers: list[str] = Field(
        default_factory=list, description="who may approve or reject; empty: anyone"
    )

    @classmethod
    def from_settings(cls, recovery: RecoverySettings) -> ApprovalPolicy:
        """The policy the recovery settings give."""
        return cls(
            timeout_s=recovery.approval_timeout_s,
            distinct_approvers=recovery.distinct_approvers,
            allowed_approvers=recovery.allowed_approvers,
        )

    def allows(self, approver: str) -> bool:
        """Whether ``approver`` is on the allowed list (case-insensitive); any name if none."""
        allowed = {name.strip().casefold() for name in self.allowed_approvers}
        return not allowed or approver.strip().casefold() in allowed

    def requirements(self, earlier: Sequence[ApprovalDecision]) -> list[str]:
        """What an approval of this gate needs beyond the form, in words for the plan shown."""
        needs = []
        excluded = self.excluded(earlier)
        if excluded:
            names = ", ".join(sorted(excluded))
            needs.append(
                f"an approver other than {names} (four eyes: they approved an earlier step)"
            )
        if self.allowed_approvers:
            needs.append(f"one of the allowed approvers: {', '.join(self.allowed_approvers)}")
        return needs

    def excluded(self, earlier: Sequence[ApprovalDecision]) -> set[str]:
        """Names that may not approve this gate: whoever approved an earlier step of the run."""
        if not self.distinct_approvers:
            return set()
        return {d.approver for d in earlier if d.approved}


class Answer(BaseModel):
    """What someone sent to a gate (the ``Approval`` form's fields, as submitted)."""

    step: str
    plan_digest: str
    approved: bool
    approver: str
    reason: str


class ApprovalDecision(BaseModel):
    """One decision at an approval gate, as recorded in its ``approval-<step>`` artifact.

    ``answered_step`` and ``answered_digest`` are what the answer named (they differ from
    ``step`` and ``plan_digest`` for a stray answer). Only ``approved``, ``rejected`` and
    ``timed-out`` end the wait (``final``); the others are recorded and ignored.
    """

    step: str
    outcome: Outcome
    approver: str = ""
    reason: str = ""
    decided_at: datetime
    plan_digest: str = Field(description="digest of the plan this gate showed (plan_digest())")
    answered_step: str = ""
    answered_digest: str = ""
    attempt: int = Field(default=1, description="1 for the first answer at this gate, then 2...")

    @property
    def approved(self) -> bool:
        """True only for the ``approved`` outcome."""
        return self.outcome == "approved"

    @property
    def final(self) -> bool:
        """Whether this decision ends the gate's wait (approved, rejected, timed out)."""
        return self.outcome in FINAL

    def summary(self) -> str:
        """One sentence saying what was decided, by whom and why (for logs, artifacts, states)."""
        who = f" by {self.approver}" if self.approver else ""
        why = f": {self.reason}" if self.reason else ""
        ignored = "; ignored, nothing was changed and the gate waits again"
        return {
            "approved": f"{self.step} approved{who}{why}",
            "rejected": f"{self.step} rejected{who}{why}; nothing was changed",
            "timed-out": f"{self.step} not approved in time; nothing was changed",
            "stray": f"an answer for gate {self.answered_step!r} (plan {self.answered_digest}) "
            f"reached gate {self.step!r} (plan {self.plan_digest}){who}{ignored}",
            "empty": f"an answer{who} at gate {self.step!r} approved nothing (approving needs "
            f"'approved' ticked, an approver and a reason){ignored}",
            "not-allowed": f"{self.approver} may not decide at gate {self.step!r} (not an "
            f"allowed approver){ignored}",
            "same-approver": f"{self.approver} approved an earlier step of this run and may not "
            f"approve {self.step!r} too (four eyes){ignored}",
        }[self.outcome]


def judge(
    step: str,
    digest: str,
    answer: Answer | None,
    policy: ApprovalPolicy,
    earlier: Sequence[ApprovalDecision],
    decided_at: datetime,
    attempt: int = 1,
) -> ApprovalDecision:
    """The decision an answer (None: the wait timed out) makes at gate ``step``/``digest``."""
    base = {"step": step, "plan_digest": digest, "decided_at": decided_at, "attempt": attempt}
    if answer is None:
        return ApprovalDecision(outcome="timed-out", **base)
    approver, reason = answer.approver.strip(), answer.reason.strip()
    base |= {
        "approver": approver,
        "reason": reason,
        "answered_step": answer.step,
        "answered_digest": answer.plan_digest,
    }
    outcome: Outcome
    if (answer.step, answer.plan_digest) != (step, digest):
        outcome = "stray"
    elif not approver or (answer.approved and not reason):
        outcome = "empty"
    elif not policy.allows(approver):
        outcome = "not-allowed"
    elif not answer.approved:
        outcome = "rejected"
    elif approver.casefold() in {name.casefold() for name in policy.excluded(earlier)}:
        outcome = "same-approver"
    else:
        outcome = "approved"
    return ApprovalDecision(outcome=outcome, **base)


def record_decision(decision: ApprovalDecision, plan_markdown: str) -> None:
    """Publish the decision and the plan that was shown as the ``approval-<step>`` artifact."""
    table = markdown_table(
        ["step", "decision", "approver", "reason", "decided at", "plan", "answer named"],
        [
            [
                decision.step,
                decision.outcome,
                decision.approver or "-",
                decision.reason or "-",
                decision.decided_at.isoformat(),
                decision.plan_digest,
                f"{decision.answered_step or '-'} / {decision.answered_digest or '-'}",
            ]
        ],
    )
    publish_markdown(
        f"approval-{decision.step}",
        f"# Approval: {decision.step}\n\n{decision.summary()}\n\n{table}\n\n"
        f"## The plan that was shown\n\n{plan_markdown}",
        description=decision.summary(),
    )
