"""The weekly security review's database side: failed logins and the roles and grants audit.

Failed logins come from the platform's login log (a table with ``account``, ``source_addr``,
``success`` and ``at``; its name is ``[maintenance.security].login_events_table``). The roles
audit reads ``pg_authid`` when allowed (a superuser; elsewhere ``pg_roles``, which hides
whether a role has a password) and the ACLs of schemas and tables for grants to ``PUBLIC``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from psycopg import sql
from psycopg.rows import class_row
from pydantic import BaseModel, SecretStr

from tasks.core.reports import CheckResult, timed_check
from tasks.core.retry import ops_task
from tasks.core.runlog import run_logger
from tasks.core.settings import SecurityThresholds
from tasks.postgres.sql import connect
from tasks.postgres.stats import STATEMENT_TIMEOUT_MS

SYSTEM = "security"
LISTED = 10
LOGIN_LOG_HINT = (
    "point RUNBOOK_MAINTENANCE_SECURITY__LOGIN_EVENTS_TABLE at the platform's login log "
    "(columns account, source_addr, success, at)"
)


class LoginFailures(BaseModel):
    """Failed logins of one source address (or one account) over the window."""

    key: str
    failures: int
    spread: int  # distinct accounts tried from the address (or addresses trying the account)
    last_at: datetime


def failed_logins(
    dsn: SecretStr, table: str, since: datetime, by: Literal["source_addr", "account"]
) -> tuple[int, list[LoginFailures]]:
    """(all failed logins since ``since``, the top 50 keys ``by`` address or account)."""
    other = "account" if by == "source_addr" else "source_addr"
    ident = sql.Identifier(*table.split("."))
    with connect(dsn, statement_timeout_ms=STATEMENT_TIMEOUT_MS) as conn:
        total = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE NOT success AND at >= %s").format(ident),
            (since,),
        ).fetchone()
        top = (
            conn.cursor(row_factory=class_row(LoginFailures))
            .execute(
                sql.SQL(
                    # an inet prints as 203.0.113.66/32: drop the host mask
                    "SELECT regexp_replace({by}::text, '/(32|128)$', '') AS key,"
                    " count(*) AS failures, count(DISTINCT {other}) AS spread,"
                    " max(at) AS last_at FROM {table}"
                    " WHERE NOT success AND at >= %s GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 50"
                ).format(by=sql.Identifier(by), other=sql.Identifier(other), table=ident),
                (since,),
            )
            .fetchall()
        )
    return int(total[0]) if total else 0, top


def check_failed_logins(
    dsn: SecretStr, t: SecurityThresholds, now: datetime, by: Literal["source_addr", "account"]
) -> CheckResult:
    """A failed-logins check, by source address or by account, over the last ``window_days``.

    By address it fails for an address with more than ``failed_logins_per_address`` failures;
    by account it warns past ``failed_logins_per_account``. Only the top 50 keys are judged.
    Metrics: ``failed_logins`` and ``addresses_over_threshold`` or ``accounts_over_threshold``.

    Raises:
        PostgresUnreachable, PostgresError (e.g. no login log table).
    """
    per_address = by == "source_addr"
    threshold = t.failed_logins_per_address if per_address else t.failed_logins_per_account
    total, top = failed_logins(dsn, t.login_events_table, now - timedelta(days=t.window_days), by)
    over = [f for f in top if f.failures > threshold]
    what, spread = ("addresses", "accounts") if per_address else ("accounts", "addresses")
    window = f"{t.window_days:g} d"
    detail = "; ".join(
        f"{f.key}: {f.failures} failed on {f.spread} {spread}, last "
        f"{f.last_at.isoformat(timespec='minutes')}"
        for f in over[:LISTED]
    )
    hint = ""
    if over and per_address:
        hint = (
            "block or rate-limit these addresses at the WAF or load balancer; one address "
            "failing on many accounts is credential stuffing: check those accounts for logins "
            "that succeeded from it"
        )
    elif over:
        hint = (
            "lock the accounts or force a password reset and tell their owners; look up the "
            "addresses that tried them; offer MFA"
        )
    return CheckResult(
        name=f"failed-logins-by-{'address' if per_address else 'account'}",
        status=("fail" if per_address else "warn") if over else "ok",
        system=SYSTEM,
        figure=f"{len(over)} {what} over {threshold} in {window}; {total} failed logins",
        detail=detail or f"no {what} over the threshold",
        hint=hint,
        metrics={"failed_logins": float(total), f"{what}_over_threshold": float(len(over))},
    )


class RoleInfo(BaseModel):
    """One role of ``pg_authid`` (or ``pg_roles``): superuser, can log in, password, expiry."""

    name: str
    superuser: bool
    can_login: bool
    has_password: bool | None  # None: not allowed to read pg_authid
    never_expires: bool


def database_roles(dsn: SecretStr) -> list[RoleInfo]:
    """Every role but PostgreSQL's own, with whether it has a password when that is readable
    (``pg_authid`` needs a superuser; ``pg_roles`` hides it)."""
    with connect(dsn, statement_timeout_ms=STATEMENT_TIMEOUT_MS) as conn:
        readable = conn.execute("SELECT has_table_privilege('pg_authid', 'SELECT')").fetchone()
        source, password = (
            ("pg_authid", "rolpassword IS NOT NULL")
            if readable and readable[0]
            else ("pg_roles", "NULL::boolean")
        )
        return (
            conn.cursor(row_factory=class_row(RoleInfo))
            .execute(
                f"SELECT rolname AS name, rolsuper AS superuser, rolcanlogin AS can_login,"
                f" {password} AS has_password,"
                " rolvaliduntil IS NULL OR rolvaliduntil = 'infinity' AS never_expires"
                f" FROM {source} WHERE rolname !~ '^pg_' ORDER BY rolname"
            )
            .fetchall()
        )


def check_database_roles(dsn: SecretStr, t: SecurityThresholds) -> CheckResult:
    """The ``database-roles`` check: superusers, login roles without a password or an expiry.

    Fails for superusers not in ``expected_superusers`` and login roles without a password;
    warns for login roles that never expire and are not in ``roles_without_expiry``.

    Raises:
        PostgresUnreachable, PostgresError.
    """
    roles = database_roles(dsn)
    login = [r for r in roles if r.can_login]
    superusers = [r.name for r in roles if r.superuser and r.name not in t.expected_superusers]
    no_password = [r.name for r in login if r.has_password is False]
    no_expiry = [r.name for r in login if r.never_expires and r.name not in t.roles_without_expiry]
    problems, hints = [], []
    if superusers:
        problems.append(f"unexpected superusers: {', '.join(superusers)}")
        hints.append("ALTER ROLE ... NOSUPERUSER, or add them to expected_superusers")
    if no_password:
        problems.append(f"can log in without a password: {', '.join(no_password)}")
        hints.append(
            "set a password (or NOLOGIN) and make sure pg_hba.conf has no trust rule for them"
        )
    if no_expiry:
        problems.append(f"login roles that never expire: {', '.join(no_expiry)}")
        hints.append("ALTER ROLE ... VALID UNTIL a date, or list them in roles_without_expiry")
    unknown = "" if all(r.has_password is not None for r in roles) else "; passwords not readable"
    return CheckResult(
        name="database-roles",
        status="fail" if superusers or no_password else ("warn" if no_expiry else "ok"),
        system=SYSTEM,
        figure=f"{len(roles)} roles, {len(login)} can log in, "
        f"{sum(r.superuser for r in roles)} superusers",
        detail="; ".join(problems) + unknown or "roles as expected" + unknown,
        hint="; ".join(hints),
        metrics={
            "roles": float(len(roles)),
            "unexpected_superusers": float(len(superusers)),
            "without_password": float(len(no_password)),
            "without_expiry": float(len(no_expiry)),
        },
    )


_PUBLIC_GRANTS = """
SELECT 'schema ' || n.nspname, a.privilege_type
FROM pg_namespace n, aclexplode(n.nspacl) a
WHERE a.grantee = 0 AND a.privilege_type <> 'USAGE'
  AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
