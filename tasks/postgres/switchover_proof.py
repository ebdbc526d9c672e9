"""What a switchover proves before it counts as done, and what it proves before it starts.

Before: the live data directory (``pg_controldata``), the incoming one, the backups (pgBackRest
info) and the server behind the DSN (``pg_control_system()``, and its ``data_directory``) are one
cluster. After: the new live server is out of recovery, is that cluster, runs on a new timeline
(higher than live's before), commits a write, and archives a WAL segment written after the
switch (``pg_stat_archiver``).
"""

from __future__ import annotations

import time

from pydantic import BaseModel, SecretStr

from tasks.core.errors import RefusedError, RunbookError
from tasks.postgres.cluster import LocalCluster
from tasks.postgres.layout import read_layout
from tasks.postgres.sql import (
    PostgresUnreachable,
    archiver_status,
    connect,
    describe,
    fetch_value,
    system_identifier,
)

ARCHIVE_POLL_S = 0.2
CHECK_MESSAGE = "runbook switchover check"


class ProofFailed(RunbookError):
    """The new live cluster did not prove itself; the switchover is undone."""


class SwitchoverProof(BaseModel):
    """What the new live cluster proved: timelines, the committed write, the archived segment.

    ``recovery_settings`` lists any ``restore_command`` or ``recovery_target*`` still in force
    from postgresql.auto.conf (the restore's are removed; others are the operator's own).
    """

    system_identifier: int
    timeline_before: int | None
    timeline: int
    committed_xid: int
    archived_segment: str
    archive_seconds: float
    recovery_settings: list[str] = []


def require_one_cluster(
    live: LocalCluster,
    incoming: LocalCluster,
    live_dsn: SecretStr,
    backup_system_id: int | None,
) -> int:
    """Refuse unless every witness names the same cluster; returns its system identifier.

    Witnesses: the live and incoming data directories (``pg_controldata``), ``backup_system_id``
    (pgBackRest info; None for a rollback, where no backup is involved), and the server behind
    ``live_dsn``, which must also run from ``live.data_dir``. A server that cannot be reached is
    skipped only when no postmaster runs in the live data directory (an outage): the proof after
    the switchover then asks it.

    Raises:
        RefusedError: they differ, or the DSN cannot be proven to point at the live directory.
    """
    witnesses = {
        f"live data directory {live.data_dir}": live.system_identifier(),
        f"incoming data directory {incoming.data_dir}": incoming.system_identifier(),
    }
    if backup_system_id is not None:
        witnesses["the backups (pgBackRest info)"] = backup_system_id
    try:
        witnesses[f"the server behind the DSN ({describe(live_dsn)})"] = system_identifier(live_dsn)
        served = read_layout(live_dsn).data_directory
    except PostgresUnreachable as exc:
        if live.process_alive():
            raise RefusedError(
                f"a server runs in {live.data_dir} but the DSN does not reach it ({exc.message}), "
                "so nothing proves they are the same cluster",
                hint="fix RUNBOOK_PG_DSN or RUNBOOK_PG_DATA_DIR so both name the live cluster",
            ) from None
    else:
        if served.resolve() != live.data_dir.resolve():
            raise RefusedError(
                f"the server behind the DSN ({describe(live_dsn)}) runs from {served}, not from "
                f"the live data directory {live.data_dir}",
                hint="RUNBOOK_PG_DSN and RUNBOOK_PG_DATA_DIR name different clusters; fix them",
            )
    if len(set(witnesses.values())) != 1:
        named = "; ".join(f"{who}: {ident}" for who, ident in witnesses.items())
        raise RefusedError(
            f"refusing to switch over: these are not one cluster ({named})",
            hint="RUNBOOK_PG_DSN, RUNBOOK_PG_DATA_DIR or the stanza point at the wrong cluster",
        )
    return next(iter(witnesses.values()))


def control_timeline(cluster: LocalCluster) -> int:
    """The timeline of a (stopped) cluster's last checkpoint, from ``pg_controldata``."""
    return int(cluster.control_data()["Latest checkpoint's TimeLineID"])


def prove_new_live(
    live_dsn: SecretStr,
    system_id: int,
    timeline_before: int | None,
    archive_deadline_s: float,
) -> SwitchoverProof:
    """Prove the server behind ``live_dsn`` took over (see the module docstring).

    ``timeline_before``: live's timeline before the switch; the new one must be higher (None:
    not checked, for a rollback onto an older timeline). Waits at most ``archive_deadline_s``
    for the segment to be archived.

    Raises:
        ProofFailed: a proof failed; PostgresUnreachable, PostgresError.
    """
    if fetch_value(live_dsn, "SELECT pg_is_in_recovery()"):
        raise ProofFailed(f"{describe(live_dsn)} came up still in recovery")
    found = system_identifier(live_dsn)
    if found != system_id:
        raise ProofFailed(
            f"{describe(live_dsn)} answers with system identifier {found}, not {system_id}",
            hint="RUNBOOK_PG_DSN does not point at the cluster just started",
        )
    with connect(live_dsn) as conn:
        segment = str(conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0])  # type: ignore[index]
        timeline = int(segment[:8], 16)
        if timeline_before is not None and timeline <= timeline_before:
            raise ProofFailed(
                f"the new live cluster runs on timeline {timeline}, not above {timeline_before}"
            )
        with conn.transaction():
            xid = int(
                conn.execute(  # a WAL record and a commit, without touching any table
                    "SELECT txid_current() FROM pg_logical_emit_message(true, 'runbook', %s)",
                    (CHECK_MESSAGE,),
                ).fetchone()[0]  # type: ignore[index]
            )
        status = conn.execute("SELECT txid_status(%s)", (xid,)).fetchone()[0]  # type: ignore[index]
        if status != "committed":
            raise ProofFailed(f"a test write (xid {xid}) did not commit: {status}")
        conn.execute("SELECT pg_switch_wal()")
        settings = [
            f"{name} = {value!r}"
            for name, value in conn.execute(
                "SELECT name, setting FROM pg_settings WHERE (name = 'restore_command'"
                " OR name LIKE 'recovery_target%') AND source <> 'default'"
                " AND sourcefile LIKE '%postgresql.auto.conf'"
            ).fetchall()
        ]
    seconds = wait_until_archived(live_dsn, segment, archive_deadline_s)
    return SwitchoverProof(
        system_identifier=found,
        timeline_before=timeline_before,
        timeline=timeline,
        committed_xid=xid,
        archived_segment=segment,
        archive_seconds=seconds,
        recovery_settings=settings,
    )


def wait_until_archived(dsn: SecretStr, segment: str, deadline_s: float) -> float:
    """Wait until ``pg_stat_archiver`` has archived ``segment`` (or a later one); the seconds.

    Raises:
        ProofFailed: not within ``deadline_s``, with the archiver's last failure.
    """
    started = time.monotonic()
    while True:
        status = archiver_status(dsn)
        last = status.last_archived_wal or ""
        if len(last) == 24 and last >= segment:
            return time.monotonic() - started
        if time.monotonic() - started > deadline_s:
            failed = (
                f"; last failure: {status.last_failed_wal} at {status.last_failed_time}"
                if status.failing
                else ""
            )
            raise ProofFailed(
                f"WAL segment {segment} was not archived within {deadline_s:.0f} s "
                f"(last archived: {last or 'none'}{failed})",
                hint="read the server log for the archive_command error; the repository must "
                "accept the new timeline",
            )
        time.sleep(ARCHIVE_POLL_S)
