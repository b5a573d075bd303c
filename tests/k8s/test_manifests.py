from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "k8s"
MANIFESTS = sorted(K8S.rglob("*.yaml"))


def test_there_are_manifests():
    assert MANIFESTS


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_is_valid_kubernetes(path):
    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, "1.30.0", strict=True)
        assert document["metadata"]["labels"]["app.kubernetes.io/name"] == "rankflow"


def test_data_pvc_mounts_on_the_data_step_only(tmp_path):
    from pipelines.compile import compile_pipeline
    from pipelines.profile import ClusterProfile

    claim = yaml.safe_load((K8S / "pipeline" / "data-pvc.yaml").read_text())
    name = claim["metadata"]["name"]
    path = compile_pipeline(tmp_path / "p.yaml", profile=ClusterProfile(data_pvc=name))
    platform = list(yaml.safe_load_all(path.read_text()))[1]
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    mounted = {label: e["pvcMount"] for label, e in executors.items() if "pvcMount" in e}
    assert list(mounted) == ["exec-prepare-data"]
    assert mounted["exec-prepare-data"][0]["mountPath"] == "/data"
    assert "rankflow-data" in path.read_text()
