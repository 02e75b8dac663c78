"""docker-compose.yml read against the service registry: every service is there on the one
image with its SERVICE, a healthcheck on its own /health/ready, init, waits for what it needs to
be healthy, and only the gateway's port and the UIs are published. (deploy/compose-test.sh runs
the stack for real; these rules fail fast and say which rule.)"""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskhub_common.registry import GATEWAY_PORT
from taskhub_common.serve import targets

ROOT = Path(__file__).resolve().parents[2]
DATA_SERVERS = {"postgres", "rabbitmq", "redis", "minio", "mailpit"}
# The UIs, published on the loopback only (each port movable by a variable): RabbitMQ, MinIO's
# console, Mailpit, Jaeger.
UI_PORTS = {
    "rabbitmq": ("RABBITMQ_UI_PORT", "15672"),
    "minio": ("MINIO_UI_PORT", "9001"),
    "mailpit": ("MAILPIT_UI_PORT", "8025"),
    "jaeger": ("JAEGER_UI_PORT", "16686"),
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def published(service: dict[str, Any]) -> list[str]:
    return [str(port) for port in service.get("ports", [])]


def problems(compose: dict[str, Any]) -> list[str]:
    services = compose["services"]
    found = []
    for target in targets():
        service = services.get(target.name)
        if service is None:
            found.append(f"no service {target.name}")
            continue
        if service.get("image") != "taskhub:dev" or service.get("build") != ".":
            found.append(f"{target.name}: not the one image")
        if service.get("environment", {}).get("SERVICE") != target.name:
            found.append(f"{target.name}: SERVICE is not {target.name}")
        if service.get("init") is not True:
            found.append(f"{target.name}: no init")
        probe = " ".join(service.get("healthcheck", {}).get("test", []))
        if f"127.0.0.1:{target.port}/health/ready" not in probe:
            found.append(f"{target.name}: healthcheck {probe!r}")
        depends_on = service.get("depends_on", {})
        if not isinstance(depends_on, dict) or not depends_on:
            found.append(f"{target.name}: depends_on without conditions")
            depends_on = {}
        for dependency, condition in depends_on.items():
            if condition != {"condition": "service_healthy"}:
                found.append(f"{target.name}: {dependency} with {condition}")
            if "healthcheck" not in services.get(dependency, {}):
                found.append(f"{target.name}: waits for {dependency}, which has no healthcheck")
        ports = published(service)
        expected = (
            [f"${{GATEWAY_PORT:-{GATEWAY_PORT}}}:{GATEWAY_PORT}"]
            if target.name == "gateway"
            else []
        )
        if ports != expected:
            found.append(f"{target.name}: publishes {ports}")
    for name in DATA_SERVERS:
        if "healthcheck" not in services.get(name, {}):
            found.append(f"{name}: no healthcheck")
    for name, service in services.items():
        if name in UI_PORTS:
            variable, port = UI_PORTS[name]
            if published(service) != [f"127.0.0.1:${{{variable}:-{port}}}:{port}"]:
                found.append(f"{name}: publishes {published(service)}")
        elif name not in {target.name for target in targets()} and published(service):
            found.append(f"{name}: publishes {published(service)}")
    return found


def test_the_compose_file_runs_every_registry_service_by_the_rules(compose: dict[str, Any]) -> None:
    assert problems(compose) == []


def test_the_data_servers_are_the_expected_versions(compose: dict[str, Any]) -> None:
    images = {name: compose["services"][name]["image"] for name in DATA_SERVERS}
    assert images["postgres"] == "postgres:16"
    assert re.fullmatch(r"rabbitmq:[\d.]+-management", images["rabbitmq"])
    assert images["redis"] == "redis:7"


def test_a_published_port_a_missing_service_or_healthcheck_fails_the_check() -> None:
    broken = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    broken["services"]["tasks"]["ports"] = ["8002:8002"]
    broken["services"]["postgres"]["ports"] = ["5432:5432"]
    del broken["services"]["comments"]
    del broken["services"]["files"]["healthcheck"]
    broken["services"]["identity"]["depends_on"]["postgres"] = {"condition": "service_started"}
    found = problems(broken)
    assert "tasks: publishes ['8002:8002']" in found
    assert "postgres: publishes ['5432:5432']" in found
    assert "no service comments" in found
    assert "files: healthcheck ''" in found
    assert "identity: postgres with {'condition': 'service_started'}" in found
    assert "gateway: waits for files, which has no healthcheck" in found


def test_every_image_but_the_projects_has_a_ci_stand_in(compose: dict[str, Any]) -> None:
    """deploy/compose-test.sh builds deploy/ci/images/<service> under the image name the file
    gives that service: an image without one would be pulled, and no registry answers in CI."""
    others = {
        name for name, service in compose["services"].items() if service["image"] != "taskhub:dev"
    }
    stand_ins = {
        folder.name
        for folder in (ROOT / "deploy" / "ci" / "images").iterdir()
        if (folder / "Dockerfile").is_file()
    }
    assert others == stand_ins - {"python"}
