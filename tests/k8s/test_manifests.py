"""The Kubernetes manifests: plain files validate as they are; kustomizations are rendered with the
real kustomize library (pykustomize) and every rendered object validates strictly, then the
serving contract (names, ports, probes, security, scheduling, network exposure, RBAC) is checked
on what would actually be applied."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pykustomize
import pytest
import yaml

from rankflow.core.image import IMAGE

pytestmark = pytest.mark.fast

K8S = Path(__file__).resolve().parents[2] / "k8s"
KUBERNETES_VERSION = "1.30.0"

KUSTOMIZATIONS = sorted(p.parent for p in K8S.rglob("kustomization.yaml"))
SERVING_BASE = K8S / "serving" / "base"
OVERLAYS = {
    "cpu": K8S / "serving" / "overlays" / "cpu",
    "gpu": K8S / "serving" / "overlays" / "gpu",
}
# Files inside a kustomization directory are kustomize inputs (resources, partial patches): they
# are checked through the rendered output. Every other YAML file is a complete manifest.
PLAIN = sorted(p for p in K8S.rglob("*.yaml") if not (p.parent / "kustomization.yaml").exists())

TRITON = "rankflow-triton"
MODEL_STORE = "rankflow-model-store"
PIPELINE_POD_LABEL = ("pipelines.kubeflow.org/v2_component", "true")
MONITORING_NAMESPACE = "monitoring"
GPU = "nvidia.com/gpu"
# Serving variants the tests run on. Their ids avoid a bare "gpu": tests/conftest.py skips every
# test with a "gpu" keyword on machines without a GPU, and these checks need none.
VARIANTS = ["base", *OVERLAYS]


def _variant_id(variant: str) -> str:
    return f"serving-{variant}"


POD_KINDS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}


def _rel(path: Path) -> str:
    return str(path.relative_to(K8S))


def _render(path: Path) -> list[dict[str, Any]]:
    result = asyncio.run(pykustomize.build(str(path)))
    return [doc for doc in yaml.safe_load_all(result.yaml) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[Path, list[dict[str, Any]]]:
    return {path: _render(path) for path in KUSTOMIZATIONS}


@pytest.fixture(scope="module")
def serving(rendered) -> dict[str, list[dict[str, Any]]]:
    """The rendered serving base and overlays, by name."""
    return {"base": rendered[SERVING_BASE]} | {name: rendered[p] for name, p in OVERLAYS.items()}


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        kind = doc["kind"]
        if kind not in POD_KINDS:
            continue
        spec = doc["spec"]
        if kind == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        yield (
            f"{kind}/{doc['metadata']['name']}",
            spec if kind == "Pod" else spec["template"]["spec"],
        )


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return pod["containers"] + pod.get("initContainers", []) + pod.get("ephemeralContainers", [])


def _triton(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    deployment = _one(docs, "Deployment", TRITON)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = (c for c in pod["containers"] if c["name"] == "triton")
    return deployment, pod, container


_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}


def _bytes(quantity: str | int) -> int:
    match = re.fullmatch(r"(\d+)([A-Za-z]*)", str(quantity))
    assert match, f"unsupported quantity {quantity!r}"
    return int(match[1]) * _UNITS.get(match[2], 1)


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# --- every manifest is valid Kubernetes --------------------------------------------------------


def test_there_are_manifests():
    assert PLAIN
    assert {SERVING_BASE, *OVERLAYS.values()} <= set(KUSTOMIZATIONS)


#: Custom resources kubernetes-validate has no schema for, each checked by its own test below.
CUSTOM_RESOURCES = {("monitoring.coreos.com/v1", "ServiceMonitor")}


@pytest.mark.parametrize("path", PLAIN, ids=_rel)
def test_plain_manifest_is_valid_kubernetes(path):
    for document in yaml.safe_load_all(path.read_text()):
        if (document["apiVersion"], document["kind"]) not in CUSTOM_RESOURCES:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        assert document["metadata"]["labels"]["app.kubernetes.io/name"] == "rankflow"


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=_rel)
def test_rendered_objects_are_valid_kubernetes(rendered, path):
    docs = rendered[path]
    assert docs
    for document in docs:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        labels = document["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "rankflow", document["metadata"]["name"]
        assert labels["app.kubernetes.io/part-of"] == "rankflow"
        assert labels.get("app.kubernetes.io/component")
    kinds_names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(kinds_names) == len(set(kinds_names)), "duplicate objects"


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=_rel)
def test_every_yaml_in_a_kustomization_is_used(path):
    """A file left out of kustomization.yaml would silently never be applied."""
    kustomization = yaml.safe_load((path / "kustomization.yaml").read_text())
    assert "commonLabels" not in kustomization and "patchesStrategicMerge" not in kustomization
    used = set(kustomization.get("resources", []))
    used |= {p["path"] for p in kustomization.get("patches", []) if "path" in p}
    files = {p.name for p in path.glob("*.yaml")} - {"kustomization.yaml"}
    assert files <= used, f"not referenced by {_rel(path)}/kustomization.yaml: {files - used}"


def test_overlays_render_the_same_objects_as_the_base(serving):
    def names(docs):
        return sorted((d["kind"], d["metadata"]["name"]) for d in docs)

    assert names(serving["cpu"]) == names(serving["gpu"]) == names(serving["base"])


# --- security and resources on every pod -------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_every_pod_is_restricted(serving, variant):
    pods = list(_pod_specs(serving[variant]))
    assert pods
    for where, pod in pods:
        pod_sc = pod.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, where
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert pod_sc.get("runAsUser", 0) > 0 and pod_sc.get("runAsGroup", 0) > 0, where
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        for container in _containers(pod):
            at = f"{where}/{container['name']}"
            sc = container.get("securityContext", {})
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, at
            assert sc.get("runAsUser", pod_sc.get("runAsUser", 0)) > 0, at
            assert sc.get("readOnlyRootFilesystem") is True, at
            assert sc.get("allowPrivilegeEscalation") is False, at
            assert not sc.get("privileged"), at
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], at
            assert not sc.get("capabilities", {}).get("add"), at
            seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
            assert seccomp.get("type") == "RuntimeDefault", at
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), f"{at} {bound}"
            image = container["image"]
            assert image == IMAGE, at
            assert not image.endswith(":latest") and ":" in image.rsplit("/", 1)[-1], at


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_triton_has_its_own_identity_without_a_token(serving, variant):
    docs = serving[variant]
    _, pod, _ = _triton(docs)
    assert pod["automountServiceAccountToken"] is False
    account = _one(docs, "ServiceAccount", pod["serviceAccountName"])
    assert account["metadata"]["name"] != "default"
    assert account.get("automountServiceAccountToken") is False


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_writable_scratch_is_emptydir_and_fits_the_memory_limit(serving, variant):
    _, pod, container = _triton(serving[variant])
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    shm = volumes[mounts["/dev/shm"]["name"]]["emptyDir"]
    assert shm["medium"] == "Memory"
    # A memory-backed emptyDir is charged to the container's memory limit.
    assert _bytes(shm["sizeLimit"]) * 2 <= _bytes(container["resources"]["limits"]["memory"])
    writable = {path for path, m in mounts.items() if not m.get("readOnly")}
    assert writable == {"/tmp", "/dev/shm"}


# --- the Triton serving contract ---------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_triton_command_and_model_store(serving, variant):
    docs = serving[variant]
    _, pod, container = _triton(docs)
    assert container["command"] == ["/opt/tritonserver/bin/tritonserver"]
    args = container["args"]
    assert "--model-repository=/models" in args
    assert "--model-control-mode=explicit" in args
    assert "--load-model=rankflow" in args
    assert "--strict-readiness=true" in args
    assert "--exit-on-error=false" in args
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    flags = dict(a.split("=", 1) for a in args)
    assert {k: int(flags[f"--{k}-port"]) for k in ("http", "grpc", "metrics")} == ports

    (mount,) = (m for m in container["volumeMounts"] if m["mountPath"] == "/models")
    assert mount["readOnly"] is True
    (volume,) = (v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"] == {"claimName": MODEL_STORE, "readOnly": True}
    claim = _one(docs, "PersistentVolumeClaim", MODEL_STORE)
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_probes_use_triton_health_endpoints(serving, variant):
    _, _, container = _triton(serving[variant])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    def target(probe: dict[str, Any]) -> tuple[str, int]:
        get = probe["httpGet"]
        return get["path"], ports.get(get["port"], get["port"])

    assert target(container["readinessProbe"]) == ("/v2/health/ready", 8000)
    assert target(container["livenessProbe"]) == ("/v2/health/live", 8000)
    startup = container["startupProbe"]
    # /live, not /ready: a replica on an empty store is live but never ready until loaded.
    assert target(startup) == ("/v2/health/live", 8000)
    assert startup["failureThreshold"] * startup.get("periodSeconds", 10) >= 5 * 60


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_services_and_the_headless_replica_service(serving, variant):
    docs = serving[variant]
    deployment, _, _ = _triton(docs)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)

    service = _one(docs, "Service", TRITON)
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
    }
    assert _selects(service["spec"]["selector"], pod_labels)

    replicas = _one(docs, "Service", f"{TRITON}-replicas")
    assert replicas["spec"]["clusterIP"] == "None"
    assert replicas["spec"]["publishNotReadyAddresses"] is True
    assert [(p["name"], p["port"]) for p in replicas["spec"]["ports"]] == [("http", 8000)]
    assert _selects(replicas["spec"]["selector"], pod_labels)


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_rollout_autoscaling_and_disruption_budget_fit_together(serving, variant):
    docs = serving[variant]
    deployment, _, _ = _triton(docs)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    # The HPA owns the replica count; a `replicas` here would reset it on every apply.
    assert "replicas" not in deployment["spec"]

    hpa = _one(docs, "HorizontalPodAutoscaler", TRITON)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": TRITON,
    }
    low, high = hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]
    assert 2 <= low < high
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"

    pdb = _one(docs, "PodDisruptionBudget", TRITON)
    assert _selects(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    assert "minAvailable" not in pdb["spec"]
    unavailable = pdb["spec"]["maxUnavailable"]
    # A drain can always proceed, and at the HPA's floor one replica keeps serving.
    assert unavailable >= 1 and low - unavailable >= 1


# --- scheduling: GPU only in the gpu overlay ---------------------------------------------------


def test_gpu_overlay_requests_and_schedules_onto_a_gpu(serving):
    _, pod, container = _triton(serving["gpu"])
    assert int(container["resources"]["limits"][GPU]) == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    _, _, cpu = _triton(serving["cpu"])
    assert _bytes(container["resources"]["limits"]["memory"]) > _bytes(
        cpu["resources"]["limits"]["memory"]
    )


@pytest.mark.parametrize("variant", ["base", "cpu"], ids=_variant_id)
def test_cpu_variants_have_nothing_gpu(serving, variant):
    assert GPU not in yaml.safe_dump_all(serving[variant])
    for where, pod in _pod_specs(serving[variant]):
        assert not pod.get("nodeSelector") and not pod.get("tolerations"), where


# --- network exposure --------------------------------------------------------------------------


def _peers_for_port(policy: dict[str, Any], port: int, named: dict[str, int]) -> list[Any]:
    """Every `from` peer that may reach TCP `port`; None stands for "anyone"."""

    def covers(entry: dict[str, Any]) -> bool:
        if entry.get("protocol", "TCP") != "TCP":
            return False
        if "port" not in entry:  # all ports
            return True
        start = named.get(entry["port"], entry["port"])
        return start <= port <= entry.get("endPort", start)

    peers: list[Any] = []
    for rule in policy["spec"].get("ingress", []):
        ports = rule.get("ports")
        if ports and not any(covers(entry) for entry in ports):
            continue
        peers += rule.get("from") or [None]  # no `from`: every source
    return peers


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_network_policy_keeps_control_and_metrics_ports_inside(serving, variant):
    docs = serving[variant]
    _, _, container = _triton(docs)
    pod_labels = _one(docs, "Deployment", TRITON)["spec"]["template"]["metadata"]["labels"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    policies = [
        d
        for d in docs
        if d["kind"] == "NetworkPolicy"
        and _selects(d["spec"]["podSelector"].get("matchLabels", {}), pod_labels)
    ]
    assert policies, "no NetworkPolicy selects the Triton pods"
    for policy in policies:
        assert "Ingress" in policy["spec"]["policyTypes"]

    def peers(port: int) -> list[Any]:
        return [p for policy in policies for p in _peers_for_port(policy, port, named)]

    # HTTP carries the model-control API: Kubeflow pipeline pods of this namespace only.
    assert peers(8000)
    for peer in peers(8000):
        assert peer is not None and set(peer) == {"podSelector"}, peer
        assert _selects(peer["podSelector"].get("matchLabels", {}), dict([PIPELINE_POD_LABEL]))
    # Metrics: the monitoring namespace only.
    assert peers(8002)
    for peer in peers(8002):
        assert peer is not None and "ipBlock" not in peer, peer
        selector = peer.get("namespaceSelector", {}).get("matchLabels", {})
        assert selector == {"kubernetes.io/metadata.name": MONITORING_NAMESPACE}, peer
    # gRPC inference: open to the namespace, not beyond it.
    assert peers(8001)
    for peer in peers(8001):
        assert peer is not None and set(peer) == {"podSelector"}, peer


# --- RBAC for the pipeline's deploy step -------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_deploy_step_can_find_every_replica_and_nothing_more(serving, variant):
    docs = serving[variant]
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    (binding,) = [
        b
        for b in bindings
        if {"kind": "ServiceAccount", "name": "pipeline-runner"} in b["subjects"]
    ]
    assert binding["roleRef"]["kind"] == "Role"
    role = _one(docs, "Role", binding["roleRef"]["name"])

    def allowed(group: str, resource: str, verb: str, name: str | None = None) -> bool:
        return any(
            group in r["apiGroups"]
            and resource in r["resources"]
            and verb in r["verbs"]
            and (not r.get("resourceNames") or name in r["resourceNames"])
            for r in role["rules"]
        )

    for verb in ("get", "list", "watch"):
        assert allowed("", "endpoints", verb)
        assert allowed("", "pods", verb)
        assert allowed("discovery.k8s.io", "endpointslices", verb)
    assert allowed("apps", "deployments", "get", TRITON)
    for rule in role["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
        assert "secrets" not in rule["resources"]


# --- the contract with the compiled pipeline ---------------------------------------------------


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pipeline spec, kubernetes platform spec) compiled with the data PVC of k8s/pipeline."""
    from pipelines.compile import compile_pipeline
    from pipelines.profile import ClusterProfile

    claim = yaml.safe_load((K8S / "pipeline" / "data-pvc.yaml").read_text())
    path = tmp_path_factory.mktemp("compiled") / "p.yaml"
    compile_pipeline(path, profile=ClusterProfile(data_pvc=claim["metadata"]["name"]))
    spec, platform = list(yaml.safe_load_all(path.read_text()))[:2]
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _claims(executors: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """claim name -> [(executor, mount path)]"""
    claims: dict[str, list[tuple[str, str]]] = {}
    for label, executor in executors.items():
        for mount in executor.get("pvcMount", []):
            claims.setdefault(mount["constant"], []).append((label, mount["mountPath"]))
    return claims


def test_data_pvc_mounts_on_the_steps_reading_the_log_only(compiled):
    _, executors = compiled
    claim = yaml.safe_load((K8S / "pipeline" / "data-pvc.yaml").read_text())
    assert _claims(executors)[claim["metadata"]["name"]] == [
        ("exec-fingerprint-data", "/data"),
        ("exec-prepare-data", "/data"),
    ]


def test_deploy_step_writes_the_model_store_triton_reads(compiled, serving):
    spec, executors = compiled
    mounts = _claims(executors)[MODEL_STORE]
    # The deploy writes it; the champion comparison scores the serving version from it.
    assert [label for label, _ in mounts] == ["exec-compare-with-champion", "exec-deploy-model"]
    (mount_path,) = {path for _, path in mounts}
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["model_store"]["defaultValue"] == mount_path
    # It reaches every replica's model-control port through the headless Service.
    host, _, port = parameters["triton_url"]["defaultValue"].rpartition(":")
    for variant in VARIANTS:
        replicas = _one(serving[variant], "Service", host)
        assert replicas["spec"]["clusterIP"] == "None"
        assert int(port) in [p["port"] for p in replicas["spec"]["ports"]]
        claim = _one(serving[variant], "PersistentVolumeClaim", MODEL_STORE)
        assert "ReadWriteMany" in claim["spec"]["accessModes"]


def test_the_service_monitor_scrapes_the_triton_metrics_port(serving):
    """The ServiceMonitor selects the rankflow-triton Service (not the headless replica one, which
    has no metrics port) by its labels and scrapes its named metrics port."""
    (monitor,) = yaml.safe_load_all((K8S / "monitoring" / "servicemonitor.yaml").read_text())
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) == {"selector", "endpoints"}
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [d for d in serving["base"] if d["kind"] == "Service"]
    selected = [s for s in services if _selects(selector, s["metadata"]["labels"])]
    (endpoint,) = monitor["spec"]["endpoints"]
    scraped = [s for s in selected if endpoint["port"] in {p["name"] for p in s["spec"]["ports"]}]
    assert [s["metadata"]["name"] for s in scraped] == [TRITON]
    (port,) = [p for p in scraped[0]["spec"]["ports"] if p["name"] == endpoint["port"]]
    assert port["port"] == 8002 and endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True
