"""SSIN masking in every log line (streams.logs), text and JSON, tracebacks included."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from pythonjsonlogger.json import JsonFormatter

from schemas.settings import Settings
from streams.logs import MASK, install_masking, logging_config, mask_ssins, record_fields

SSIN = "93051822361"
BORN_2000S = "00010112377"  # check digits computed with the 2 prefix


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"student {SSIN} declared", f"student {MASK} declared"),
        ("written 93.05.18-223.61 here", f"written {MASK} here"),
        ("written 930518-223-61 here", f"written {MASK} here"),
        # Any standalone 11 digits: a mistyped SSIN is still someone's number.
        ("bad check 93051822362", f"bad check {MASK}"),
        # A raw-bytes dump: the escape's digits touch the number.
        (f"b'\\x16{SSIN}\\x00'", f"b'\\x16{MASK}\\x00'"),
        (f"ts=17{BORN_2000S}", f"ts=17{MASK}"),
        # Enterprise numbers, period ids and timestamps stay.
        ("employer 0123456749", "employer 0123456749"),
        ("period 335249918608", "period 335249918608"),
        ("at 1780297200000", "at 1780297200000"),
    ],
)
def test_the_masking_rule(text: str, masked: str) -> None:
    assert mask_ssins(text) == masked


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    install_masking()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def test_arguments_and_tracebacks_are_masked(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.warning("refused %s for %r", SSIN, {"ssin": SSIN})
    try:
        raise ValueError(f"input_value='{SSIN}'")
    except ValueError:
        logger.exception("failed")
    out = stream.getvalue()
    assert SSIN not in out
    assert f"refused {MASK} for {{'ssin': '{MASK}'}}" in out
    assert f"ValueError: input_value='{MASK}'" in out


def test_json_lines_carry_record_fields_and_no_ssin() -> None:
    install_masking()
    settings = Settings(log_format="json", log_level="info")
    config = logging_config(settings)
    stream = io.StringIO()
    spec = config["formatters"]["default"]
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        JsonFormatter(spec["fmt"], rename_fields=spec["rename_fields"], timestamp=False)
    )
    logger = logging.getLogger("test.logs.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.warning(
            "rejected %s", f"key {SSIN}", extra=record_fields("dimona.declarations", 1, 42)
        )
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["message"] == f"rejected key {MASK}"
    assert (line["level"], line["logger"]) == ("WARNING", "test.logs.json")
    assert (line["topic"], line["partition"], line["offset"]) == ("dimona.declarations", 1, 42)
    assert SSIN not in stream.getvalue()
