"""publish / schedule / submit against a server that checks every request with the KFP API's own
models (``tests/pipelines/kfp_api.py``): no KFP API server runs here."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from pipelines.compile import COMPILED_PIPELINE
from pipelines.kubeflow import (
    PIPELINE_NAME,
    KfpTarget,
    KubeflowError,
    PipelineDoc,
    Release,
    check_cron,
    check_image_reference,
    publish,
    read_token,
    schedule,
    submit,
)
from rankflow.cli import main
from rankflow.core.errors import InputError, MissingArtifactError, UsageError
from tests.conftest import terminal_lines
from tests.pipelines.kfp_api import FakeKfpApi, api_routes

pytestmark = pytest.mark.fast

IMAGE = "registry.example.com/team/rankflow@sha256:" + "ab" * 32


@pytest.fixture
def kfp():
    with FakeKfpApi() as api:
        yield api
        assert api.state.violations == []


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    for args in (
        ["init", "-q"],
        ["config", "user.email", "ci@example.com"],
        ["config", "user.name", "ci"],
    ):
        subprocess.run(["git", "-C", str(root), *args], check=True)
    _commit(root, "one")
    return root


def _commit(root: Path, text: str) -> str:
    (root / "code.py").write_text(text)
    subprocess.run(["git", "-C", str(root), "add", "code.py"], check=True)
    subprocess.run(["git", "-C", str(root), "commit", "-qm", text], check=True)
    return subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def _uploaded(kfp: FakeKfpApi) -> list[str]:
    return [body for op, body, _ in kfp.state.calls if op == "upload_pipeline_version"]


# -- the fake is the API's, and it refuses what the API would -------------------------------------
def test_the_server_knows_only_the_api_s_routes_and_refuses_unknown_fields(kfp):
    routes = api_routes()
    served = {name[1:] for name in dir(FakeKfpApi) if name[1:] in routes}
    assert {
        "upload_pipeline_version",
        "pipeline_service_create_pipeline",
        "recurring_run_service_create_recurring_run",
        "run_service_create_run",
    } <= served
    assert routes["upload_pipeline_version"].template == "/apis/v2beta1/pipelines/upload_version"
    assert "pipelineid" in routes["upload_pipeline_version"].query

    def post(path, body):
        request = urllib.request.Request(
            kfp.url + path, data=json.dumps(body).encode(), method="POST"
        )
        request.add_header("Content-Type", "application/json")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=10)
        return err.value.code

    # A field V2beta1Experiment doesn't define, a route the API doesn't have, a bad spec.
    assert post("/apis/v2beta1/experiments", {"display_name": "e", "colour": "red"}) == 400
    assert post("/apis/v2beta1/pipelines/publish", {}) == 404
    assert post("/apis/v2beta1/runs", {"pipeline_spec": {"pipelineInfo": {"nam": "x"}}}) == 400
    assert [v.split(":")[0] for v in kfp.state.violations] == [
        "experiment_service_create_experiment",
        "no KFP API route POST /apis/v2beta1/pipelines/publish",
        "Invalid input error",
    ]
    kfp.state.violations.clear()


# -- publish --------------------------------------------------------------------------------------
def test_publish_creates_the_pipeline_then_one_version_per_commit_with_its_image(kfp, repo):
    target = KfpTarget(kfp.url)
    first_sha = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    first = publish(target, pipeline_yaml=COMPILED_PIPELINE, release=Release.resolve(repo))
    assert first.created and first.version == first_sha[:12]
    assert first.image == f"ghcr.io/rankflow/rankflow:sha-{first_sha[:12]}"
    (pipeline,) = kfp.state.pipelines.values()
    assert pipeline.model.name == PIPELINE_NAME

    # What was uploaded is the compiled pipeline with one image everywhere, nothing else changed.
    (package,) = _uploaded(kfp)
    spec, platform = list(yaml.safe_load_all(package))
    compiled = PipelineDoc.load(COMPILED_PIPELINE)
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {
        first.image
    }
    assert PipelineDoc(spec, platform).digest() == compiled.with_image(first.image).digest()
    assert spec["root"] == compiled.spec["root"]  # caching options, DAG and parameters as compiled

    # The same commit again: nothing uploaded. A new commit: a second version of the same pipeline.
    again = publish(target, pipeline_yaml=COMPILED_PIPELINE, release=Release.resolve(repo))
    assert (again.created, again.version_id) == (False, first.version_id)
    assert len(_uploaded(kfp)) == 1
    second_sha = _commit(repo, "two")
    second = publish(target, pipeline_yaml=COMPILED_PIPELINE, release=Release.resolve(repo))
    assert second.created and second.version == second_sha[:12]
    assert second.pipeline_id == first.pipeline_id and len(kfp.state.pipelines) == 1
    (versions,) = kfp.state.versions.values()
    assert [v.model.name for v in versions] == [first_sha[:12], second_sha[:12]]
    assert versions[0].model.description.startswith("rankflow ")
    assert f"commit {first_sha}" in versions[0].model.description


def test_a_version_name_is_never_reused_for_other_code(kfp, repo):
    target = KfpTarget(kfp.url)
    publish(
        target,
        pipeline_yaml=COMPILED_PIPELINE,
        release=Release.resolve(repo, version="v1", image=IMAGE),
    )
    with pytest.raises(
        UsageError, match="version v1 of rankflow-ranking already exists with another"
    ):
        publish(
            target,
            pipeline_yaml=COMPILED_PIPELINE,
            release=Release.resolve(repo, version="v1", image=IMAGE.replace("ab", "cd")),
        )
    assert len(_uploaded(kfp)) == 1


def test_an_uncommitted_tree_names_no_version(repo):
    (repo / "code.py").write_text("changed")
    with pytest.raises(UsageError, match="uncommitted changes"):
        Release.resolve(repo)
    # The commit's image is not this tree's code either: both must be named.
    with pytest.raises(UsageError, match="uncommitted changes"):
        Release.resolve(repo, version="hotfix-1")
    release = Release.resolve(repo, version="hotfix-1", image=IMAGE)
    assert (release.version, release.image, release.commit) == ("hotfix-1", IMAGE, None)
    with pytest.raises(UsageError, match="not a git checkout"):
        Release.resolve(repo.parent)


@pytest.mark.parametrize(
    ("ref", "ok"),
    [
        ("ghcr.io/rankflow/rankflow:sha-0123456789ab", True),
        (IMAGE, True),
        ("localhost:5000/rankflow:1.2", True),
        ("rankflow", False),  # no tag, no digest
        ("ghcr.io/rankflow/rankflow:latest", False),
        ("ghcr.io/Rank/Flow:1", False),
        ("ghcr.io/rankflow/rankflow@sha256:abc", False),
    ],
)
def test_images_name_one_build(ref, ok):
    if ok:
        assert check_image_reference(ref) == ref
    else:
        with pytest.raises(UsageError, match="--image"):
            check_image_reference(ref)


def test_a_missing_or_stale_compile_and_a_server_s_refusal_are_one_line(kfp, tmp_path):
    target = KfpTarget(kfp.url)
    release = Release("v1", IMAGE, None)
    with pytest.raises(MissingArtifactError, match="compiled pipeline not found"):
        publish(target, pipeline_yaml=tmp_path / "absent.yaml", release=release)
    (tmp_path / "x.yaml").write_text("a: 1\n")
    with pytest.raises(InputError, match="not a compiled KFP pipeline"):
        publish(target, pipeline_yaml=tmp_path / "x.yaml", release=release)
    with pytest.raises(KubeflowError, match=r"cannot reach the KFP API at http://127\.0\.0\.1:9"):
        publish(
            KfpTarget("http://127.0.0.1:9", timeout_s=2),
            pipeline_yaml=COMPILED_PIPELINE,
            release=release,
        )
    with pytest.raises(UsageError, match="is not an http"):
        KfpTarget("kubeflow.example.com")


def test_a_server_that_never_answers_times_out():
    import socket

    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        host = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(
            KubeflowError,
            match=r"cannot reach the KFP API.*\(ReadTimeoutError, no answer in 0\.3 s\)",
        ):
            submit(
                KfpTarget(host, timeout_s=0.3),
                pipeline_yaml=COMPILED_PIPELINE,
                arguments={},
            )


# -- multi-user -----------------------------------------------------------------------------------
def test_multi_user_installs_need_the_token_and_get_the_namespace(repo, tmp_path):
    with FakeKfpApi(token="s3cret", multi_user=True) as kfp:
        release = Release.resolve(repo, version="v1", image=IMAGE)
        with pytest.raises(
            KubeflowError, match=r"answered 401.*pass --token-file or set KFP_TOKEN"
        ):
            publish(KfpTarget(kfp.url), pipeline_yaml=COMPILED_PIPELINE, release=release)
        token_file = tmp_path / "token"
        token_file.write_text("s3cret\n")
        target = KfpTarget(kfp.url, namespace="team-ads", token=read_token(token_file, environ={}))
        published = publish(target, pipeline_yaml=COMPILED_PIPELINE, release=release)
        scheduled = schedule(target, cron="0 0 3 * * *", name="nightly", arguments={})
        run_id = submit(target, pipeline_yaml=COMPILED_PIPELINE, arguments={})
        assert kfp.state.violations == []
        (pipeline,) = kfp.state.pipelines.values()
        assert pipeline.model.namespace == "team-ads"
        assert kfp.state.recurring[scheduled.recurring_run_id].model.namespace == "team-ads"
        (experiment,) = kfp.state.experiments.values()
        assert experiment.model.namespace == "team-ads"
        assert kfp.state.runs[run_id].model.experiment_id == experiment.model.experiment_id
        assert published.created
    assert read_token(None, environ={"KFP_TOKEN": " t0k "}) == "t0k"
    (tmp_path / "empty").write_text("")
    with pytest.raises(UsageError, match="is empty"):
        read_token(tmp_path / "empty", environ={})


# -- schedule -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 3 * * *", "has 5 fields; KFP's cron has 6, seconds first: '0 0 3 \\* \\* \\*'"),
        ("0 0 3 * *", "has 5 fields"),
        ("0 0 3 * * * *", "is not a 6-field cron"),
        ("0 0 3 * * mon;", "is not a 6-field cron"),
    ],
)
def test_a_cron_that_kfp_would_misread_is_refused(cron, message):
    with pytest.raises(UsageError, match=message):
        check_cron(cron)


def test_cron_forms_kfp_takes():
    assert check_cron("0  0 3 * * *") == "0 0 3 * * *"
    assert check_cron("0 */15 * * * 1-5") == "0 */15 * * * 1-5"
    assert check_cron("0 0 9 ? * MON-FRI") == "0 0 9 ? * MON-FRI"
    assert check_cron("@daily") == "@daily"


def test_schedule_runs_one_at_a_time_and_is_replaced_not_duplicated(kfp, repo):
    target = KfpTarget(kfp.url)
    with pytest.raises(UsageError, match="rankflow-ranking is not published"):
        schedule(target, cron="0 0 3 * * *", name="nightly", arguments={})
    publish(target, pipeline_yaml=COMPILED_PIPELINE, release=Release.resolve(repo))
    _commit(repo, "two")
    newest = publish(target, pipeline_yaml=COMPILED_PIPELINE, release=Release.resolve(repo))

    first = schedule(target, cron="0 0 3 * * *", name="nightly", arguments={"epochs": 3})
    run = kfp.state.recurring[first.recurring_run_id].model
    assert run.max_concurrency == "1" and run.no_catchup is True and run.mode == "ENABLE"
    assert run.trigger.cron_schedule.cron == "0 0 3 * * *"
    assert run.pipeline_version_reference.pipeline_version_id == newest.version_id  # the newest
    assert run.runtime_config.parameters == {"epochs": 3}

    # The same schedule again is a no-op; a changed one needs --replace, which leaves one.
    assert schedule(target, cron="0 0 3 * * *", name="nightly", arguments={"epochs": 3}) == (
        type(first)(**{**first.__dict__, "created": False})
    )
    with pytest.raises(UsageError, match="recurring run 'nightly' already exists"):
        schedule(target, cron="0 30 4 * * *", name="nightly", arguments={"epochs": 3})
    swapped = schedule(
        target,
        cron="0 30 4 * * *",
        name="nightly",
        arguments={"epochs": 3},
        version=newest.version,
        replace_existing=True,
    )
    assert swapped.replaced == (first.recurring_run_id,)
    assert list(kfp.state.recurring) == [swapped.recurring_run_id]
    with pytest.raises(UsageError, match="has no version 'nope'"):
        schedule(target, cron="0 0 3 * * *", name="other", arguments={}, version="nope")


# -- submit ---------------------------------------------------------------------------------------
def test_submit_sends_the_compiled_spec_with_its_caching_options_untouched(kfp):
    run_id = submit(
        KfpTarget(kfp.url),
        pipeline_yaml=COMPILED_PIPELINE,
        arguments={"epochs": 2, "data_snapshot": "2026-12-01"},
        image=IMAGE,
    )
    run = kfp.state.runs[run_id].model
    compiled = PipelineDoc.load(COMPILED_PIPELINE)
    sent = run.pipeline_spec
    assert sent["pipeline_spec"]["root"] == compiled.spec["root"]
    assert sent["platform_spec"] == compiled.platform
    tasks = dict(sent["pipeline_spec"]["root"]["dag"]["tasks"])
    for component in sent["pipeline_spec"]["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    assert tasks["prepare-data"]["cachingOptions"] == {"enableCache": True}
    for never in ("fingerprint-data", "compare-with-champion", "deploy-model"):
        assert tasks[never].get("cachingOptions", {}) == {}
    assert run.runtime_config.parameters == {"epochs": 2, "data_snapshot": "2026-12-01"}


# -- the command line -----------------------------------------------------------------------------
def test_the_commands_print_json_and_fail_in_one_line(kfp, repo, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    assert main(["publish", "--host", kfp.url]) == 0
    published = json.loads(capsys.readouterr().out)
    assert published["created"] is True and published["image"].startswith("ghcr.io/rankflow/")
    args = ["schedule", "--host", kfp.url, "--cron", "0 0 2 * * *", "--set", "epochs=2"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["cron"] == "0 0 2 * * *"
    assert main(["submit", "--host", kfp.url, "--set", "epochs=1"]) == 0
    assert json.loads(capsys.readouterr().out)["run_id"].startswith("run-")

    assert main(["schedule", "--host", kfp.url, "--cron", "0 2 * * *"]) == 2
    (line,) = terminal_lines(capsys.readouterr().err)
    assert line.startswith("rankflow schedule: --cron '0 2 * * *' has 5 fields")
    (repo / "code.py").write_text("dirty")
    assert main(["publish", "--host", kfp.url]) == 2
    (line,) = terminal_lines(capsys.readouterr().err)
    assert "uncommitted changes" in line
    assert main(["schedule", "--host", kfp.url, "--cron", "0 0 2 * * *", "--set", "epoch=2"]) == 2
    assert "unknown pipeline parameter 'epoch'" in capsys.readouterr().err
