"""A process doing a switchover that halts at a chosen step, so that a test can kill it there.

Usage: ``python -m tests.switchover_child RESTORED_JSON STEP BACKUP_SYSTEM_ID`` with
``RUNBOOK_CONFIG`` naming the sandbox's settings. It runs the real ``switch_over`` task body;
only the journal's ``record`` is wrapped: after the chosen step is written (and fsynced) it
prints ``at STEP`` and sleeps until a signal comes. Exit codes: 0 done, 3 interrupted.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from tasks.core.settings import load_settings
from tasks.postgres.layout import live_cluster
from tasks.postgres.scratch import ScratchCluster
from tasks.postgres.switchover import switch_over
from tasks.postgres.switchover_journal import SwitchoverJournal


def main() -> int:
    restored = ScratchCluster.model_validate_json(sys.argv[1])
    halt_at, backup_system_id = sys.argv[2], int(sys.argv[3])
    settings = load_settings()
    record = SwitchoverJournal.record

    def record_then_halt(self: SwitchoverJournal, step: Any, **updates: Any) -> None:
        record(self, step, **updates)
        if step == halt_at:
            print(f"at {step}", flush=True)
            while True:
                time.sleep(0.1)

    SwitchoverJournal.record = record_then_halt  # type: ignore[method-assign]
    try:
        switch_over.fn(
            restored.cluster(),
            live_cluster(settings),
            settings.live_dsn(),
            backup_system_id,
            settings.recovery,
        )
    except BaseException as exc:  # noqa: BLE001 - the test reads how it ended
        print(f"interrupted: {type(exc).__name__}", flush=True)
        return 3
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
