"""The gpu flavour: a plain Triton ensemble built with merlin-systems, SavedModel on the
TensorFlow backend. The Triton here has no TensorFlow backend, so its configs are parsed and
checked, its SavedModel is run in-process, and its ensemble is served here with the ranker step
re-declared for the python backend; loading it as exported needs a GPU Triton image."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from rankflow.core.spec import DatasetSpec
from serving.export import FLAVOURS, ExportConfig, ExportError, export_repository
from tests.conftest import TARGETS

VERSION = 2  # not the default: merlin-systems ignores the version of some of its models
TASKS = ("click", "conversion", "long_view", "dwell_seconds")
#: Merlin's head name of each task.
HEADS = {
    "click": "click/binary_output",
    "conversion": "conversion/binary_output",
    "long_view": "long_view/binary_output",
    "dwell_seconds": "dwell_seconds/regression_output",
}


def parse(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    return text_format.Parse(path.read_text(), mc.ModelConfig())


def signature(tensors) -> dict[str, tuple[int, tuple[int, ...]]]:
    return {t.name: (t.data_type, tuple(t.dims)) for t in tensors}


@pytest.fixture(scope="module")
def gpu_repository(prepared, features, trained, tmp_path_factory) -> Path:
    return export_repository(
        DatasetSpec.load(prepared["spec"]),
        workflow_dir=features["workflow"],
        model_dir=trained,
        repository=tmp_path_factory.mktemp("export-gpu") / "repo",
        config=ExportConfig(version=VERSION),
        flavour="gpu",
    )


@pytest.fixture(scope="module")
def configs(gpu_repository) -> dict:
    return {p.parent.name: parse(p) for p in sorted(gpu_repository.glob("*/config.pbtxt"))}


def test_repository_holds_the_endpoint_and_its_two_models(gpu_repository, configs):
    assert set(configs) == {"rankflow", "rankflow_transform", "rankflow_ranker"}
    for directory, config in configs.items():
        assert config.name == directory
        versions = sorted(p.name for p in (gpu_repository / directory).iterdir() if p.is_dir())
        assert versions == [str(VERSION)], directory
    transform = gpu_repository / "rankflow_transform" / str(VERSION)
    assert (transform / "model.py").is_file()
    assert (transform / "workflow" / "workflow.pkl").is_file()
    ranker = gpu_repository / "rankflow_ranker" / str(VERSION)
    assert (ranker / "model.savedmodel" / "saved_model.pb").is_file()
    assert not list(gpu_repository.parent.glob(".repo.partial-*"))
    assert not (gpu_repository / ".merlin-export").exists()


def test_endpoint_contract_equals_the_cpu_flavour(configs, repository):
    endpoint, cpu = configs["rankflow"], parse(repository / "rankflow" / "config.pbtxt")
    assert endpoint.platform == "ensemble"
    assert endpoint.max_batch_size == cpu.max_batch_size
    assert signature(endpoint.input) == signature(cpu.input)
    assert signature(endpoint.output) == signature(cpu.output)
    from tritonclient.grpc import model_config_pb2 as mc

    assert signature(endpoint.output) == {t: (mc.TYPE_FP32, (1,)) for t in TASKS}


def test_ranker_is_a_savedmodel_fed_by_the_transform(configs):
    transform, ranker = configs["rankflow_transform"], configs["rankflow_ranker"]
    assert transform.backend == "python"
    assert ranker.platform == "tensorflow_savedmodel"
    assert ranker.parameters["TF_SIGNATURE_DEF"].string_value == "serving_default"
    assert signature(ranker.input) == signature(transform.output)
    # The signature takes [batch] tensors: dims [1] reshaped to [] on both sides.
    assert all(list(t.reshape.shape) == [] and t.HasField("reshape") for t in ranker.input)
    assert {t.name for t in ranker.output} == set(HEADS.values())
    for model in (transform, ranker):
        assert model.max_batch_size >= configs["rankflow"].max_batch_size


def test_ensemble_steps_are_consistent(configs):
    endpoint = configs["rankflow"]
    produced = {t.name: t.data_type for t in endpoint.input}
    steps = endpoint.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["rankflow_transform", "rankflow_ranker"]
    for step in steps:
        assert step.model_version == VERSION
        model = configs[step.model_name]
        inputs = {t.name: t.data_type for t in model.input}
        assert set(step.input_map) == set(inputs), step.model_name
        for name, tensor in step.input_map.items():
            assert tensor in produced, f"{step.model_name} consumes unproduced '{tensor}'"
            assert produced[tensor] == inputs[name], (step.model_name, name)
        outputs = {t.name: t.data_type for t in model.output}
        for name, tensor in step.output_map.items():
            assert tensor not in produced, f"'{tensor}' produced twice"
            produced[tensor] = outputs[name]
    assert {t: produced.get(t) for t in TASKS} == {t.name: t.data_type for t in endpoint.output}
    assert dict(steps[1].output_map) == {head: task for task, head in HEADS.items()}


def test_savedmodel_signature_scores_like_the_scorer(gpu_repository, configs, scorer, prepared):
    """The exported workflow's outputs feed the serving signature as they are (names and dtypes),
    and score the raw rows like the in-process scorer."""
    import nvtabular as nvt
    import tensorflow as tf

    version = gpu_repository / "rankflow_ranker" / str(VERSION)
    fn = tf.saved_model.load(str(version / "model.savedmodel")).signatures["serving_default"]
    workflow = nvt.Workflow.load(
        str(gpu_repository / "rankflow_transform" / str(VERSION) / "workflow")
    )
    raw = pq.read_table(prepared["test"]).to_pandas().head(256)
    features = workflow.transform(raw[workflow.input_schema.column_names])
    specs = fn.structured_input_signature[1]
    assert {c: features[c].dtype for c in features.columns} == {
        name: np.dtype(spec.dtype.as_numpy_dtype) for name, spec in specs.items()
    }
    outputs = fn(**{c: tf.constant(features[c].to_numpy()) for c in features.columns})
    expected = scorer.score(raw)
    for task in TASKS:
        online = outputs[HEADS[task]].numpy().reshape(-1)
        # The served values are calibrated inside the SavedModel (dwell in seconds: float32's
        # step there is larger in absolute terms).
        assert np.abs(online - expected[task]).max() <= 1e-5 * max(1.0, np.abs(online).max())


def test_savedmodel_loads_without_python_custom_objects(gpu_repository):
    """Triton's TensorFlow backend can't import rankflow's or Merlin's layers: neither can this."""
    path = gpu_repository / "rankflow_ranker" / str(VERSION) / "model.savedmodel"
    script = textwrap.dedent(
        f"""
        import sys
        import tensorflow as tf
        fn = tf.saved_model.load({str(path)!r}).signatures["serving_default"]
        specs = fn.structured_input_signature[1]
        out = fn(**{{n: tf.zeros([3], s.dtype) for n, s in specs.items()}})
        assert sorted(out) == {sorted(HEADS.values())!r}, sorted(out)
        assert all(v.shape == (3, 1) for v in out.values())
        imported = [
            m for m in sys.modules if m.split(".")[0] in ("merlin", "components", "rankflow")
        ]
        assert not imported, imported
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)


