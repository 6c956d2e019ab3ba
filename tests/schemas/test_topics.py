"""Topic configuration decided in one place."""

from __future__ import annotations

from schemas.topics import BALANCES, DIMONA, REJECTED, TOPICS, topic_configs


def _config(name: str, timestamp_type: str) -> dict[str, str]:
    spec = next(s for s in TOPICS if s.name == name)
    return topic_configs(
        spec, timestamp_type=timestamp_type, min_insync_replicas=2, dead_letter_retention_days=90
    )


def test_production_inputs_are_stamped_by_the_broker() -> None:
    config = _config(DIMONA, "LogAppendTime")
    assert config["message.timestamp.type"] == "LogAppendTime"
    assert config["min.insync.replicas"] == "2"
    assert "retention.ms" not in config


def test_replayed_inputs_are_not_deleted_for_their_historical_timestamps() -> None:
    config = _config(DIMONA, "CreateTime")
    assert config["message.timestamp.type"] == "CreateTime"
    assert config["retention.ms"] == "-1"
    assert int(config["segment.ms"]) >= 10 * 365 * 24 * 3600 * 1000


def test_balances_are_compacted_and_dead_letters_kept_90_days() -> None:
    assert _config(BALANCES, "CreateTime")["cleanup.policy"] == "compact"
    assert "message.timestamp.type" not in _config(BALANCES, "CreateTime")
    assert _config(REJECTED, "LogAppendTime")["retention.ms"] == str(90 * 24 * 3600 * 1000)
