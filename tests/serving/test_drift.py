"""Served-traffic drift on a real Triton: the endpoint counts its inputs per training bucket on
the metrics port, and `rankflow drift` flags a shifted request stream and not an unshifted one."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from components.export.drift import drift_reference
from rankflow.cli import main
from rankflow.core.drift import parse_counts
from rankflow.core.spec import DatasetSpec
from serving.client import ClientConfig, RankflowClient
from serving.deploy import DeployConfig, deploy
from serving.drift import scrape
from serving.export import ExportConfig, export_cpu_repository
from tests.serving.test_deploy import ServeProcess

SHIFTED = ("bid", "device")


def _send(client, rows, batch=100):
    for start in range(0, len(rows), batch):
        client.score(rows.iloc[start : start + batch])


def test_drift_flags_a_shifted_stream_and_not_an_unshifted_one(
    prepared, features, trained, tmp_path, capsys, record_figures
):
    spec = DatasetSpec.load(prepared["spec"])
    reference = drift_reference(spec, prepared["train"], prepared["valid"])
    repository = export_cpu_repository(
        spec,
        workflow_dir=features["workflow"],
        model_dir=trained,
        repository=tmp_path / "repo",
        # Counts reach the metrics after every request here, so each scrape sees all of them.
        config=ExportConfig(drift_reference=reference, drift_flush_s=0.0),
    )
    root = tmp_path / "store"
    assert deploy(repository, "rankflow", config=DeployConfig(model_store=str(root))).version == 1
    rows = pq.read_table(prepared["test"]).to_pandas()
    assert len(rows) >= 2_000
    # Traffic over the whole test period: a contiguous slice of a few hours would (rightly) be
    # flagged on `hour`.
    rows = rows.sample(frac=1.0, random_state=0)
    unshifted, later = rows.iloc[:1_500], rows.iloc[1_500:3_000].copy()
    # A bidding change and a new device mix: every request now comes from the rarest device.
    later["bid"] = later["bid"] * 3.0
    later["device"] = reference.profile("device").buckets[-3]
    baseline = tmp_path / "scrape.txt"

    with ServeProcess(root) as server:
        client = RankflowClient(ClientConfig(url=server.grpc_url))
        try:
            _send(client, unshifted)
            assert main(["drift", "--store", str(root), "--json", "--save", str(baseline)]) == 0
            stable = json.loads(capsys.readouterr().out)
            _send(client, later)
            assert main(["drift", "--store", str(root), "--json", "--since", str(baseline)]) == 3
            shifted = json.loads(capsys.readouterr().out)
            # Without --since the whole served stream is judged: half shifted still shows.
            assert main(["drift", "--store", str(root)]) == 3
            table = capsys.readouterr().out
            metrics = scrape(f"http://{server.metrics_url}/metrics")
        finally:
            client.close()

    assert stable["drifted"] == [] and stable["rows"] == 1_500
    assert sorted(shifted["drifted"]) == sorted(SHIFTED) and shifted["rows"] == 1_500
    by_name = {i["name"]: i for i in shifted["inputs"]}
    assert all(by_name[n]["psi"] > 0.25 for n in SHIFTED)
    assert max(i["psi"] for i in stable["inputs"]) < 0.25
    assert "bid" in table.splitlines()[2] or "device" in table.splitlines()[2]  # worst first
    # Triton's own exposition: every served row counted once per input, by the serving version.
    counts = parse_counts(metrics, model="rankflow", version="1")
    assert set(counts) == set(spec.categorical_columns + spec.continuous)
    assert all(sum(buckets.values()) == 3_000 for buckets in counts.values())
    record_figures(
        "drift",
        {
            "stable_max_psi": max(i["psi"] for i in stable["inputs"]),
            "stable_worst": max(stable["inputs"], key=lambda i: i["psi"])["name"],
            "shifted": {n: by_name[n]["psi"] for n in SHIFTED},
            "shifted_others_max_psi": max(
                i["psi"] for i in shifted["inputs"] if i["name"] not in SHIFTED
            ),
        },
    )


@pytest.mark.fast
def test_drift_names_a_missing_server_or_scrape(tmp_path, capsys):
    assert main(["drift", "--store", str(tmp_path), "--metrics-url", "http://127.0.0.1:9/m"]) == 1
    assert "cannot read metrics from http://127.0.0.1:9/m" in capsys.readouterr().err
    assert main(["drift", "--store", str(tmp_path), "--since", str(tmp_path / "none")]) == 2
    assert "--since" in capsys.readouterr().err
