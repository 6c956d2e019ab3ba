"""Log output of every process: text or JSON lines, and no SSIN in either.

Who uses it: every ``studentwork`` command that runs for long (worker, relay, eBox
consumer) through :func:`configure`, and the worker's faust host through
:func:`logging_config` (faust replaces the root handlers at start, so it is handed the
same configuration instead of keeping ours).

``STUDENTWORK_LOG_FORMAT=json`` gives one JSON object a line (python-json-logger) with
``time``, ``level``, ``logger`` and ``message``, plus ``topic``, ``partition``,
``offset`` and ``batch`` where the code that logs knows them (the runtime sets the batch
in :data:`CURRENT_BATCH` and passes the record with :func:`record_fields`), for log
shippers.

**SSIN masking** (issue 8, retention): a student's national number has no place in any
log line, whatever the format. Masking happens where a log record is *created* (a
record factory), so it holds for every handler and formatter, faust's included. The rule:
every run of exactly 11 digits, any 11 digits with valid SSIN check digits inside a
longer run of digits (a debug dump of raw bytes writes ``\x1693051822361``, the escape's
digits touching the number), and the written forms ``YY.MM.DD-XXX.CC`` /
``YYMMDD-XXX-CC``, become ``<ssin>``. Nothing of the number is kept: birth date and
serial together identify a person, and a hash of 10^11 values is reversed by
enumeration. An 11-digit number that is not an SSIN (a Kafka offset beyond ten billion)
is masked too; log lines are correlated by topic, partition and offset instead.
Enterprise numbers (10 digits) are left alone, and so are period ids (12 digits) and
timestamps (13) unless 11 of their digits happen to pass the check. The message, its
arguments and any traceback (exception messages quote inputs: pydantic's errors do)
are masked.
"""

from __future__ import annotations

import contextvars
import logging
import logging.config
import re
from collections.abc import Callable
from typing import Any

from schemas.settings import Settings

#: The placeholder that stands for a masked SSIN.
MASK = "<ssin>"

#: The written forms of an SSIN, and every run of 11 or more digits (checked below).
_WRITTEN = re.compile(
    r"(?<![0-9])(?:[0-9]{2}\.[0-9]{2}\.[0-9]{2}-[0-9]{3}\.[0-9]{2}|[0-9]{6}-[0-9]{3}-[0-9]{2})(?![0-9])"
)
_DIGITS = re.compile(r"[0-9]{11,}")


def _valid_ssin_digits(digits: str) -> bool:
    """Whether 11 digits carry valid SSIN check digits (born before or after 2000)."""
    base, check = int(digits[:9]), int(digits[9:])
    return check in (97 - base % 97, 97 - (2_000_000_000 + base) % 97)


def _mask_run(match: re.Match[str]) -> str:
    run = match.group()
    if len(run) == 11:
        return MASK
    # Inside a longer run (a protocol dump writes b"\x1693051822361": the escape's
    # digits touch the number): mask each window with valid check digits.
    out, i = [], 0
    while i < len(run):
        window = run[i : i + 11]
        if len(window) == 11 and _valid_ssin_digits(window):
            out.append(MASK)
            i += 11
        else:
            out.append(run[i])
            i += 1
    return "".join(out)


#: The batch being applied in this task (``<lane>#<n>``), for the ``batch`` field.
CURRENT_BATCH: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "studentwork_batch", default=None
)

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"


def mask_ssins(text: str) -> str:
    """``text`` with every SSIN-shaped number replaced by :data:`MASK`."""
    return _DIGITS.sub(_mask_run, _WRITTEN.sub(MASK, text))


def record_fields(topic: str, partition: int, offset: int) -> dict[str, Any]:
    """The ``extra`` of a log call about one record (fields of a JSON line)."""
    return {"topic": topic, "partition": partition, "offset": offset}


def _masking_factory(
    previous: Callable[..., logging.LogRecord],
) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep the raw parts, masked
            message = f"{record.msg} {record.args}"
        record.msg, record.args = mask_ssins(message), ()
        if record.exc_info and record.exc_info[1] is not None:
            # Pre-formatted here, masked; formatters reuse exc_text when it is set.
            record.exc_text = mask_ssins(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = mask_ssins(record.stack_info)
        batch = CURRENT_BATCH.get()
        if batch is not None and not hasattr(record, "batch"):
            record.batch = batch
        return record

    return factory


def install_masking() -> None:
    """Mask SSINs in every log record this process creates from now on (idempotent)."""
    current = logging.getLogRecordFactory()
    if getattr(current, "studentwork_masking", False):
        return
    factory = _masking_factory(current)
    factory.studentwork_masking = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
    logging.captureWarnings(True)


def logging_config(settings: Settings) -> dict[str, Any]:
    """The :func:`logging.config.dictConfig` of ``settings``: one stderr handler, text or
    JSON lines, at ``STUDENTWORK_LOG_LEVEL``."""
    level = settings.log_level.upper()
    formatter: dict[str, Any]
    if settings.log_format == "json":
        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": _JSON_FIELDS,
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            "timestamp": False,
        }
    else:
        formatter = {"format": _TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["default"]},
    }


def configure(settings: Settings) -> None:
    """Set up this process's logging from ``settings``, SSINs masked."""
    install_masking()
    logging.config.dictConfig(logging_config(settings))
