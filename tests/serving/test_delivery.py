"""Safe delivery on a real Triton with a client loop running: the champion comparison judges a
real worse and a real better model, and the contract rules and the store lock hold."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from components.evaluation.champion import (
    ChampionConfig,
    candidate_scorer,
    compare_with_champion,
    comparison_report,
)
from components.evaluation.evaluate import Gates
from rankflow.core.spec import DatasetSpec
from rankflow.core.window import TimeWindow
from serving.deploy import DeployConfig, DeployError, JudgedAgainst, deploy
from serving.export import ExportConfig, export_cpu_repository
from serving.load import LoadConfig, LoadRun
from serving.store import ModelStore
from serving.versions import score_version
from tests.serving.test_deploy import RACER, ServeProcess, _with_contract

#: Small enough for the fixtures' ~3,000 test rows.
CONFIG = ChampionConfig(replicates=300, min_rows=200)


def _export(prepared, features, model_dir: Path, target: Path, *, window: TimeWindow) -> Path:
    return export_cpu_repository(
        DatasetSpec.load(prepared["spec"]),
        workflow_dir=features["workflow"],
        model_dir=model_dir,
        repository=target,
        config=ExportConfig(training_window=window),
    )


@pytest.fixture(scope="module")
def window(prepared):
    spec = DatasetSpec.load(prepared["spec"])
    return TimeWindow.of([prepared["train"], prepared["valid"]], spec.timestamp)


def _judge(prepared, features, model_dir: Path, store: Path, **gates):
    spec = DatasetSpec.load(prepared["spec"])
    return compare_with_champion(
        spec,
        candidate=candidate_scorer(spec, features["workflow"], model_dir),
        raw_test=prepared["test"],
        model_store=store,
        endpoint="rankflow",
        gates=Gates(gates).champion_for_spec(spec),
        config=CONFIG,
    )


@pytest.mark.slow
def test_delivery_rules_hold_under_load(
    prepared, features, trained, trained_on_valid, window, tmp_path, record_figures
):
    """v1 (a weak model) serves under gRPC load. The better model, judged against it, deploys as
    v2; the weak one, judged against v2, is refused with its interval. A contract-breaking
    candidate is refused and v2 keeps answering; a compatible one (an added output) deploys as
    v3. Two concurrent deploys judged against v3 leave one winner (v4) and a clear error. No
    request fails throughout."""
    weak = _export(prepared, features, trained_on_valid, tmp_path / "weak", window=window)
    strong = _export(prepared, features, trained, tmp_path / "strong", window=window)
    root = tmp_path / "store"
    config = DeployConfig(model_store=str(root))
    store = ModelStore(root)
    assert deploy(weak, "rankflow", config=config).version == 1
    rows = pq.read_table(prepared["test"]).to_pandas().head(16)

    def breaking(contract):
        contract["outputs"][0]["name"] = "ctr"

    def compatible(contract):
        contract["outputs"].append(
            {"name": "extra", "kind": "regression", "dtype": "float32", "dims": [1]}
        )

    with ServeProcess(root) as server:
        load = LoadRun(LoadConfig(server.grpc_url, concurrency=4, duration_s=900), rows)
        with load:
            load.wait_for(10)
            better = _judge(prepared, features, trained, root)
            assert better.champion == 1 and better.blessed, better.reasons
            assert max(t.difference for t in better.tasks.values() if t.metric == "auc") > 0
            judged = JudgedAgainst(better.champion)
            assert deploy(strong, "rankflow", config=config, judged_against=judged).version == 2
            load.wait_for(10)

            worse = _judge(prepared, features, trained_on_valid, root)
            assert worse.champion == 2 and not worse.blessed
            report = comparison_report(worse)
            refused = [t for t in worse.tasks.values() if t.worse]
            assert refused and all(t.high < -t.margin for t in refused if t.metric == "auc")
            for task in refused:
                assert f"[{task.low:+.4f}, {task.high:+.4f}]" in report
            assert len(worse.reasons) == len(refused)
            assert "interval [" in worse.reasons[0]
            assert store.serving_version("rankflow") == 2  # nothing deployed it
            load.wait_for(10)

            candidate = _with_contract(strong, tmp_path / "breaking", breaking)
            with pytest.raises(DeployError, match=r"breaks the contract.*Version 2 keeps serving"):
                deploy(candidate, "rankflow", config=config)
            assert store.serving_version("rankflow") == 2
            load.wait_for(10)
            grown = _with_contract(strong, tmp_path / "compatible", compatible)
            assert deploy(grown, "rankflow", config=config).version == 3
            load.wait_for(10)

            # Two deploys judged against v3 at once: one publishes v4, the other nothing.
            with store.locked():
                racers = [_racer(grown, root, judged=3) for _ in range(2)]
                assert [r.stdout.readline().strip() for r in racers] == ["ready", "ready"]
                time.sleep(1.0)
            outcomes = sorted((r.wait(timeout=300), r.stdout.read().strip()) for r in racers)
            assert outcomes[0] == (0, "deployed 4"), outcomes
            assert outcomes[1][0] == 3 and "now serves version 4" in outcomes[1][1], outcomes
            assert "judged against version 3" in outcomes[1][1]
            load.wait_for(10)
        assert load.report is not None
        record_figures("delivery_under_load", load.report.to_dict())
        assert (load.report.failed, load.report.errors) == (0, {})
        assert load.report.ok >= 50
    assert store.versions("rankflow")[-1] == 4 and store.serving_version("rankflow") == 4
    record_figures(
        "champion_challenger",
        {"better": json.loads(better.to_json()), "worse": json.loads(worse.to_json())},
    )


def _racer(repository: Path, root: Path, *, judged: int) -> subprocess.Popen:
    code = RACER.replace("JudgedAgainst(None)", f"JudgedAgainst({judged})")
    return subprocess.Popen(
        [sys.executable, "-c", code, str(repository), str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_rows_inside_the_champions_window_are_not_judged(prepared, features, trained, tmp_path):
    """A champion fitted on rows up to the middle of the test window is judged on the rows after
    it, and says so; one fitted past the whole window can't judge the candidate at all. The
    champion's scores are the same in process and on its own Triton."""
    spec = DatasetSpec.load(prepared["spec"])
    test = pq.read_table(prepared["test"], columns=[spec.timestamp]).to_pandas()[spec.timestamp]
    middle = test.sort_values().iloc[len(test) // 2]
    base = TimeWindow.of([prepared["train"], prepared["valid"]], spec.timestamp)
    config = DeployConfig(model_store=str(tmp_path / "store"))
    overlapping = TimeWindow(base.column, base.kind, base.first, middle.isoformat())
    deploy(
        _export(prepared, features, trained, tmp_path / "a", window=overlapping),
        "rankflow",
        config=config,
    )
    judged = _judge(prepared, features, trained, tmp_path / "store")
    after = int((test > middle).sum())
    assert judged.blessed and judged.rows == after
    assert any("fall in that window: judged on the" in n for n in judged.notes), judged.notes

    store = ModelStore(tmp_path / "store")
    raw = pq.read_table(prepared["test"]).to_pandas().head(300)
    here = score_version(store, "rankflow", 1, raw)
    online = score_version(store, "rankflow", 1, raw, on_triton=True)
    for task in here:
        assert np.abs(here[task] - online[task]).max() <= 1e-5

    beyond = TimeWindow(base.column, base.kind, base.first, (test.max()).isoformat())
    deploy(
        _export(prepared, features, trained, tmp_path / "b", window=beyond),
        "rankflow",
        config=config,
    )
    refused = _judge(prepared, features, trained, tmp_path / "store")
    assert not refused.blessed
    assert refused.reasons == [
        "only 0 test row(s) lie after version 2's training window, fewer than the 200 a "
        "comparison needs: give the run a log reaching past it, or deploy under another "
        "endpoint name"
    ]
