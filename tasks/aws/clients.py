"""boto3 clients built from ``AwsSettings``, and botocore errors turned into ``AwsError``.

Every client has connect and read timeouts and a bounded number of attempts, so a check against
a dead endpoint ends in seconds. Error messages carry AWS's error code and text (never keys).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore import exceptions as boto_errors
from botocore.config import Config

from tasks.core.errors import RunbookError
from tasks.core.settings import AwsSettings

CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredToken",
        "ExpiredTokenException",
        "AuthFailure",
    }
)
DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})
TRANSIENT_CODES = frozenset(
    {"Throttling", "ThrottlingException", "SlowDown", "RequestLimitExceeded", "RequestTimeout"}
)
CREDENTIALS_HINT = (
    "check RUNBOOK_AWS_ACCESS_KEY_ID and RUNBOOK_AWS_SECRET_ACCESS_KEY (or the instance role) "
    "and RUNBOOK_AWS_REGION"
)


class AwsError(RunbookError):
    """An AWS call failed; ``code`` is AWS's error code ("" when the call never got an answer)."""

    def __init__(self, message: str, *, hint: str = "", code: str = "") -> None:
        super().__init__(message, hint=hint)
        self.code = code


class AwsUnreachable(AwsError):
    """No answer: endpoint down, DNS, timeout, or AWS itself failing (5xx)."""

    transient = True


class AwsCredentialsError(AwsError):
    """The credentials are missing, unknown, expired or not allowed to do this."""


def aws_client(settings: AwsSettings, service: str) -> Any:
    """A client for ``service`` (``s3``, ``ses``, ``logs``, ``cloudwatch``...) from settings.

    Clients are safe to use from the threads that run checks concurrently; sessions are not,
    so clients are made under a lock, from one session per set of credentials, which also
    shares the parsed service models between them (the costly part of making a client).
    """
    key = (settings.region, _secret(settings.access_key_id), _secret(settings.secret_access_key))
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            session = _SESSIONS[key] = boto3.session.Session(
                aws_access_key_id=key[1], aws_secret_access_key=key[2], region_name=key[0]
            )
        return session.client(service, endpoint_url=settings.endpoint_url, config=_config(settings))


_SESSIONS: dict[tuple[str | None, str | None, str | None], boto3.session.Session] = {}
_SESSIONS_LOCK = threading.Lock()


def _config(settings: AwsSettings) -> Config:
    return Config(
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        retries={"max_attempts": settings.max_attempts, "mode": "standard"},
        s3={"addressing_style": "path"} if settings.endpoint_url else None,
    )


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


@contextmanager
def aws_errors(what: str) -> Iterator[None]:
    """Convert botocore errors raised inside into ``AwsError`` with a hint; ``what``: the call."""
    try:
        yield
    except boto_errors.ClientError as exc:
        raise client_error(exc, what) from exc
    except (boto_errors.ConnectionError, boto_errors.HTTPClientError) as exc:
        raise AwsUnreachable(
            f"{what}: no answer from AWS ({type(exc).__name__})",
            hint="check RUNBOOK_AWS_ENDPOINT_URL / the network path to AWS, then retry",
        ) from exc
    except (boto_errors.NoCredentialsError, boto_errors.PartialCredentialsError) as exc:
        raise AwsCredentialsError(f"{what}: no AWS credentials", hint=CREDENTIALS_HINT) from exc
    except boto_errors.BotoCoreError as exc:
        raise AwsError(f"{what}: {exc}", hint="read the error; check the AWS settings") from exc


def client_error(exc: boto_errors.ClientError, what: str) -> AwsError:
    """The ``AwsError`` for a botocore ``ClientError`` (returned for the caller to raise).

    ``AwsCredentialsError`` for credential codes and for denials (including a bare HTTP 401/403),
    ``AwsUnreachable`` (transient) for throttling codes and HTTP 5xx, else ``AwsError``. The
    message is ``what``, AWS's code and HTTP status, and the first line of AWS's text.
    """
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    text = str(error.get("Message") or "")
    if text.startswith("<"):  # an unparsed XML or HTML body: its code is all we can use
        text = ""
    head = f"{code} (HTTP {status})" if code and status else code or f"HTTP {status}"
    message = f"{what}: {head} {text.splitlines()[0] if text else ''}".rstrip()
    if code in CREDENTIAL_CODES:
        return AwsCredentialsError(message, hint=CREDENTIALS_HINT, code=code)
    if code in DENIED_CODES or status in (401, 403):  # HEAD requests carry no code at all
        return AwsCredentialsError(
            message,
            hint=f"{CREDENTIALS_HINT}; if they are right, allow {what.split()[0]} in the IAM "
            "policy of the runbook's AWS principal",
            code=code,
        )
    if code in TRANSIENT_CODES or status >= 500:
        return AwsUnreachable(
            message, hint="AWS is throttling or failing: retry later, check its status", code=code
        )
    return AwsError(message, hint="read AWS's message above", code=code)
