from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from pipelines.compile import COMPILED_PIPELINE, compile_pipeline
from pipelines.profile import ClusterProfile
from pipelines.ranking import STEPS
from rankflow import __version__
from rankflow.core.image import IMAGE

pytestmark = pytest.mark.fast


def _ir(path):
    docs = list(yaml.safe_load_all(path.read_text()))
    return docs[0], (docs[1] if len(docs) > 1 else {})


def test_committed_yaml_is_fresh(tmp_path):
    fresh = compile_pipeline(tmp_path / "fresh.yaml")
    assert COMPILED_PIPELINE.read_text() == fresh.read_text(), (
        "pipelines/compiled/rankflow_ranking.yaml is stale: run `make compile` and commit it"
    )


def test_compile_is_deterministic_across_processes(tmp_path):
    """Separate interpreters with different hash seeds (dict/set order) give the same bytes."""
    outputs = []
    for seed in ("1", "2"):
        out = tmp_path / f"{seed}.yaml"
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"from pathlib import Path; from pipelines.compile import "
                f"compile_pipeline; compile_pipeline(Path({str(out)!r}))",
            ],
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        outputs.append(out.read_text())
    assert outputs[0] == outputs[1] == COMPILED_PIPELINE.read_text()


def _all_tasks(spec) -> dict:
    """Every task of the pipeline, the ones inside dsl.If sub-DAGs included."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    return {name: task for name, task in tasks.items() if not name.startswith("condition-")}


def test_dag_edges():
    spec, _ = _ir(COMPILED_PIPELINE)
    assert set(_all_tasks(spec)) == set(STEPS)
    tasks = spec["root"]["dag"]["tasks"]

    def upstream(task):
        artifacts = tasks[task]["inputs"].get("artifacts", {})
        return {a["taskOutputArtifact"]["producerTask"] for a in artifacts.values()}

    assert upstream("fingerprint-data") == upstream("prepare-data") == set()
    fingerprint = tasks["prepare-data"]["inputs"]["parameters"]["data_fingerprint"]
    assert fingerprint["taskOutputParameter"]["producerTask"] == "fingerprint-data"
    assert upstream("compare-with-champion") == {
        "train-ranker",
        "engineer-features",
        "prepare-data",
        "embed-content",
    }
    assert upstream("embed-content") == {"prepare-data"}  # the train split and the spec
    assert upstream("engineer-features") == {"prepare-data", "embed-content"}
    assert upstream("train-ranker") == {"engineer-features", "prepare-data"}  # + the spec
    assert upstream("evaluate-ranker") == {"train-ranker", "engineer-features", "prepare-data"}
    assert upstream("export-serving-model") == {
        "engineer-features",
        "train-ranker",
        "prepare-data",
        "embed-content",
    }
    assert upstream("validate-on-triton") == {
        "export-serving-model",
        "engineer-features",
        "train-ranker",
        "prepare-data",
        "embed-content",
    }
    assert tasks["evaluate-ranker"]["inputs"]["artifacts"]["ranker"]["taskOutputArtifact"] == {
        "producerTask": "train-ranker",
        "outputArtifactKey": "ranker",
    }


def test_deploy_runs_only_when_evaluation_and_infra_validation_bless():
    spec, _ = _ir(COMPILED_PIPELINE)
    root = spec["root"]["dag"]["tasks"]
    gate = root["deployment-gate"]["inputs"]["parameters"]
    assert gate["model_blessed"]["taskOutputParameter"] == {
        "producerTask": "evaluate-ranker",
        "outputParameterKey": "blessed",
    }
    assert gate["champion_blessed"]["taskOutputParameter"] == {
        "producerTask": "compare-with-champion",
        "outputParameterKey": "blessed",
    }
    assert gate["infra_blessed"]["taskOutputParameter"] == {
        "producerTask": "validate-on-triton",
        "outputParameterKey": "blessed",
    }
    condition = root["condition-1"]
    assert condition["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--deployment-gate-Output'] == true"
    )
    body = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    assert list(body) == ["deploy-model"]
    assert body["deploy-model"]["inputs"]["artifacts"]["serving_model"] == {
        "componentInputArtifact": "pipelinechannel--export-serving-model-serving_model"
    }
    # The deploy publishes only while the version it was compared with still serves.
    assert body["deploy-model"]["inputs"]["artifacts"]["champion_comparison"] == {
        "componentInputArtifact": "pipelinechannel--compare-with-champion-comparison"
    }


def test_steps_reading_live_state_never_cache_and_the_data_step_keys_on_its_bytes():
    """The data step caches on a fingerprint of the log (a task that never caches); what reads
    the store or a server always runs, and submit leaves these options alone."""
    spec, _ = _ir(COMPILED_PIPELINE)
    tasks = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    never = {name for name, task in tasks.items() if task.get("cachingOptions", {}) == {}} & set(
        STEPS
    )
    assert never == {
        "fingerprint-data",
        "compare-with-champion",
        "validate-on-triton",
        "deployment-gate",
        "deploy-model",
    }
    assert tasks["prepare-data"]["cachingOptions"] == {"enableCache": True}
    # That submit sends these options untouched: tests/pipelines/test_kubeflow.py.


def test_one_image_tagged_with_the_version():
    spec, _ = _ir(COMPILED_PIPELINE)
    executors = spec["deploymentSpec"]["executors"]
    images = {e["container"]["image"] for e in executors.values()}
    assert images == {IMAGE}
    assert IMAGE.endswith(f":{__version__}")
    # install_kfp_package=False: the image brings kfp; nothing is pip-installed at start-up.
    for executor in executors.values():
        assert "pip install" not in " ".join(executor["container"]["command"])


def test_gpu_on_features_and_training_only():
    spec, platform = _ir(COMPILED_PIPELINE)
    executors = spec["deploymentSpec"]["executors"]
    by_task = {
        name: executors[spec["components"][task["componentRef"]["name"]]["executorLabel"]]
        for name, task in _all_tasks(spec).items()
    }
    for task, executor in by_task.items():
        resources = executor["container"]["resources"]
        assert resources["cpuRequest"] and resources["memoryRequest"]
        accelerator = resources.get("accelerator")
        if task in ("engineer-features", "train-ranker"):
            assert accelerator["resourceType"] == "nvidia.com/gpu"
            assert accelerator["resourceCount"] == "1"
        else:
            assert accelerator is None
    # The GPU taint is tolerated through kfp-kubernetes' platform spec.
    kube = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    tolerated = {label for label, config in kube.items() if config.get("tolerations")}
    assert len(tolerated) == 2


def test_deploy_step_mounts_the_model_store():
    spec, platform = _ir(COMPILED_PIPELINE)
    profile = ClusterProfile()
    kube = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert kube["exec-deploy-model"]["pvcMount"] == [
        {
            "constant": profile.model_store_pvc,
            "mountPath": profile.model_store_mount,
            "pvcNameParameter": {"runtimeValue": {"constant": profile.model_store_pvc}},
        }
    ]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["model_store"]["defaultValue"] == profile.model_store_mount
    assert params["triton_url"]["defaultValue"] == profile.triton_url
    assert params["serving_flavour"]["defaultValue"] == profile.serving_flavour == "gpu"


def test_transient_steps_retry_with_backoff_and_the_rest_fail_fast():
    spec, _ = _ir(COMPILED_PIPELINE)
    retries = {
        name: task.get("retryPolicy", {}).get("maxRetryCount", 0)
        for name, task in _all_tasks(spec).items()
    }
    assert retries == {**dict.fromkeys(STEPS, 0), "validate-on-triton": 2, "deploy-model": 3}
    policy = _all_tasks(spec)["deploy-model"]["retryPolicy"]
    assert (policy["backoffDuration"], policy["backoffFactor"]) == ("30s", 2.0)
    assert policy["backoffMaxDuration"] == "300s"


def test_every_step_runs_as_the_image_user_with_a_deadline():
    _, platform = _ir(COMPILED_PIPELINE)
    kube = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(kube) == {f"exec-{step}" for step in STEPS}
    for name, executor in kube.items():
        assert executor["securityContext"] == {
            "runAsUser": "1000",
            "runAsGroup": "1000",
            "runAsNonRoot": True,
        }, name
        assert 0 < int(executor["activeDeadlineSeconds"]) <= 8 * 3600, name
        assert "secretAsEnv" not in executor, name


def test_data_credentials_come_from_a_secret_on_the_steps_reading_the_log_only(tmp_path):
    from kfp import compiler

    from pipelines.ranking import build_pipeline

    path = tmp_path / "with-secret.yaml"
    profile = ClusterProfile(data_secret="s3-credentials")
    compiler.Compiler().compile(build_pipeline(profile), str(path))
    _, platform = _ir(path)
    kube = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    with_secret = {name for name, e in kube.items() if "secretAsEnv" in e}
    # The data step and the fingerprint its cache key depends on.
    assert with_secret == {"exec-fingerprint-data", "exec-prepare-data"}
    for executor in with_secret:
        (env,) = kube[executor]["secretAsEnv"]
        assert env["secretName"] == "s3-credentials"
        keys = {k["envVar"] for k in env["keyToEnv"]}
        assert keys == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_local_runs_do_not_retry(tmp_path):
    from kfp import compiler

    from pipelines.profile import without_retries
    from pipelines.ranking import build_pipeline

    path = tmp_path / "local.yaml"
    compiler.Compiler().compile(build_pipeline(without_retries(ClusterProfile())), str(path))
    spec, _ = _ir(path)
    assert not [name for name, task in _all_tasks(spec).items() if "retryPolicy" in task]


def test_parameters_have_defaults_and_descriptions():
    spec, _ = _ir(COMPILED_PIPELINE)
    params = spec["root"]["inputDefinitions"]["parameters"]
    for name in ("data_source", "synthetic_rows", "architecture", "gates"):
        assert "defaultValue" in params[name], name
        assert params[name].get("description"), name
    # Derived from the log unless set (0 at the KFP boundary, which takes no None).
    for name in ("batch_size", "epochs", "learning_rate"):
        assert not params[name]["defaultValue"], name
        assert "; 0:" in params[name]["description"], name
    assert params["architecture"]["defaultValue"] == "mmoe"
