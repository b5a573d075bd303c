"""The exported CPU repository on a real Triton scores exactly like the offline path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from rankflow.core.artifacts import load_ranker, predict
from rankflow.core.contract import SERVING_FORMAT, EndpointContract, read_manifest
from rankflow.core.spec import DatasetSpec
from serving.export import ExportConfig, export_cpu_repository, export_repository
from serving.scorer import ScoringError
from tests.conftest import TARGETS

#: The synthetic log's tasks (named after their columns): the endpoint's outputs.
TASKS = TARGETS


def test_in_process_scores_match_the_training_path(scorer, prepared, features, trained):
    """Raw rows through workflow + model equal the offline predictions on processed rows."""
    raw = pq.read_table(prepared["test"]).to_pandas()
    online = scorer.score(raw)
    offline = predict(load_ranker(trained), features["test"])
    assert set(online) == set(TASKS)
    for task in TASKS:
        np.testing.assert_allclose(online[task], offline[task], rtol=1e-6, atol=1e-6)


def test_scorer_names_missing_columns(scorer, prepared):
    raw = pq.read_table(prepared["test"]).to_pandas().drop(columns=["device"])
    with pytest.raises(ScoringError, match=r"missing input column\(s\) \['device'\]"):
        scorer.score(raw)


def test_repository_layout(repository, scorer):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    text = (repository / "rankflow" / "config.pbtxt").read_text()
    config = text_format.Parse(text, mc.ModelConfig())
    assert (config.name, config.backend, config.max_batch_size) == ("rankflow", "python", 1024)
    inputs = {t.name: (mc.DataType.Name(t.data_type), list(t.dims)) for t in config.input}
    assert inputs["surface"] == ("TYPE_STRING", [1])
    assert inputs["user_id"] == ("TYPE_INT64", [1])
    assert list(inputs) == list(scorer.input_dtypes)
    outputs = [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in config.output]
    assert outputs == [(task, "TYPE_FP32", [1]) for task in TASKS]
    assert config.HasField("dynamic_batching")
    assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    # The config and the version's manifest are renderings of one contract.
    version = repository / "rankflow" / "1"
    manifest = read_manifest(version)
    kinds = {o.name: o.kind for o in manifest.contract.outputs}
    assert kinds == {"click": "binary", "conversion": "binary", "long_view": "binary",
                     "dwell_seconds": "regression"}  # fmt: skip
    assert manifest.contract == EndpointContract.from_model_config(config, kinds=kinds)
    assert manifest.drop == TARGETS
    assert (manifest.layout, manifest.format) == ("python", SERVING_FORMAT)
    assert (version / "workflow" / "workflow.pkl").is_file()
    assert (version / "ranker" / "saved_model.pb").is_file()


def test_triton_scores_equal_in_process_scores(triton, scorer, prepared):
    import tritonclient.grpc as grpcclient

    raw = pq.read_table(prepared["test"]).to_pandas().head(64)
    expected = scorer.score(raw)
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    inputs = []
    for name, dtype in scorer.input_dtypes.items():
        values = raw[name].to_numpy()
        datatype = "BYTES" if dtype == np.dtype(object) else grpcclient.np_to_triton_dtype(dtype)
        tensor = grpcclient.InferInput(name, [len(raw), 1], datatype)
        tensor.set_data_from_numpy(values.astype(dtype).reshape(-1, 1))
        inputs.append(tensor)
    result = client.infer("rankflow", inputs)
    for task in TASKS:
        online = result.as_numpy(task).reshape(-1)
        # Dwell is in seconds (tens): the same float32 precision is a larger absolute step.
        assert np.abs(online - expected[task]).max() <= 1e-5 * max(1.0, np.abs(online).max())
    # A request missing an input gets a clear error, and the server keeps serving.
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="device"):
        client.infer("rankflow", [t for t in inputs if t.name() != "device"])
    again = client.infer("rankflow", inputs).as_numpy("click").reshape(-1)
    np.testing.assert_allclose(again, expected["click"], atol=1e-5)


def test_cpu_flavour_is_the_single_python_model(repository, prepared, features, trained, tmp_path):
    """``export_repository(flavour="cpu")`` is ``export_cpu_repository``: one python model, the
    fastest layout on the Triton here (bench/serving_layouts.py)."""
    exported = export_repository(
        DatasetSpec.load(prepared["spec"]),
        workflow_dir=features["workflow"],
        model_dir=trained,
        repository=tmp_path / "repo",
        config=ExportConfig(),
        flavour="cpu",
    )
    assert sorted(p.name for p in exported.iterdir()) == ["_SHA256SUMS", "rankflow"]
    config = (exported / "rankflow" / "config.pbtxt").read_text()
    assert config == (repository / "rankflow" / "config.pbtxt").read_text()


def test_export_refuses_a_missing_model(prepared, features, tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved ranker"):
        export_cpu_repository(
            DatasetSpec.load(prepared["spec"]),
            workflow_dir=features["workflow"],
            model_dir=tmp_path / "absent",
            repository=tmp_path / "repo",
            config=ExportConfig(),
        )
    assert not (tmp_path / "repo").exists()


def test_scores_follow_the_raw_dtype_contract(scorer):
    frame = pd.DataFrame({c: pd.Series([], dtype=d) for c, d in scorer.input_dtypes.items()})
    with pytest.raises(ScoringError, match="no rows"):
        scorer.score(frame)


def test_text_without_its_content_table_is_refused_before_anything_is_written(
    features, trained, tmp_path
):
    from components.data.synthetic import synthetic_spec
    from rankflow.core.errors import ExportError

    with pytest.raises(ExportError, match=r"text inputs \[.ad_title., .query.\] need the content"):
        export_repository(
            synthetic_spec(content=True),
            workflow_dir=features["workflow"],
            model_dir=trained,
            repository=tmp_path / "repo",
            config=ExportConfig(),
            flavour="cpu",
        )
    assert not (tmp_path / "repo").exists()


def test_lists_and_text_are_served_by_the_cpu_flavour_whichever_is_asked():
    """The gpu ensemble has no list or text step: such a spec gets the python-backend
    endpoint (which any Triton runs), so a default run on the gpu profile still deploys."""
    from components.data.synthetic import synthetic_spec
    from rankflow.core.errors import ConfigError
    from serving.export import served_flavour

    assert served_flavour(synthetic_spec(content=True), "gpu") == "cpu"
    assert served_flavour(synthetic_spec(content=True), "cpu") == "cpu"
    assert served_flavour(synthetic_spec(), "gpu") == "gpu"
    with pytest.raises(ConfigError, match="unknown serving flavour 'tpu'"):
        served_flavour(synthetic_spec(), "tpu")
