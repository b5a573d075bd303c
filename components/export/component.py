"""KFP wrapper of the export step."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from rankflow.core.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def export_serving_model(
    nvt_workflow: Input[Model],
    ranker: Input[Model],
    dataset_spec: Input[Artifact],
    train_data: Input[Dataset],
    valid_data: Input[Dataset],
    content_table: Input[Model],
    serving_model: Output[Model],
    model_name: str,
    max_batch_size: int,
    flavour: str,
):
    """Build the Triton model repository: raw features in, one score per task out.

    ``flavour``: "cpu" (python backend; any Triton) or "gpu" (NVTabular step + TensorFlow
    backend ensemble; a Triton with the TensorFlow backend, as in the NGC Merlin image; a log
    with lists or text is served by the cpu flavour on either, see ``served_flavour``). Every
    version records the time window of ``train_data`` and ``valid_data`` (what the model was
    fitted on), so a later candidate is never judged against it on those rows, and the
    training inputs' profiles (``drift.json``), which served traffic is compared with. With
    text inputs the version carries ``content_table`` (embed-content's) and the encoder's files.
    """
    from rankflow.core.steps import reporting

    with reporting("export-serving-model", serving_model):
        from pathlib import Path

        from components.export.drift import drift_reference
        from rankflow.core.integrity import checked, record
        from rankflow.core.spec import DatasetSpec
        from rankflow.core.window import TimeWindow
        from serving.export import ExportConfig, export_repository, served_flavour

        spec = DatasetSpec.load(checked(dataset_spec))
        flavour = served_flavour(spec, flavour)
        window = TimeWindow.of([checked(train_data), checked(valid_data)], spec.timestamp)
        reference = drift_reference(spec, checked(train_data), checked(valid_data))
        export_repository(
            spec,
            workflow_dir=checked(nvt_workflow),
            model_dir=checked(ranker),
            repository=Path(serving_model.path),
            config=ExportConfig(
                model_name=model_name,
                max_batch_size=max_batch_size,
                training_window=window,
                drift_reference=reference,
                content_table=checked(content_table) if spec.text_columns else None,
            ),
            flavour=flavour,
        )
        record(serving_model)
        serving_model.metadata["model_name"] = model_name
        serving_model.metadata["flavour"] = flavour
        serving_model.metadata["training_window"] = window.to_dict()
