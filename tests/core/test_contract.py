"""The endpoint contract: one typed description, rendered into Triton configs and manifests,
read back from any exported version (0.1.0's included), and the serving-format gate."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from rankflow.core.contract import (
    READABLE_FORMATS,
    SERVING_FORMAT,
    ContractChanges,
    EndpointContract,
    InputSpec,
    OutputSpec,
    check_format,
    contract_changes,
    read_manifest,
    write_manifest,
)
from rankflow.core.errors import ExportError, StoreError

DTYPES = {"user_id": np.dtype("int64"), "surface": np.dtype("O"), "bid": np.dtype("float32")}


def _contract() -> EndpointContract:
    return EndpointContract.build("ads", DTYPES, ("click", "conversion"), max_batch_size=256)


@pytest.mark.fast
def test_build_and_dict_round_trip():
    contract = _contract()
    assert [(i.name, i.dtype, i.dims, i.required) for i in contract.inputs] == [
        ("user_id", "int64", (1,), True),
        ("surface", "object", (1,), True),
        ("bid", "float32", (1,), True),
    ]
    assert contract.tasks == ("click", "conversion")
    assert contract.input_dtypes == DTYPES
    assert EndpointContract.from_dict(json.loads(json.dumps(contract.to_dict()))) == contract


@pytest.mark.fast
def test_what_triton_cannot_carry_is_refused_at_export():
    with pytest.raises(ExportError, match="no Triton type for input dtype datetime64"):
        EndpointContract.build("ads", {"ts": np.dtype("M8[ns]")}, ("click",), max_batch_size=8)
    with pytest.raises(ExportError, match="names an output twice"):
        EndpointContract.build("ads", DTYPES, ("click", "click"), max_batch_size=8)


@pytest.mark.fast
def test_manifest_round_trip_and_format_gate(tmp_path):
    write_manifest(tmp_path, _contract(), layout="python")
    manifest = read_manifest(tmp_path)
    assert (manifest.contract, manifest.layout, manifest.format) == (
        _contract(),
        "python",
        SERVING_FORMAT,
    )
    assert json.loads((tmp_path / "rankflow.json").read_text())["tasks"] == ["click", "conversion"]
    check_format(manifest, "version 1 of 'ads'")  # this release's own: servable

    raw = json.loads((tmp_path / "rankflow.json").read_text())
    raw.update(format=max(READABLE_FORMATS) + 1, release="9.0.0")
    (tmp_path / "rankflow.json").write_text(json.dumps(raw))
    with pytest.raises(StoreError) as err:
        check_format(read_manifest(tmp_path), "version 7 of 'ads'")
    assert str(err.value).startswith(
        f"version 7 of 'ads' was exported in serving format {max(READABLE_FORMATS) + 1} "
        "(release 9.0.0); rankflow 0.1.0 serves formats [1]"
    )


def test_model_config_renders_the_contract_and_reads_back():
    from google.protobuf import text_format

    config = _contract().model_config(backend="python")
    text = text_format.MessageToString(config)
    assert 'name: "ads"' in text and 'backend: "python"' in text and "max_batch_size: 256" in text
    assert [(t.name, t.dims) for t in config.input] == [
        ("user_id", [1]),
        ("surface", [1]),
        ("bid", [1]),
    ]
    assert "TYPE_STRING" in text and "optional" not in text  # all required: as 0.1.0 wrote it
    assert EndpointContract.from_model_config(config) == _contract()


def test_a_manifest_without_a_contract_reads_it_from_the_config(tmp_path):
    """0.1.0 recorded tasks and input dtypes only."""
    (tmp_path / "rankflow.json").write_text(
        json.dumps({"tasks": ["click", "conversion"], "inputs": {"user_id": "int64"}})
    )
    config = _contract().model_config(backend="python")
    manifest = read_manifest(tmp_path, config=config)
    assert (manifest.contract, manifest.format, manifest.layout) == (_contract(), 1, "python")


@pytest.mark.fast
def test_contract_changes_sort_compatible_from_breaking():
    """What the clients of the serving contract would notice: additions they can ignore are
    compatible; a removed, renamed or retyped output, a new or newly required input, a removed
    or retyped input and a smaller batch break them."""
    old = _contract()
    assert contract_changes(old, old) == ContractChanges()
    added = EndpointContract(
        "ads",
        (*old.inputs, InputSpec("hour", "int64", required=False)),
        (*old.outputs, OutputSpec("dwell", "regression")),
        max_batch_size=512,
    )
    assert contract_changes(old, added) == ContractChanges(
        compatible=(
            "output 'dwell' added",
            "optional input 'hour' added",
            "max batch size 256 -> 512",
        )
    )
    user, surface, bid = old.inputs
    broken = EndpointContract(
        "ads",
        (InputSpec("user_id", "object"), surface, InputSpec("age", "int64")),
        (OutputSpec("ctr"), OutputSpec("conversion", "regression")),
        max_batch_size=128,
    )
    assert contract_changes(old, broken).breaking == (
        "output 'click' removed",
        "output 'conversion' retyped: binary float32[1] -> regression float32[1]",
        "input 'user_id' retyped: int64[1] -> object[1]",
        "input 'bid' removed (requests that send it are refused)",
        "required input 'age' added",
        "max batch size 256 -> 128",
    )
    assert contract_changes(old, broken).compatible == ("output 'ctr' added",)
    optional = replace(surface, required=False)
    relaxed = EndpointContract("ads", (user, optional, bid), old.outputs, 256)
    assert contract_changes(old, relaxed).compatible == ("input 'surface' now optional",)
    assert contract_changes(relaxed, old).breaking == ("input 'surface' now required",)
