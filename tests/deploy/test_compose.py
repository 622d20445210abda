"""deploy/compose.yaml: valid against the Compose specification, and a system that starts in
order, scales its runners, and is scraped whole by its Prometheus."""

from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml
from clawbus_core.cli import SERVICES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
OPS_PORT = 9100
INFRASTRUCTURE = ("nats", "postgres", "redis")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # resolves anchors and <<
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def test_validates_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema_file = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    errors = [
        f"{'/'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(compose)
    ]
    assert not errors, "\n".join(errors)
    assert "version" not in compose  # obsolete in the Compose specification


def test_every_service_and_its_dependencies(services: dict[str, dict[str, Any]]) -> None:
    for name in SERVICES:
        service = services[name]
        assert service["build"]["target"] == name
        assert service["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        for infra in INFRASTRUCTURE:
            assert service["depends_on"][infra] == {"condition": "service_healthy"}, name
        test = " ".join(service["healthcheck"]["test"])
        assert f"127.0.0.1:{OPS_PORT}/readyz" in test, name
    migrate = services["migrate"]
    assert migrate["build"]["target"] == "migrate"
    assert migrate["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert migrate["restart"] == "no"
    for infra in INFRASTRUCTURE:
        assert "healthcheck" in services[infra], infra


def test_every_clawbus_container_shares_the_env(services: dict[str, dict[str, Any]]) -> None:
    for name in (*SERVICES, "migrate"):
        env = services[name]["environment"]
        assert env["CLAWBUS_OPS_PORT"] == str(OPS_PORT), name
        assert env["CLAWBUS_OPS_HOST"] == "0.0.0.0", name
        for key in ("NATS", "DATABASE", "REDIS"):
            host = re.sub(r"^\w+://([^@/]*@)?", "", env[f"CLAWBUS_{key}_URL"]).split(":")[0]
            assert host in INFRASTRUCTURE, (name, key)
        assert env["CLAWBUS_SECRET_KEY"].startswith("${CLAWBUS_SECRET_KEY:?"), name
    gateway = services["gateway"]["environment"]
    assert gateway["CLAWBUS_GATEWAY_TOKEN"].startswith("${CLAWBUS_GATEWAY_TOKEN:?")
    assert gateway["CLAWBUS_GATEWAY_HOST"] == "0.0.0.0"


def test_nats_has_jetstream_with_storage(services: dict[str, dict[str, Any]]) -> None:
    command = services["nats"]["command"]
    assert "-js" in command
    assert command[command.index("-sd") + 1] == "/data"
    assert any(volume.endswith(":/data") for volume in services["nats"]["volumes"])


def test_agent_runners_scale(services: dict[str, dict[str, Any]]) -> None:
    # `--scale agent-runner=N` needs no fixed container name and no fixed host port.
    for name in (*SERVICES, "migrate"):
        assert "container_name" not in services[name], name
    for name in ("agent-runner", "channel-bridge", "browser-worker", "scheduler"):
        assert "ports" not in services[name], name


def test_prometheus_scrapes_every_replica_of_every_service(
    services: dict[str, dict[str, Any]],
) -> None:
    mounted = {
        volume.split(":")[1]: DEPLOY / volume.split(":")[0]
        for volume in services["prometheus"]["volumes"]
        if volume.startswith("./")
    }
    config = yaml.safe_load(mounted["/etc/prometheus/prometheus.yml"].read_text())
    scraped: dict[str, set[str]] = {}
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            assert sd["type"] == "A", job["job_name"]  # one record per replica
            assert sd["port"] == OPS_PORT, job["job_name"]
            for name in sd["names"]:
                scraped.setdefault(name, set()).add(job["job_name"])
    assert set(SERVICES) <= set(scraped), set(SERVICES) - set(scraped)


def test_grafana_is_provisioned_with_the_dashboard(services: dict[str, dict[str, Any]]) -> None:
    mounts = {
        volume.split(":")[1]: DEPLOY / volume.split(":")[0]
        for volume in services["grafana"]["volumes"]
        if volume.startswith("./")
    }
    provisioning = mounts["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "clawbus.yaml").read_text())[
        "providers"
    ]
    dashboards = mounts[provider["options"]["path"]]
    dashboard = json.loads((dashboards / "clawbus.json").read_text())
    (variable,) = dashboard["templating"]["list"]
    assert variable["current"]["value"] == datasource["uid"]
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/clawbus.json"


def test_every_variable_is_documented_in_the_env_example() -> None:
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    example = (DEPLOY / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*(\w+)=", example, flags=re.MULTILINE))
    assert used <= documented, used - documented
