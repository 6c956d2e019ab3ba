"""docker-compose.yml stays valid for Docker Compose."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _compose_available(), reason="the docker compose plugin is not installed")
def test_compose_file_is_accepted_by_docker_compose() -> None:
    result = subprocess.run(
        ["docker", "compose", "config", "-q"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(not _compose_available(), reason="the docker compose plugin is not installed")
def test_compose_runs_kafka_postgres_worker_api_ebox_prometheus_and_grafana() -> None:
    result = subprocess.run(
        ["docker", "compose", "config", "--services"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert sorted(result.stdout.split()) == [
        "api",
        "ebox",
        "grafana",
        "kafka",
        "postgres",
        "prometheus",
        "worker",
    ]
