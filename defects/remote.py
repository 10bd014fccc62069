"""`defects data pull` / `defects data push`: DVC's pull and push behind a check of the remote.

DVC alone answers a remote that is down, refuses the keys or lacks its bucket with
"unexpected error" and a boto message that names neither the endpoint nor the fix. Here the
default remote is asked first (`defects doctor`'s check: a HEAD of the bucket with the same
endpoint and keys), so each of those faults ends in one line naming the remote, its endpoint
and what to check, before anything moves: the workspace stays as it was. A transfer that
fails part-way is checked again and told the same way. Nothing shown holds a secret: the
keys go to boto3 only, and any text DVC or boto3 gives is scrubbed of them first.

A pull that dies part-way (killed, the connection lost) leaves the workspace as it was: DVC
fetches every object into its cache first, each written whole (a temporary file, renamed),
and checks out only when all arrived. Pulling again fetches the rest and checks out.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from defects.doctor import check_dvc_remote, find_dvc_root, read_dvc_config
from defects.settings import Settings, load_settings

log = logging.getLogger("defects")
Direction = Literal["pull", "push"]
# The loggers a transfer reports through: DVC logs a traceback for each failed object, boto3
# tells where it found the keys and endpoint.
TRANSFER_LOGGERS = ("dvc", "dvc_data", "dvc_objects", "botocore", "aiobotocore", "s3fs")
SECRET_KEYS = ("secret_access_key", "session_token")
SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


class RemoteError(RuntimeError):
    """The DVC remote cannot be used, or a transfer failed: one line, never a secret."""


def secrets(settings: Settings, repo: Path) -> list[str]:
    """Every secret this transfer may hold (environment, `.env`, the DVC configs), so that
    none can reach what is shown even if a library quotes one."""
    found = [os.environ.get(name) for name in SECRET_VARIABLES]
    if settings.s3_secret_access_key is not None:
        found.append(settings.s3_secret_access_key.get_secret_value())
    for section in read_dvc_config(repo).values():
        found.extend(section.get(key) for key in SECRET_KEYS)
    return [value for value in found if value]


def scrub(text: str, hidden: Sequence[str]) -> str:
    for value in hidden:
        text = text.replace(value, "***")
    return text


class _Kept(logging.Handler):
    """Keeps records instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def transfer_logs_kept() -> Iterator[list[logging.LogRecord]]:
    """DVC's and boto3's warnings and errors during the block, kept (for one summary line
    instead of a traceback per failed file); their chatter below warnings dropped."""
    kept = _Kept()
    loggers = [logging.getLogger(name) for name in TRANSFER_LOGGERS]
    before = [(logger.propagate, logger.handlers) for logger in loggers]
    for logger in loggers:
        logger.propagate, logger.handlers = False, [kept]
    try:
        yield kept.records
    finally:
        for logger, (propagate, handlers) in zip(loggers, before, strict=True):
            logger.propagate, logger.handlers = propagate, handlers


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def transfer(
    direction: Direction,
    targets: Sequence[str] = (),
    root: str | Path = ".",
    jobs: int | None = None,
    timeout: float = 5.0,
) -> str:
    """Check the default remote, then `dvc pull` / `dvc push` the targets (all by default);
    returns a one-line summary, raises RemoteError with one line."""
    settings = load_settings()
    start = Path(root)
    check = check_dvc_remote(settings, start, timeout)
    if not check.ok:
        raise RemoteError(f"dvc {direction}: {check.detail}; fix: {check.fix}")
    repo = find_dvc_root(start)
    assert repo is not None  # the check found it
    hidden = secrets(settings, repo)
    remote = read_dvc_config(repo).get("core", {}).get("remote", "")
    from dvc.repo import Repo

    with transfer_logs_kept() as records:
        try:
            with Repo(str(repo)) as dvc:
                action = dvc.pull if direction == "pull" else dvc.push
                result: Any = action(targets=list(targets) or None, jobs=jobs)
        except Exception as exc:
            message = failure(direction, exc, records, settings, start, timeout)
            raise RemoteError(scrub(message, hidden)) from None
    for record in records:
        log.warning("%s: %s", record.name, scrub(record.getMessage(), hidden))
    from dvc.utils.humanize import get_summary  # DVC's own wording: "13 files fetched"

    if direction == "push":
        stats: dict[str, Any] = {"pushed": int(result or 0)}
    else:
        stats = result.get("stats", {}) if isinstance(result, dict) else {}
    return f"dvc {direction} ({remote}): {get_summary(stats.items()) or 'everything up to date'}"


def failure(
    direction: Direction,
    exc: Exception,
    records: list[logging.LogRecord],
    settings: Settings,
    start: Path,
    timeout: float,
) -> str:
    """What to tell when the transfer failed after the check passed: the remote is asked
    again (it may have gone away meanwhile); if it still answers, DVC's error and the first
    reason it logged."""
    again = check_dvc_remote(settings, start, timeout)
    if not again.ok:
        return f"dvc {direction}: {again.detail}; fix: {again.fix}"
    causes = [r.exc_info[1] for r in records if r.exc_info and r.exc_info[1] is not None]
    cause = f" ({first_line(causes[0])})" if causes else ""
    return (
        f"dvc {direction}: {again.detail}, yet the transfer failed: {first_line(exc)}{cause}; "
        f"fix: see the S3 service's log, then run `defects data {direction}` again "
        "(what arrived is kept)"
    )