def test_gpu_layout_serves_here_with_a_python_ranker(gpu_repository, scorer, prepared, tmp_path):
    """The exported ensemble on the real Triton here, its ranker step re-declared for the python
    backend (serving/ranker_model.py on the same SavedModel): proves the transform model, the
    tensor wiring and the versions, everything but the TensorFlow backend itself."""
    import tritonclient.grpc as grpcclient
    from google.protobuf import text_format

    from serving.triton import TritonConfig, TritonServer

    repository = tmp_path / "repo"
    shutil.copytree(gpu_repository, repository)
    config_path = repository / "rankflow_ranker" / "config.pbtxt"
    ranker = parse(config_path)
    ranker.ClearField("platform")
    ranker.backend = "python"
    config_path.write_text(text_format.MessageToString(ranker))
    shutil.copyfile(
        Path(__file__).parents[2] / "serving" / "ranker_model.py",
        repository / "rankflow_ranker" / str(VERSION) / "model.py",
    )
    raw = pq.read_table(prepared["test"]).to_pandas().head(64)
    expected = scorer.score(raw)
    with TritonServer(TritonConfig(repository, models=("rankflow",))) as server:
        result = _infer(grpcclient.InferenceServerClient(server.grpc_url), raw, scorer)
    for task in TASKS:
        assert np.abs(result.as_numpy(task).reshape(-1) - expected[task]).max() <= 1e-5


