"""The data step: obtain a log (synthetic or the user's own), validate it, split it by time."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from components.data.split import SPLITS, SplitConfig, split_by_time
from components.data.synthetic import SyntheticConfig, write_synthetic_log
from components.data.validate import ValidationReport, validate_log
from rankflow.core.errors import ConfigError, DataValidationError
from rankflow.core.spec import DatasetSpec

logger = logging.getLogger(__name__)

#: The ``data_source`` value that asks for the built-in generator instead of a file.
SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class PreparedData:
    spec: DatasetSpec
    report: ValidationReport
    rows: dict[str, int]
    duplicates: int
    violations_dropped: int = 0


def check_source(data_source: str, spec_path: str | None) -> DatasetSpec | None:
    """The user's spec for ``data_source`` (None for the generator), after the checks that need
    no data read: the source exists, a spec is given exactly when it should be, and it loads.

    ``rankflow run`` calls this before starting the pipeline, so these mistakes cost no run.
    """
    if data_source == SYNTHETIC:
        if spec_path is not None:
            raise ConfigError("spec_path is only for your own data; the generator brings its spec")
        return None
    if spec_path is None:
        raise ConfigError(
            f"data_source {data_source!r} needs spec_path: a YAML naming each column's role"
        )
    if "://" not in data_source and not Path(data_source).exists():
        raise DataValidationError(
            f"raw data not found: {data_source} (data_source is 'synthetic' or a parquet/CSV "
            "path the data step can read)"
        )
    return DatasetSpec.load(spec_path)


def prepare_data(
    data_source: str,
    *,
    spec_path: str | None,
    synthetic: SyntheticConfig,
    split: SplitConfig,
    outputs: dict[str, Path],
    spec_out: Path,
) -> PreparedData:
    """Write ``outputs[train|valid|test]`` and the dataset spec, or fail before writing any.

    ``data_source`` is ``"synthetic"`` or a parquet/CSV path; a real log needs ``spec_path``.
    """
    missing = [name for name in SPLITS if name not in outputs]
    if missing:
        raise ConfigError(f"no output location for split(s) {missing}")
    user_spec = check_source(data_source, spec_path)
    with tempfile.TemporaryDirectory(prefix="rankflow-raw-") as scratch:
        if user_spec is None:
            source, spec = write_synthetic_log(synthetic, scratch)
        else:
            source, spec = Path(data_source), user_spec
        report = validate_log(spec, source)
        split_result = split_by_time(spec, source, outputs, split)
    spec.save(spec_out)
    return PreparedData(
        spec, report, split_result.rows, split_result.duplicates, split_result.violations_dropped
    )
