"""Tests for the local Kafka and PostgreSQL services.

The integration tests talk to the real session-wide services from `tests/conftest.py`;
the others check the error paths without starting anything.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from infra import LocalKafka, LocalPostgres, MissingTool, local_services


@pytest.mark.integration
async def test_message_round_trip_through_kafka(kafka_bootstrap: str) -> None:
    topic = f"infra-test-{uuid.uuid4().hex}"
    payload = b"\x00\xffstudent hours \xe2\x82\xac"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, payload, key=b"key")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"infra-test-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), timeout=30)
    finally:
        await consumer.stop()
    assert (message.key, message.value) == (b"key", payload)


@pytest.mark.integration
async def test_postgres_answers(postgres_admin_dsn: str) -> None:
    conn = await asyncpg.connect(postgres_admin_dsn)
    try:
        assert await conn.fetchval("select 1") == 1
    finally:
        await conn.close()


@pytest.mark.integration
async def test_database_url_is_a_fresh_empty_database(
    database_url: str, postgres_admin_dsn: str
) -> None:
    assert database_url != postgres_admin_dsn
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetchval(
            "select count(*) from information_schema.tables"
            " where table_schema not in ('pg_catalog', 'information_schema')"
        )
        await conn.execute("create table scratch (id int)")
    finally:
        await conn.close()
    assert tables == 0


def test_local_kafka_without_java_names_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(MissingTool) as error:
        LocalKafka(search_path=str(tmp_path), cache_dir=tmp_path).start()
    assert "Java 17 not found" in str(error.value)
    assert "\n" not in str(error.value)


def test_local_kafka_without_maven_names_what_to_install(tmp_path: Path) -> None:
    java_only = tmp_path / "bin"
    java_only.mkdir()
    java = shutil.which("java") or pytest.skip("no java on PATH")
    (java_only / "java").symlink_to(java)
    with pytest.raises(MissingTool) as error:
        LocalKafka(search_path=str(java_only), cache_dir=tmp_path / "cache").start()
    assert str(error.value).startswith("Maven not found")
    assert "\n" not in str(error.value)


def test_jars_are_downloaded_once_then_served_from_the_cache(tmp_path: Path) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    calls = tmp_path / "mvn-calls"
    # Stands in for Maven: drops a jar where it is asked to and counts its runs.
    (fake_bin / "mvn").write_text(
        "#!/bin/sh\n"
        'for arg; do case $arg in -DoutputDirectory=*) out="${arg#*=}";; esac; done\n'
        f'touch "$out/kafka.jar"; echo run >> {calls}\n'
    )
    (fake_bin / "mvn").chmod(0o755)
    cache = tmp_path / "cache"

    libs = LocalKafka(search_path=str(fake_bin), cache_dir=cache).resolve_jars()
    # An empty search path proves that the second call does not even look for Maven.
    again = LocalKafka(search_path=str(tmp_path / "nothing"), cache_dir=cache).resolve_jars()

    assert again == libs == cache / "libs"
    assert [p.name for p in libs.iterdir()] == ["kafka.jar"]
    assert calls.read_text().splitlines() == ["run"]


def test_brokers_started_side_by_side_download_the_jars_once(tmp_path: Path) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    calls = tmp_path / "mvn-calls"
    # A slow Maven: without the lock, every caller would find no marker and run it.
    (fake_bin / "mvn").write_text(
        "#!/bin/sh\n"
        'for arg; do case $arg in -DoutputDirectory=*) out="${arg#*=}";; esac; done\n'
        f'sleep 1; touch "$out/kafka.jar"; echo run >> {calls}\n'
    )
    (fake_bin / "mvn").chmod(0o755)
    cache = tmp_path / "cache"

    with ThreadPoolExecutor(max_workers=3) as pool:
        found = list(
            pool.map(
                lambda _: LocalKafka(search_path=str(fake_bin), cache_dir=cache).resolve_jars(),
                range(3),
            )
        )

    assert found == [cache / "libs"] * 3
    assert [p.name for p in (cache / "libs").iterdir()] == ["kafka.jar"]
    assert calls.read_text().splitlines() == ["run"]


def test_local_postgres_without_server_names_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(MissingTool) as error:
        LocalPostgres(search_path=str(tmp_path)).start()
    assert str(error.value) == "PostgreSQL server not found: install the Debian package postgresql"


def test_environment_variables_win_and_nothing_is_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "kafka.example:9092")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db.example/app")
    with local_services(log=lambda _: None) as services:
        assert services.kafka_bootstrap == "kafka.example:9092"
        assert services.database_url == "postgresql://u@db.example/app"


@pytest.mark.integration
async def test_local_postgres_takes_more_server_settings() -> None:
    # The benchmark sizes shared_buffers for its data (bench/run.py --shared-buffers).
    with LocalPostgres(settings={"shared_buffers": "'48MB'", "work_mem": "'5MB'"}) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SHOW shared_buffers") == "48MB"
            assert await conn.fetchval("SHOW work_mem") == "5MB"
        finally:
            await conn.close()
