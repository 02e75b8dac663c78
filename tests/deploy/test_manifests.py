"""The Kubernetes manifests, rendered per overlay with `kubectl kustomize`, validated against
the Kubernetes schemas (kubernetes-validate, strict) and held to the house rules: probes,
resources, a locked-down container, a disruption budget per Deployment in prod, a Deployment
per service of the registry, and network policies allowing exactly the edges below (which
docs/architecture.md lists too). The last tests feed deliberate mistakes to the same checks."""

import copy
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from taskhub_common.serve import GRACEFUL_SHUTDOWN_SECONDS, migrations_dir, targets

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# Every machine of this kind has it; a missing kubectl fails the tests (no skip).
KUBECTL = "/usr/bin/kubectl"
KUBERNETES_VERSION = "1.32.0"
OVERLAYS = ("dev", "prod")
# The services' DATA_DIR (taskhub-config), an emptyDir like /tmp under a read-only root.
DATA_DIR = "/var/lib/taskhub"
DEV_DATA_SERVERS = {"postgres", "rabbitmq", "redis", "minio", "mailpit"}
# Egress to managed data servers is by port (they live outside the cluster).
DATA_SERVER_PORTS = {5432: "postgres", 5672: "rabbitmq", 6379: "redis", 443: "s3", 9000: "s3"}
DATA_SERVER_PORTS |= {587: "smtp", 1025: "smtp"}

# Who may open connections to whom: the table of docs/architecture.md, "Network edges".
EDGES = {
    ("internet", "gateway"),
    *(
        ("gateway", name)
        for name in ("identity", "tasks", "comments", "files", "analytics", "notifier")
    ),
    *(
        (name, "identity")
        for name in ("gateway", "tasks", "comments", "files", "analytics", "notifier")
    ),
    *((name, "tasks") for name in ("comments", "files", "analytics", "notifier")),
    ("gateway", "redis"),
    ("tasks", "redis"),
    *(
        (name, "rabbitmq")
        for name in ("gateway", "identity", "tasks", "comments", "files", "analytics", "notifier")
    ),
    *(
        (name, "postgres")
        for name in ("identity", "tasks", "comments", "files", "analytics", "notifier")
    ),
    ("files", "s3"),
    ("notifier", "smtp"),
}

Objects = list[dict[str, Any]]