UNION ALL
SELECT 'table ' || n.nspname || '.' || c.relname, a.privilege_type
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
WHERE a.grantee = 0 AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
  AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


def public_grants(dsn: SecretStr) -> list[tuple[str, str]]:
    """(object, privilege) granted to PUBLIC, beyond PostgreSQL's defaults and extensions'."""
    with connect(dsn, statement_timeout_ms=STATEMENT_TIMEOUT_MS) as conn:
        return [(str(r[0]), str(r[1])) for r in conn.execute(_PUBLIC_GRANTS).fetchall()]


def check_public_grants(dsn: SecretStr) -> CheckResult:
    """The ``public-grants`` check: fails when a schema or table grants anything to PUBLIC.

    Schema USAGE (a default) and extensions' tables are not counted.

    Raises:
        PostgresUnreachable, PostgresError.
    """
    grants = public_grants(dsn)
    by_object: dict[str, list[str]] = {}
    for obj, privilege in grants:
        by_object.setdefault(obj, []).append(privilege)
    return CheckResult(
        name="public-grants",
        status="fail" if grants else "ok",
        system=SYSTEM,
        figure=f"{len(by_object)} objects granted to PUBLIC",
        detail="; ".join(f"{obj}: {', '.join(p)}" for obj, p in by_object.items())
        or "nothing granted to PUBLIC beyond the defaults",
        hint="REVOKE ... FROM PUBLIC and grant to the roles that need it (CREATE on a schema "
        "lets any role plant objects other roles' queries may pick up)"
        if grants
        else "",
        metrics={"public_grants": float(len(grants))},
    )


@ops_task("run-security-checks")
def run_security_checks(
    dsn: SecretStr, thresholds: SecurityThresholds, now: datetime
) -> list[CheckResult]:
    """Failed logins by address and by account, the roles audit and grants to PUBLIC."""
    t = thresholds
    checks = [
        timed_check(
            "failed-logins-by-address",
            lambda: check_failed_logins(dsn, t, now, "source_addr"),
            system=SYSTEM,
            hint=LOGIN_LOG_HINT,
        ),
        timed_check(
            "failed-logins-by-account",
            lambda: check_failed_logins(dsn, t, now, "account"),
            system=SYSTEM,
            hint=LOGIN_LOG_HINT,
        ),
        timed_check("database-roles", lambda: check_database_roles(dsn, t), system=SYSTEM),
        timed_check("public-grants", lambda: check_public_grants(dsn), system=SYSTEM),
    ]
    logger = run_logger()
    for check in checks:
        logger.info("security %s: %s %s", check.name, check.status, check.figure)
    return checks
