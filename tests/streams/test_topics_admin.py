"""Topic configuration is enforced: the worker refuses, ``studentwork topics`` reconciles.

Every test works on its own topic prefix on the shared broker, and creates the topics it
wants to be wrong beforehand, as an operator or an older release would have.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from schemas.settings import Settings
from schemas.topics import DIMONA, DMFA, REJECTED, TOPICS
from streams.admin import (
    ConfigChange,
    TopicConfigError,
    ensure_topics,
    reconcile_topics,
    verify_input_topics,
)
from tests.support import REPO

pytestmark = pytest.mark.integration

NINETY_DAYS_MS = str(90 * 24 * 3600 * 1000)


def _settings(kafka_bootstrap: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap": kafka_bootstrap,
        "topic_prefix": f"t{uuid.uuid4().hex[:8]}.",
        "partitions": 2,
        "replication_factor": 1,
        "min_insync_replicas": 1,
        "input_timestamp_type": "LogAppendTime",
        "dead_letter_retention_days": 90,
    }
    return Settings(**{**values, **overrides})


async def _create(
    settings: Settings, name: str, partitions: int, configs: dict[str, str] | None = None
) -> None:
    """Create one topic as it should not be, before the project touches it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(settings.topic(name), partitions, 1, topic_configs=configs or {})]
        )
        assert [entry[1] for entry in response.topic_errors] == [0]
        # Another client's listing sees a new topic once its metadata has propagated.
        for _ in range(100):
            if settings.topic(name) in await admin.list_topics():
                break
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def _configs(settings: Settings, name: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, settings.topic(name))]
        )
        (resource,) = responses[0].to_object()["resources"]
        assert resource["error_code"] == 0
        return {e["config_names"]: e["config_value"] for e in resource["config_entries"]}
    finally:
        await admin.close()


async def _partitions(settings: Settings, name: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        (topic,) = await admin.describe_topics([settings.topic(name)])
        return len(topic["partitions"])
    finally:
        await admin.close()


async def _existing(settings: Settings) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        return {t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)}
    finally:
        await admin.close()


async def test_backdatable_input_topic_is_refused_then_reconciled(kafka_bootstrap: str) -> None:
    settings = _settings(kafka_bootstrap)
    # What a CreateTime deployment (replays, the simulator) would have created.
    await _create(
        settings, DIMONA, 2, {"message.timestamp.type": "CreateTime", "retention.ms": "-1"}
    )
    await ensure_topics(settings)

    with pytest.raises(TopicConfigError) as refused:
        await verify_input_topics(settings)
    (problem,) = refused.value.problems
    name = settings.topic(DIMONA)
    assert name in problem
    assert "message.timestamp.type is CreateTime, expected LogAppendTime" in problem
    assert "`studentwork topics`" in problem
    assert problem in str(refused.value)

    report = await reconcile_topics(settings)
    assert report.created == []
    assert report.problems == []
    assert report.altered == [
        ConfigChange(name, "message.timestamp.type", "CreateTime", "LogAppendTime")
    ]
    configs = await _configs(settings, DIMONA)
    assert configs["message.timestamp.type"] == "LogAppendTime"
    # Kept: dropping it would let the broker delete the historical records at once.
    assert configs["retention.ms"] == "-1"
    await verify_input_topics(settings)
    assert not (await reconcile_topics(settings)).differs


async def test_wrong_partition_count_is_refused_and_left_alone(kafka_bootstrap: str) -> None:
    settings = _settings(kafka_bootstrap)
    await _create(settings, DMFA, 3, {"message.timestamp.type": "LogAppendTime"})
    await ensure_topics(settings)
    name = settings.topic(DMFA)

    with pytest.raises(TopicConfigError) as refused:
        await verify_input_topics(settings)
    (problem,) = refused.value.problems
    assert f"topic {name}: 3 partitions, expected 2" in problem
    assert "per-student order" in problem

    report = await reconcile_topics(settings)
    assert report.altered == []
    (unfixable,) = report.problems
    assert f"topic {name}: 3 partitions, expected 2" in unfixable
    assert await _partitions(settings, DMFA) == 3


