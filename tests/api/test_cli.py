"""``studentwork api``: its options, and its refusal of the public development secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import REPO, ApiProcess, Pipeline, free_port

pytestmark = pytest.mark.integration


class ApiOnPort(ApiProcess):
    """``studentwork api --host 127.0.0.1 --port P``: the options win over the settings."""

    def __init__(self, pipeline: Pipeline, log_path: Path, port: int) -> None:
        super().__init__(pipeline, log_path)
        self.port = port

    def start(self) -> ApiOnPort:
        env = {**os.environ, **self.pipeline.env()}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "infra", "api", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.pipeline.api_port = self.port
        return self


async def test_host_and_port_options(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(kafka_bootstrap, database_url)
    configured, chosen = pipeline.api_port, free_port()
    with ApiOnPort(pipeline, tmp_path / "api.log", chosen):
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"http://127.0.0.1:{chosen}/v1/openapi.json")
            assert answer.status_code == 200
            assert answer.json()["info"]["title"] == "Student@work API"
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{configured}/v1/openapi.json")


def test_the_public_development_secrets_are_refused_outside_development(
    kafka_bootstrap: str, database_url: str
) -> None:
    env = {
        **os.environ,
        **Pipeline(kafka_bootstrap, database_url).env(),
        "STUDENTWORK_DEVELOPMENT": "false",
    }
    result = subprocess.run(
        [sys.executable, "-m", "infra", "api"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("studentwork api: ")
