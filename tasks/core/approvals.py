"""Approval decisions as data: what was decided at a gate, by whom, on which plan, and its record.

The gate itself (the pause) only works inside a flow run: ``flows.approval``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from tasks.core.reports import markdown_table, publish_markdown

Outcome = Literal["approved", "rejected", "empty", "timed-out"]


class ApprovalDecision(BaseModel):
    """One decision at an approval gate: step, outcome, approver, reason, time, plan sha256."""

    step: str
    outcome: Outcome
    approver: str = ""
    reason: str = ""
    decided_at: datetime
    plan_digest: str = Field(description="sha256 of the plan text that was shown")

    @property
    def approved(self) -> bool:
        """True only for the ``approved`` outcome."""
        return self.outcome == "approved"

    def summary(self) -> str:
        """One sentence saying what was decided, by whom and why (for logs, artifacts, states)."""
        who = f" by {self.approver}" if self.approver else ""
        why = f": {self.reason}" if self.reason else ""
        return {
            "approved": f"{self.step} approved{who}{why}",
            "rejected": f"{self.step} rejected{who}{why}; nothing was changed",
            "empty": f"{self.step} not approved: resumed without ticking 'approved' and giving "
            "an approver and a reason; nothing was changed",
            "timed-out": f"{self.step} not approved in time; nothing was changed",
        }[self.outcome]


def record_decision(decision: ApprovalDecision, plan_markdown: str) -> None:
    """Publish the decision and the plan shown as the ``approval-<step>`` markdown artifact.

    Only inside a flow run (``publish_markdown``); elsewhere it does nothing.
    """
    table = markdown_table(
        ["step", "decision", "approver", "reason", "decided at", "plan sha256"],
        [
            [
                decision.step,
                decision.outcome,
                decision.approver or "-",
                decision.reason or "-",
                decision.decided_at.isoformat(),
                decision.plan_digest[:16],
            ]
        ],
    )
    publish_markdown(
        f"approval-{decision.step}",
        f"# Approval: {decision.step}\n\n{table}\n\n## The plan that was shown\n\n{plan_markdown}",
        description=decision.summary(),
    )
