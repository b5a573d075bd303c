"""KFP wrapper of the content step."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from rankflow.core.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def embed_content(
    train_data: Input[Dataset],
    dataset_spec: Input[Artifact],
    content_table: Output[Model],
    content_stats: Output[Metrics],
    embedding_cache: str,
):
    """Embed each train item's latest text once into a sealed table keyed by item id (an empty
    table when the spec names no item text). ``embedding_cache``: a directory that outlives runs
    (a mounted volume), where vectors are kept by model and text hash; empty: none."""
    from rankflow.core.steps import reporting

    with reporting("embed-content", content_table):
        from pathlib import Path

        from components.content.embed import ContentConfig, embed_or_empty
        from rankflow.core.integrity import checked, record
        from rankflow.core.io import persist_metrics
        from rankflow.core.spec import DatasetSpec

        stats = embed_or_empty(
            DatasetSpec.load(checked(dataset_spec)),
            checked(train_data),
            Path(content_table.path),
            config=ContentConfig(cache_dir=Path(embedding_cache) if embedding_cache else None),
        )
        record(content_table)
        for name in ("items", "texts", "embedded", "cached"):
            content_stats.log_metric(name, getattr(stats, name))
        persist_metrics(content_stats)
