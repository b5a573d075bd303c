"""Store versions exported by earlier releases keep serving with today's code.

A store version's model.py imports rankflow from the installed package, so a rollback runs the
current code on that version's artifacts. Each release commits a store it exported
(tests/fixtures/store-<release>/, made by tests/fixtures/make_store_version.py); every one must
load on a real Triton, answer with the scores it gave at export, be rolled back to, and report
its contract. A version this release can't serve is refused in one line, before Triton.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from rankflow.cli import main
from rankflow.core import integrity
from serving.client import ClientConfig, RankflowClient
from serving.deploy import DeployConfig, deploy
from serving.serve import start_server
from serving.store import ModelStore
from serving.triton import TritonPorts
from tests.conftest import TARGETS

FIXTURES = sorted((Path(__file__).resolve().parents[1] / "fixtures").glob("store-*"))


def _copy(fixture: Path, tmp_path: Path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(fixture / "store", root)
    return root


def _scores(grpc_url: str, rows) -> dict[str, np.ndarray]:
    client = RankflowClient(ClientConfig(url=grpc_url, timeout_s=60))
    try:
        return client.score(rows)
    finally:
        client.close()


def test_there_is_a_store_version_of_the_first_release():
    assert [f.name for f in FIXTURES][:1] == ["store-0.1.0"]


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.name for f in FIXTURES])
def test_an_old_store_version_serves_rolls_back_and_reports_its_contract(
    fixture, repository, tmp_path, capsys
):
    expected = json.loads((fixture / "expected.json").read_text())
    rows = pq.read_table(fixture / "rows.parquet").to_pandas()
    root = _copy(fixture, tmp_path)
    store = ModelStore(root)
    store.verify("rankflow", expected["version"])

    contract = store.contract("rankflow")
    assert contract.tasks == tuple(expected["scores"])
    assert [i.name for i in contract.inputs] == [
        c for c in rows.columns if c in contract.input_dtypes
    ]
    assert {i.dims for i in contract.inputs} == {(1,)} and all(i.required for i in contract.inputs)
    assert main(["contract", "--store", str(root)]) == 0
    assert json.loads(capsys.readouterr().out) == contract.to_dict()

    # Today's export is deployed over it (published: no server yet) and rolled back from; the
    # old version is what a Triton started on the store then serves.
    result = deploy(repository, "rankflow", config=DeployConfig(model_store=str(root)))
    assert (result.previous, result.version) == (expected["version"], expected["version"] + 1)
    assert main(["rollback", "--store", str(root)]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == expected["version"]
    assert store.contract("rankflow", result.version).tasks == TARGETS  # the new log's tasks

    server = start_server(root, TritonPorts.free(), ready_timeout_s=240)
    try:
        scores = _scores(server.grpc_url, rows)
    finally:
        server.stop()
    for task, values in expected["scores"].items():
        np.testing.assert_allclose(scores[task], values, atol=1e-6, err_msg=task)


def test_a_version_in_a_format_this_release_cannot_serve_is_refused_in_one_line(tmp_path, capsys):
    root = _copy(FIXTURES[0], tmp_path)
    version = root / "rankflow" / "1"
    manifest = json.loads((version / "rankflow.json").read_text())
    (version / "rankflow.json").write_text(json.dumps({**manifest, "format": 99}))
    integrity.seal(version)  # a genuine export of a future release, not a tampered one
    assert main(["serve", "--store", str(root), "--ready-timeout", "5"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "rankflow serve: version 1 of 'rankflow' was exported in serving format 99 (release "
        "unknown); rankflow 0.1.0 serves formats [1]: serve it with that release, or deploy a "
        "version exported by this one"
    )