async def test_check_reports_without_changing(kafka_bootstrap: str) -> None:
    settings = _settings(kafka_bootstrap)
    await _create(settings, DIMONA, 2, {"message.timestamp.type": "CreateTime"})
    await _create(settings, REJECTED, 2, {"retention.ms": "86400000"})

    report = await reconcile_topics(settings, check=True)

    assert report.check
    assert report.differs
    assert set(report.created) == {
        settings.topic(s.name) for s in TOPICS if s.name not in (DIMONA, REJECTED)
    }
    assert set(report.altered) == {
        ConfigChange(
            settings.topic(DIMONA), "message.timestamp.type", "CreateTime", "LogAppendTime"
        ),
        ConfigChange(settings.topic(REJECTED), "retention.ms", "86400000", NINETY_DAYS_MS),
    }
    assert report.problems == []
    assert await _existing(settings) == {settings.topic(DIMONA), settings.topic(REJECTED)}
    assert (await _configs(settings, DIMONA))["message.timestamp.type"] == "CreateTime"
    assert (await _configs(settings, REJECTED))["retention.ms"] == "86400000"


async def test_differing_retention_is_altered_and_other_overrides_kept(
    kafka_bootstrap: str,
) -> None:
    settings = _settings(kafka_bootstrap)
    # An operator raised the message size limit: reconciling must not drop that.
    await _create(
        settings, REJECTED, 2, {"retention.ms": "86400000", "max.message.bytes": "2000000"}
    )

    report = await reconcile_topics(settings)

    assert set(report.created) == {settings.topic(s.name) for s in TOPICS if s.name != REJECTED}
    assert report.altered == [
        ConfigChange(settings.topic(REJECTED), "retention.ms", "86400000", NINETY_DAYS_MS)
    ]
    assert report.problems == []
    configs = await _configs(settings, REJECTED)
    assert configs["retention.ms"] == NINETY_DAYS_MS
    assert configs["max.message.bytes"] == "2000000"


async def test_replay_settings_pass_verification(kafka_bootstrap: str) -> None:
    # What every pipeline test and the simulator run with: must not be refused.
    settings = _settings(kafka_bootstrap, input_timestamp_type="CreateTime")
    await ensure_topics(settings)
    await verify_input_topics(settings)
    assert not (await reconcile_topics(settings, check=True)).differs


async def _studentwork(settings: Settings, *args: str, **env: str) -> tuple[int, str, str]:
    """Run ``python -m infra`` as deployed; return exit code, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "infra",
        *args,
        cwd=REPO,
        env={
            **os.environ,
            "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "STUDENTWORK_TOPIC_PREFIX": settings.topic_prefix,
            "STUDENTWORK_DEVELOPMENT": "true",
            "STUDENTWORK_PARTITIONS": str(settings.partitions),
            "STUDENTWORK_INPUT_TIMESTAMP_TYPE": settings.input_timestamp_type,
            **env,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_commands_refuse_check_and_reconcile(kafka_bootstrap: str, database_url: str) -> None:
    settings = _settings(kafka_bootstrap)
    dimona, dmfa = settings.topic(DIMONA), settings.topic(DMFA)
    await _create(settings, DIMONA, 2, {"message.timestamp.type": "CreateTime"})
    await _create(settings, DMFA, 3, {"message.timestamp.type": "LogAppendTime"})

    code, out, err = await _studentwork(settings, "topics", "--check")
    assert code == 1
    assert "missing: " in out
    assert f"differs: {dimona}: message.timestamp.type CreateTime -> LogAppendTime" in out
    assert f"problem: topic {dmfa}: 3 partitions, expected 2" in err
    assert await _existing(settings) == {dimona, dmfa}

    code, out, err = await _studentwork(settings, "worker", DATABASE_URL=database_url)
    assert code == 2
    assert "worker not started" in err
    assert f"topic {dimona}: message.timestamp.type is CreateTime, expected LogAppendTime" in err
    assert f"topic {dmfa}: 3 partitions, expected 2" in err
    assert "Traceback" not in err

    # The worker's start created the missing topics, and only those.
    assert len(await _existing(settings)) == len(TOPICS)
    code, out, err = await _studentwork(settings, "topics")
    assert code == 1
    assert "created: " not in out
    assert f"altered: {dimona}: message.timestamp.type CreateTime -> LogAppendTime" in out
    assert f"cannot fix: topic {dmfa}: 3 partitions, expected 2" in err
    assert (await _configs(settings, DIMONA))["message.timestamp.type"] == "LogAppendTime"
    assert await _partitions(settings, DMFA) == 3

    # Only the partition count is left, and it stays a problem.
    code, out, err = await _studentwork(settings, "topics", "--check")
    assert code == 1
    assert out == ""
    assert f"problem: topic {dmfa}: 3 partitions, expected 2" in err


async def test_topics_command_on_matching_topics_exits_zero(kafka_bootstrap: str) -> None:
    settings = _settings(kafka_bootstrap)
    code, out, _err = await _studentwork(settings, "topics")
    assert code == 0
    assert "created: " in out
    code, out, _err = await _studentwork(settings, "topics", "--check")
    assert code == 0
    assert out.strip() == "all topics match their declaration"
