"""KFP wrappers of the data step and of the fingerprint its cache key depends on."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Metrics, Output

from rankflow.core.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def fingerprint_data(data_source: str, spec_path: str, data_snapshot: str) -> str:
    """A content fingerprint of the log and its spec (never cached: it is what tells the data
    step's cache that the bytes behind a fixed path changed); ``data_snapshot``, when set,
    names the log instead of its listing."""
    from components.data.fingerprint import fingerprint

    # Never fails on a bad source: the data step, next, names what is wrong with it.
    return fingerprint(data_source, spec_path=spec_path or None, snapshot=data_snapshot or None)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def prepare_data(
    train_data: Output[Dataset],
    valid_data: Output[Dataset],
    test_data: Output[Dataset],
    dataset_spec: Output[Artifact],
    data_stats: Output[Metrics],
    data_source: str,
    spec_path: str,
    synthetic_rows: int,
    synthetic_content: bool,
    seed: int,
    valid_fraction: float,
    test_fraction: float,
    data_fingerprint: str,
):
    """Generate or read the interaction log, validate it against its spec, split it by time.

    ``data_fingerprint`` (``fingerprint-data``'s output) is read only by the cache: a cached
    split is reused only for the same bytes.
    """
    from rankflow.core.steps import reporting

    with reporting("prepare-data", dataset_spec):
        from pathlib import Path

        from components.data.prepare import prepare_data as run
        from components.data.split import SplitConfig
        from components.data.synthetic import SyntheticConfig
        from rankflow.core.integrity import record
        from rankflow.core.io import persist_metrics

        prepared = run(
            data_source,
            # KFP parameters can't be None on every backend: "" in the UI means "no spec".
            spec_path=spec_path or None,
            synthetic=SyntheticConfig(rows=synthetic_rows, seed=seed, content=synthetic_content),
            split=SplitConfig(valid_fraction=valid_fraction, test_fraction=test_fraction),
            outputs={
                "train": Path(train_data.path),
                "valid": Path(valid_data.path),
                "test": Path(test_data.path),
            },
            spec_out=Path(dataset_spec.path),
        )
        for artifact in (train_data, valid_data, test_data, dataset_spec):
            record(artifact)
        for split, rows in prepared.rows.items():
            data_stats.log_metric(f"{split}_rows", rows)
        data_stats.metadata["data_fingerprint"] = data_fingerprint
        data_stats.log_metric("duplicate_rows_dropped", prepared.duplicates)
        data_stats.log_metric("violation_rows_dropped", prepared.violations_dropped)
        for task, positives in prepared.report.positives.items():
            # Binary: the positive rate; regression: the share of rows with a value.
            data_stats.log_metric(f"{task}_rate", positives / prepared.report.rows)
        for task, count in prepared.report.violations.items():
            data_stats.log_metric(f"{task}_given_violations", count)
        persist_metrics(data_stats)
