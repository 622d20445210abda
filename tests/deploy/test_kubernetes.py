"""deploy/k8s: the base and the example overlay, rendered (tests/deploy/kustomize.py), are
valid Kubernetes objects, and they say the same as the code: the commands exist, the probes
hit what the ops listener serves, KEDA watches the real stream and consumer."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from clawbus_core.cli import SERVICES, build_parser
from clawbus_core.ops import OpsServer
from clawbus_core.secrets import PLACEHOLDERS
from clawbus_protocol.names import Names
from clawbus_protocol.settings import ClawbusSettings
from cloudcoil.models.keda.v1alpha1 import ScaledObject

from tests.deploy.kustomize import (
    CLUSTER_SCOPED_KINDS,
    KustomizeError,
    Resource,
    containers,
    render,
    split_image,
)

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"
# The oldest Kubernetes the manifests promise to work on, and the newest schema at hand.
K8S_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
WORKLOAD_KINDS = ("Deployment", "Job")


@pytest.fixture(scope="module", params=["base", "overlay"])
def rendered(request: pytest.FixtureRequest) -> list[Resource]:
    return render(BASE if request.param == "base" else OVERLAY)


@pytest.fixture(scope="module")
def overlay() -> list[Resource]:
    return render(OVERLAY)


def of_kind(resources: list[Resource], kind: str) -> list[Resource]:
    return [r for r in resources if r["kind"] == kind]


def named(resources: list[Resource], kind: str, name: str) -> Resource:
    found = [r for r in of_kind(resources, kind) if r["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def config(resources: list[Resource]) -> dict[str, str]:
    data: dict[str, str] = named(resources, "ConfigMap", "clawbus-config")["data"]
    return data


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


# --- schemas -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_builtin_kinds_validate_strictly(rendered: list[Resource], version: str) -> None:
    failures = []
    for resource in rendered:
        if resource["kind"] == "ScaledObject":
            continue  # a KEDA custom resource: test_scaled_object_*
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(part) for part in exc.path)
            failures.append(f"{resource['kind']}/{resource['metadata']['name']} {path}: {exc}")
    assert not failures, "\n".join(failures)


def test_scaled_object_validates_against_keda_models(rendered: list[Resource]) -> None:
    (raw,) = of_kind(rendered, "ScaledObject")
    model = ScaledObject.model_validate(raw)
    # The models ignore unknown fields: a field they dropped is one KEDA would not know.
    assert model.model_dump(mode="json", by_alias=True, exclude_unset=True) == raw


def test_scaled_object_watches_the_real_work_queue(rendered: list[Resource]) -> None:
    (scaled,) = of_kind(rendered, "ScaledObject")
    names = Names(config(rendered)["CLAWBUS_NAMESPACE"])
    (trigger,) = scaled["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "nats-jetstream"
    assert meta["stream"] == names.runs_stream
    assert meta["consumer"] == names.runners_consumer
    assert meta["account"] == "$G"
    assert int(meta["lagThreshold"]) > 0
    # The monitoring endpoint is the server the ExternalName `nats` points at.
    nats = named(rendered, "Service", "nats")
    host, _, port = meta["natsServerMonitoringEndpoint"].partition(":")
    assert host == nats["spec"]["externalName"]
    assert int(port) in {p["port"] for p in nats["spec"]["ports"]}
    # It scales the runners, never below one (they also answer tool requests).
    assert scaled["spec"]["scaleTargetRef"]["name"] == "agent-runner"
    named(rendered, "Deployment", "agent-runner")
    assert scaled["spec"]["minReplicaCount"] >= 1


def test_namespace_setting_is_the_configmaps_everywhere(rendered: list[Resource]) -> None:
    namespace = config(rendered)["CLAWBUS_NAMESPACE"]
    ClawbusSettings(namespace=namespace)  # a valid namespace
    for workload in of_kind(rendered, "Deployment") + of_kind(rendered, "Job"):
        for container in containers(workload):
            refs = [ref["configMapRef"]["name"] for ref in container.get("envFrom", [])]
            assert refs == ["clawbus-config"], workload["metadata"]["name"]
            assert "CLAWBUS_NAMESPACE" not in env_of(container), workload["metadata"]["name"]


# --- the workloads -----------------------------------------------------------------------------


def test_every_service_has_a_deployment_running_its_command(rendered: list[Resource]) -> None:
    parser = build_parser()
    commands = {}
    for workload in of_kind(rendered, "Deployment") + of_kind(rendered, "Job"):
        (container,) = containers(workload)
        command = container["command"]
        assert command[0] == "clawbus", workload["metadata"]["name"]
        assert parser.parse_args(command[1:]).command == command[1]
        assert len(command) == 2, "a service takes no arguments; settings come from env"
        commands[workload["metadata"]["name"]] = command[1]
    assert {name: commands.get(name) for name in SERVICES} == {s: s for s in SERVICES}
    assert commands["clawbus-migrate"] == "migrate"


async def test_probes_hit_what_the_ops_listener_serves(rendered: list[Resource]) -> None:
    ops_port = int(config(rendered)["CLAWBUS_OPS_PORT"])
    paths = set()
    for deployment in of_kind(rendered, "Deployment"):
        (container,) = containers(deployment)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["ops"] == ops_port, deployment["metadata"]["name"]
        probes = {
            kind: container[f"{kind}Probe"]["httpGet"]
            for kind in ("startup", "liveness", "readiness")
        }
        assert {probe["port"] for probe in probes.values()} == {"ops"}
        assert probes["liveness"]["path"] == probes["startup"]["path"] == "/livez"
        assert probes["readiness"]["path"] == "/readyz"
        paths |= {probe["path"] for probe in probes.values()}
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == ops_port
        paths.add(annotations["prometheus.io/path"])

    # The real listener answers every path the manifests use (no checks: always ready).
    settings = ClawbusSettings(ops_host="127.0.0.1", ops_port=0)
    async with (
        OpsServer("deploy-test", settings, instance="t", checks={}) as ops,
        aiohttp.ClientSession() as http,
    ):
        for path in sorted(paths):
            async with http.get(f"http://127.0.0.1:{ops.port}{path}") as response:
                assert response.status == 200, path


def test_pods_are_hardened_and_sized(rendered: list[Resource]) -> None:
    for workload in of_kind(rendered, "Deployment") + of_kind(rendered, "Job"):
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in containers(workload):
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], name


def test_every_deployment_has_a_disruption_budget(rendered: list[Resource]) -> None:
    budgets = of_kind(rendered, "PodDisruptionBudget")
    for deployment in of_kind(rendered, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(covering) == 1, deployment["metadata"]["name"]


def test_autoscalers_own_the_replicas_they_scale(rendered: list[Resource]) -> None:
    (hpa,) = of_kind(rendered, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    # An autoscaled Deployment sets no replicas, or every apply would reset the count.
    for name in ("gateway", "agent-runner"):
        assert "replicas" not in named(rendered, "Deployment", name)["spec"], name


# --- references between the objects ------------------------------------------------------------


def test_references_resolve(overlay: list[Resource]) -> None:
    secret = named(overlay, "Secret", "clawbus-secrets")
    keys = set(secret["stringData"])
    services = {s["metadata"]["name"]: s for s in of_kind(overlay, "Service")}
    for workload in of_kind(overlay, "Deployment") + of_kind(overlay, "Job"):
        pod = workload["spec"]["template"]["spec"]
        named(overlay, "ServiceAccount", pod["serviceAccountName"])
        for container in containers(workload):
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None and not ref.get("optional", False):
                    assert ref["name"] == "clawbus-secrets"
                    assert ref["key"] in keys, (workload["metadata"]["name"], ref["key"])
    # The infrastructure URLs name the ExternalName Services.
    urls = [
        config(overlay)["CLAWBUS_NATS_URL"],
        config(overlay)["CLAWBUS_REDIS_URL"],
        secret["stringData"]["CLAWBUS_DATABASE_URL"],
    ]
    for url in urls:
        parts = urlsplit(url)
        service = services[str(parts.hostname)]
        assert service["spec"]["type"] == "ExternalName"
        assert parts.port in {p["port"] for p in service["spec"]["ports"]}, url
    # The Ingress sends to the gateway's Service by a port it has.
    (ingress,) = of_kind(overlay, "Ingress")
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            ports = {p["name"] for p in services[backend["name"]]["spec"]["ports"]}
            assert backend["port"]["name"] in ports


def test_example_secret_is_marked_and_refused(overlay: list[Resource]) -> None:
    values = named(overlay, "Secret", "clawbus-secrets")["stringData"]
    assert all("changeme" in value for value in values.values())
    # The gateway refuses this token at start, so the example cannot go live by mistake.
    assert values["CLAWBUS_GATEWAY_TOKEN"] in PLACEHOLDERS


def test_ingress_carries_long_lived_connections(rendered: list[Resource]) -> None:
    (ingress,) = of_kind(rendered, "Ingress")
    annotations = ingress["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert annotations[prefix + "proxy-read-timeout"] == "3600"
    assert annotations[prefix + "proxy-send-timeout"] == "3600"
    assert annotations[prefix + "proxy-body-size"] == "10m"


# --- what the overlay changes ------------------------------------------------------------------


def test_overlay_sets_namespace_images_replicas_and_host(overlay: list[Resource]) -> None:
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    namespace = kustomization["namespace"]
    named(overlay, "Namespace", namespace)
    for resource in overlay:
        if resource["kind"] not in CLUSTER_SCOPED_KINDS:
            assert resource["metadata"]["namespace"] == namespace, resource["metadata"]["name"]
    images = {entry["name"]: entry for entry in kustomization["images"]}
    for workload in of_kind(overlay, "Deployment") + of_kind(overlay, "Job"):
        for container in containers(workload):
            name, tag = split_image(container["image"])
            entry = next(e for e in images.values() if e["newName"] == name)
            assert tag == entry["newTag"]
    for entry in kustomization["replicas"]:
        assert named(overlay, "Deployment", entry["name"])["spec"]["replicas"] == entry["count"]
    (ingress,) = of_kind(overlay, "Ingress")
    (base_ingress,) = of_kind(render(BASE), "Ingress")
    hosts = [rule["host"] for rule in ingress["spec"]["rules"]]
    assert hosts != [rule["host"] for rule in base_ingress["spec"]["rules"]]
    assert [host for tls in ingress["spec"]["tls"] for host in tls["hosts"]] == hosts
    # The patch changed the host, not the annotations it does not mention.
    assert ingress["metadata"]["annotations"] == base_ingress["metadata"]["annotations"]


# --- the renderer refuses what it does not render ----------------------------------------------


def _kustomization(tmp_path: Path, body: dict[str, Any], *files: tuple[str, Any]) -> Path:
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"} | body
        )
    )
    for name, content in files:
        (tmp_path / name).write_text(yaml.safe_dump(content))
    return tmp_path


DEPLOYMENT: Resource = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "app"},
    "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "org/app"}]}}},
}


@pytest.mark.parametrize(
    ("body", "files", "message"),
    [
        ({"commonLabels": {"a": "b"}}, [], "unsupported kustomization fields"),
        (
            {"resources": ["app.yaml"], "patches": [{"path": "patch.yaml"}]},
            [
                ("app.yaml", DEPLOYMENT),
                ("patch.yaml", DEPLOYMENT | {"spec": {"template": {"spec": {"containers": []}}}}),
            ],
            "merges this list by key",
        ),
        (
            {"resources": ["app.yaml"], "images": [{"name": "org/other", "newTag": "1"}]},
            [("app.yaml", DEPLOYMENT)],
            "matches no container",
        ),
        (
            {"resources": ["app.yaml"], "replicas": [{"name": "ap", "count": 2}]},
            [("app.yaml", DEPLOYMENT)],
            "matches no Deployment",
        ),
    ],
)
def test_renderer_refuses_what_it_does_not_render(
    tmp_path: Path, body: dict[str, Any], files: list[tuple[str, Any]], message: str
) -> None:
    with pytest.raises(KustomizeError, match=message):
        render(_kustomization(tmp_path, body, *files))


def test_renderer_sets_images_replicas_and_merges_patches(tmp_path: Path) -> None:
    patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "app", "labels": {"tier": "web"}},
    }
    body = {
        "namespace": "ns",
        "resources": ["app.yaml"],
        "images": [{"name": "org/app", "newName": "reg:5000/org/app", "newTag": "2.0"}],
        "replicas": [{"name": "app", "count": 3}],
        "patches": [{"path": "patch.yaml"}],
    }
    (app,) = render(_kustomization(tmp_path, body, ("app.yaml", DEPLOYMENT), ("patch.yaml", patch)))
    assert app["metadata"] == {"name": "app", "labels": {"tier": "web"}, "namespace": "ns"}
    assert app["spec"]["replicas"] == 3
    assert containers(app)[0]["image"] == "reg:5000/org/app:2.0"
    assert split_image("reg:5000/org/app") == ("reg:5000/org/app", None)