def render(overlay: str) -> Objects:
    result = subprocess.run(
        [KUBECTL, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


@pytest.fixture(scope="module")
def rendered() -> dict[str, Objects]:
    return {overlay: render(overlay) for overlay in OVERLAYS}


def name_of(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def schema_problems(objects: Objects) -> list[str]:
    problems = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{name_of(obj)}: {error.message} at {list(error.path)}")
    return problems


def of_kind(objects: Objects, kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def is_taskhub(obj: dict[str, Any]) -> bool:
    return obj["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "taskhub"


def container_problems(workload: dict[str, Any]) -> list[str]:
    """Both probes and resources everywhere; TaskHub's own containers also locked down."""
    pod = workload["spec"]["template"]["spec"]
    where = name_of(workload)
    problems = []
    for container in pod["containers"]:
        for probe in ("readinessProbe", "livenessProbe"):
            if probe not in container:
                problems.append(f"{where} {container['name']}: no {probe}")
    for container in pod["containers"] + pod.get("initContainers", []):
        resources = container.get("resources", {})
        for bound in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in resources.get(bound, {}):
                    problems.append(f"{where} {container['name']}: no {bound}.{resource}")
        run_as_non_root = container.get("securityContext", {}).get(
            "runAsNonRoot", pod.get("securityContext", {}).get("runAsNonRoot")
        )
        if run_as_non_root is not True:
            problems.append(f"{where} {container['name']}: may run as root")
        if not is_taskhub(workload):
            continue  # the dev data servers' images want to write where they please
        security = container.get("securityContext", {})
        if security.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where} {container['name']}: writable root filesystem")
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where} {container['name']}: privilege escalation allowed")
        if security.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{where} {container['name']}: capabilities not dropped")
    return problems


def taskhub_pod_problems(deployment: dict[str, Any]) -> list[str]:
    pod = deployment["spec"]["template"]["spec"]
    where = name_of(deployment)
    problems = []
    app = next(container for container in pod["containers"] if container["name"] == "app")
    probes = (app.get("readinessProbe", {}), app.get("livenessProbe", {}))
    paths = tuple(probe.get("httpGet", {}).get("path") for probe in probes)
    if paths != ("/health/ready", "/health/live"):
        problems.append(f"{where}: probes on {paths}")
    empty_dirs = {volume["name"] for volume in pod.get("volumes", []) if "emptyDir" in volume}
    mounts = {mount["mountPath"]: mount["name"] for mount in app.get("volumeMounts", [])}
    for path in ("/tmp", DATA_DIR):  # noqa: S108
        if mounts.get(path) not in empty_dirs:
            problems.append(f"{where}: {path} is not an emptyDir")
    sleep = app.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace <= GRACEFUL_SHUTDOWN_SECONDS + sleep:
        problems.append(
            f"{where}: grace {grace}s, shutdown takes {sleep}+{GRACEFUL_SHUTDOWN_SECONDS}s"
        )
    return problems


def registry_problems(objects: Objects) -> list[str]:
    """A Deployment, Service and migration (for those with a database) per registry service."""
    deployments = of_kind(objects, "Deployment")
    services = of_kind(objects, "Service")
    problems = []
    for target in targets():
        deployment = deployments.get(target.name)
        if deployment is None:
            problems.append(f"no Deployment for {target.name}")
            continue
        pod = deployment["spec"]["template"]["spec"]
        app = next(container for container in pod["containers"] if container["name"] == "app")
        env = {item["name"]: item.get("value") for item in app.get("env", [])}
        if env.get("SERVICE") != target.name:
            problems.append(f"{target.name}: SERVICE={env.get('SERVICE')}")
        ports = [port["containerPort"] for port in app.get("ports", [])]
        if ports != [target.port]:
            problems.append(f"{target.name}: container ports {ports}, registry {target.port}")
        service_ports = [
            port["port"] for port in services.get(target.name, {}).get("spec", {}).get("ports", [])
        ]
        if service_ports != [target.port]:
            problems.append(f"{target.name}: Service ports {service_ports}")
        migrates = [c for c in pod.get("initContainers", []) if c.get("args") == ["--migrate"]]
        if bool(migrates) != (migrations_dir(target) is not None):
            problems.append(f"{target.name}: migrate init container {bool(migrates)}")
    return problems


def pdb_problems(objects: Objects) -> list[str]:
    budgets = of_kind(objects, "PodDisruptionBudget").values()
    problems = []
    for deployment in of_kind(objects, "Deployment").values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covered = any(
            budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
            for budget in budgets
        )
        if not covered:
            problems.append(f"{name_of(deployment)}: no PodDisruptionBudget")
    return problems


def selected_name(peer: dict[str, Any]) -> str | None:
    return peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")


def network_edges(objects: Objects) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """The edges the policies allow, and those that only one end allows. Between two pods of
    the namespace, an edge needs the caller's egress and the callee's ingress; from outside
    (the internet) it needs the ingress, to a data server the egress to its port."""
    policies = of_kind(objects, "NetworkPolicy").values()
    ingress: set[tuple[str, str]] = set()
    egress: set[tuple[str, str]] = set()
    for policy in policies:
        pod = selected_name(policy["spec"])
        if pod is None:
            continue  # the default deny and the DNS policy
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", [{}]):
                ingress.add((selected_name(peer) or "internet", pod))
        for rule in policy["spec"].get("egress", []):
            if "to" in rule:
                egress.update((pod, selected_name(peer) or "?") for peer in rule["to"])
            else:
                egress.update(
                    (pod, DATA_SERVER_PORTS.get(port["port"], f"port {port['port']}"))
                    for port in rule["ports"]
                )
    pods = {selected_name(policy["spec"]) for policy in policies}
    between_pods = {edge for edge in ingress | egress if set(edge) <= pods}
    allowed = (ingress | egress) - between_pods | (ingress & egress)
    return allowed, between_pods - (ingress & egress)


def network_problems(objects: Objects) -> list[str]:
    policies = of_kind(objects, "NetworkPolicy")
    problems = []
    deny = policies.get("default-deny", {}).get("spec", {})
    if deny.get("podSelector") != {} or set(deny.get("policyTypes", [])) != {"Ingress", "Egress"}:
        problems.append("no default deny of ingress and egress")
    edges, one_sided = network_edges(objects)
    problems += [f"allowed but not in the table: {edge}" for edge in sorted(edges - EDGES)]
    problems += [f"in the table but not allowed: {edge}" for edge in sorted(EDGES - edges)]
    problems += [f"allowed by one end only: {edge}" for edge in sorted(one_sided)]
    return problems


def secret_problems(objects: Objects) -> list[str]:
    problems = [
        f"{name_of(obj)}: a Secret in the repository" for obj in objects if obj["kind"] == "Secret"
    ]
    for config in of_kind(objects, "ConfigMap").values():
        problems += [
            f"{name_of(config)}: {key} looks secret"
            for key in config.get("data", {})
            if re.search(r"PASSWORD|SECRET|_KEY$|RABBITMQ_URL|DATABASE_URL", key)
        ]
    return problems


def rule_problems(objects: Objects, overlay: str) -> list[str]:
    workloads = [obj for obj in objects if obj["kind"] in ("Deployment", "StatefulSet")]
    problems = [problem for workload in workloads for problem in container_problems(workload)]
    for deployment in of_kind(objects, "Deployment").values():
        problems += taskhub_pod_problems(deployment)
    problems += registry_problems(objects) + secret_problems(objects)
    if overlay == "prod":
        problems += pdb_problems(objects) + network_problems(objects)
        autoscaled = {
            hpa["spec"]["scaleTargetRef"]["name"]
            for hpa in of_kind(objects, "HorizontalPodAutoscaler").values()
        }
        problems += [
            f"no HPA for {name}"
            for name in sorted(set(of_kind(objects, "Deployment")) - autoscaled)
        ]
    if overlay == "dev":
        missing = DEV_DATA_SERVERS - set(of_kind(objects, "StatefulSet"))
        problems += [f"no StatefulSet for {name}" for name in sorted(missing)]
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_for_the_kubernetes_api(
    rendered: dict[str, Objects], overlay: str
) -> None:
    assert schema_problems(rendered[overlay]) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rule_holds(rendered: dict[str, Objects], overlay: str) -> None:
    assert rule_problems(rendered[overlay], overlay) == []


def test_each_overlay_sets_data_dir_to_the_mounted_folder(rendered: dict[str, Objects]) -> None:
    for overlay in OVERLAYS:
        (config,) = of_kind(rendered[overlay], "ConfigMap").values()
        assert config["data"]["DATA_DIR"] == DATA_DIR


def test_the_edge_table_is_the_one_in_the_architecture_document() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Network edges", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\w+) \| (\w+) \|", section, flags=re.MULTILINE)
    assert len(rows) == len(set(rows))
    assert set(rows) - {("from", "to")} == EDGES


def test_an_unknown_field_fails_the_schema_check(rendered: dict[str, Objects]) -> None:
    objects = copy.deepcopy(rendered["prod"])
    tasks = of_kind(objects, "Deployment")["tasks"]
    tasks["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    assert schema_problems(objects) == [
        "Deployment/tasks: Additional properties are not allowed ('livenessProbes' was "
        "unexpected) at ['spec', 'template', 'spec', 'containers', 0]"
    ]


def test_a_missing_probe_or_budget_or_a_writable_root_fails_the_rules(
    rendered: dict[str, Objects],
) -> None:
    objects = copy.deepcopy(rendered["prod"])
    deployments = of_kind(objects, "Deployment")
    del deployments["tasks"]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    files_app = deployments["files"]["spec"]["template"]["spec"]["containers"][0]
    files_app["securityContext"]["readOnlyRootFilesystem"] = False
    objects.remove(of_kind(objects, "PodDisruptionBudget")["comments"])
    problems = rule_problems(objects, "prod")
    assert "Deployment/tasks app: no readinessProbe" in problems
    assert "Deployment/files app: writable root filesystem" in problems
    assert "Deployment/comments: no PodDisruptionBudget" in problems


def test_a_missing_service_or_an_extra_edge_fails_the_rules(rendered: dict[str, Objects]) -> None:
    objects = copy.deepcopy(rendered["prod"])
    objects.remove(of_kind(objects, "Deployment")["files"])
    policies = of_kind(objects, "NetworkPolicy")
    # comments may now call files, and files accepts it: an edge the architecture lacks.
    policies["comments"]["spec"]["egress"].append(
        {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "files"}}}]}
    )
    policies["files"]["spec"]["ingress"][0]["from"].append(
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "comments"}}}
    )
    # tasks no longer accepts the notifier: a one-sided edge, so the edge is gone.
    tasks_callers = policies["tasks"]["spec"]["ingress"][0]["from"]
    tasks_callers[:] = [peer for peer in tasks_callers if selected_name(peer) != "notifier"]
    problems = rule_problems(objects, "prod")
    assert "no Deployment for files" in problems
    assert "allowed but not in the table: ('comments', 'files')" in problems
    assert "in the table but not allowed: ('notifier', 'tasks')" in problems
    assert "allowed by one end only: ('notifier', 'tasks')" in problems