def _infer(client, raw, scorer):
    import tritonclient.grpc as grpcclient

    inputs = []
    for name, dtype in scorer.input_dtypes.items():
        values = raw[name].to_numpy().astype(dtype).reshape(-1, 1)
        datatype = "BYTES" if dtype == np.dtype(object) else grpcclient.np_to_triton_dtype(dtype)
        tensor = grpcclient.InferInput(name, list(values.shape), datatype)
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    return client.infer("rankflow", inputs)


@pytest.mark.gpu
def test_gpu_flavour_serves_on_a_triton_with_the_tensorflow_backend(
    gpu_repository, scorer, prepared
):
    """In the NGC Merlin/Triton image: the repository loads as exported and scores like the
    in-process scorer."""
    import tritonclient.grpc as grpcclient

    from serving.triton import TritonConfig, TritonServer

    raw = pq.read_table(prepared["test"]).to_pandas().head(64)
    expected = scorer.score(raw)
    with TritonServer(TritonConfig(gpu_repository, models=("rankflow",))) as server:
        result = _infer(grpcclient.InferenceServerClient(server.grpc_url), raw, scorer)
    for task in TASKS:
        assert np.abs(result.as_numpy(task).reshape(-1) - expected[task]).max() <= 1e-5


def test_unknown_flavour_is_refused_by_name(prepared, features, trained, tmp_path):
    assert FLAVOURS == ("cpu", "gpu")
    with pytest.raises(ValueError, match=r"unknown serving flavour 'tpu'.*\['cpu', 'gpu'\]"):
        export_repository(
            DatasetSpec.load(prepared["spec"]),
            workflow_dir=features["workflow"],
            model_dir=trained,
            repository=tmp_path / "repo",
            config=ExportConfig(),
            flavour="tpu",
        )
    assert not (tmp_path / "repo").exists()


def test_gpu_export_refuses_a_missing_model(prepared, features, tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved ranker"):
        export_repository(
            DatasetSpec.load(prepared["spec"]),
            workflow_dir=features["workflow"],
            model_dir=tmp_path / "absent",
            repository=tmp_path / "repo",
            config=ExportConfig(),
            flavour="gpu",
        )
    assert not (tmp_path / "repo").exists()


def test_workflow_and_ranker_must_agree_on_features(features, trained):
    from serving.ensemble import load_signature, serving_workflow

    _loaded, fn = load_signature(trained)
    specs = dict(fn.structured_input_signature[1])
    del specs["device"]
    with pytest.raises(ExportError, match=r"only produced \['device'\]"):
        serving_workflow(features["workflow"], targets=TARGETS, features=specs)


def test_gpu_repository_is_published_and_pinned_as_one_set(gpu_repository, tmp_path):
    """The store numbers the ensemble and its steps together, steps pinned before the endpoint."""
    from serving.store import ModelStore

    store = ModelStore(tmp_path / "store")
    for version in (1, 2):
        assert store.publish(gpu_repository, "rankflow") == version
        rollout = store.pin("rankflow", version, action="deploy")
    assert rollout.models == ("rankflow_ranker", "rankflow_transform", "rankflow")
    for name in rollout.models:
        config = parse(store.root / name / "config.pbtxt")
        assert list(config.version_policy.specific.versions) == [2], name
        assert store.versions(name) == [1, 2]
    endpoint = parse(store.root / "rankflow" / "config.pbtxt")
    assert {s.model_version for s in endpoint.ensemble_scheduling.step} == {2}
