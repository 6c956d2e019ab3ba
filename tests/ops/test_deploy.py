"""The image, compose, Prometheus and Grafana files agree with each other and with the code.

No Docker engine is needed: the files are read as YAML / JSON, every metric a dashboard
panel or an alert uses must be one :mod:`streams.metrics` defines, every Student@work
service of compose must run the image of the Dockerfile, and Prometheus must scrape each.
(``tests/test_compose.py`` runs ``docker compose config`` where the plugin is installed.)
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from prometheus_client import REGISTRY

import streams.metrics  # noqa: F401  (registers the metrics)
from tests.support import REPO

_USED = re.compile(r"\bstudentwork_[a-z_]+\b")


def defined_series() -> set[str]:
    """Every series name the project's metrics expose."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{s}" for s in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return loaded


def test_every_project_service_runs_the_image_of_the_dockerfile() -> None:
    services = compose()["services"]
    assert {"kafka", "postgres", "worker", "ebox", "prometheus", "grafana"} <= set(services)
    for name in ("worker", "ebox"):
        service = services[name]
        assert service["build"] == {"context": ".", "dockerfile": "Dockerfile"}, name
        assert service["image"] == "studentwork:local"
        assert "pip install" not in json.dumps(service)
    assert services["worker"]["command"] == ["worker"]
    assert services["ebox"]["command"] == ["ebox"]


def test_the_dockerfile_is_multi_stage_with_uv_pango_and_a_non_root_user() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) == 2
    assert "uv sync --frozen --no-dev" in text
    assert "libpango-1.0-0" in text and "libpangoft2-1.0-0" in text
    assert re.search(r"^USER studentwork$", text, re.MULTILINE)
    assert 'ENTRYPOINT ["studentwork"]' in text


def test_prometheus_scrapes_every_service_and_its_alerts_use_defined_metrics() -> None:
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    assert targets == {"worker:6066", "api:8080", "ebox:9464"}
    alerts = yaml.safe_load((REPO / "deploy/prometheus/alerts.yml").read_text())
    rules = [rule for group in alerts["groups"] for rule in group["rules"]]
    names = {rule["alert"] for rule in rules}
    assert {
        "StudentworkStuckPartition",
        "StudentworkOutboxGrowing",
        "StudentworkDeadLetterBurst",
        "StudentworkDatabaseDown",
    } <= names
    used = {name for rule in rules for name in _USED.findall(rule["expr"])}
    assert used - defined_series() == set()
    mounted = compose()["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in mounted


def test_the_dashboard_shows_lag_rates_answers_dead_letters_outbox_and_latency() -> None:
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/studentwork.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in _USED.findall(expr)}
    assert used - defined_series() == set()
    for needed in (
        "studentwork_consumer_lag",
        "studentwork_records_consumed_total",
        "studentwork_answers_total",
        "studentwork_dead_letters_total",
        "studentwork_outbox_backlog",
        "studentwork_batch_duration_seconds_bucket",
        "studentwork_api_request_duration_seconds_bucket",
    ):
        assert needed in used, needed
    provisioning = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/dashboards/studentwork.yml").read_text()
    )
    assert provisioning["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
