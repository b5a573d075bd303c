"""The data step: obtain a log (synthetic or the user's own), validate it, split it by time."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from components.data.split import SPLITS, SplitConfig, split_by_time
from components.data.synthetic import SyntheticConfig, write_synthetic_log
from components.data.validate import ValidationReport, validate_log
from rankflow.spec import DatasetSpec

logger = logging.getLogger(__name__)

#: The ``data_source`` value that asks for the built-in generator instead of a file.
SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class PreparedData:
    spec: DatasetSpec
    report: ValidationReport
    rows: dict[str, int]
    duplicates: int


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
        raise ValueError(f"no output location for split(s) {missing}")
    with tempfile.TemporaryDirectory(prefix="rankflow-raw-") as scratch:
        if data_source == SYNTHETIC:
            if spec_path is not None:
                raise ValueError(
                    "spec_path is only for your own data; the generator brings its spec"
                )
            source, spec = write_synthetic_log(synthetic, scratch)
        else:
            if spec_path is None:
                raise ValueError(
                    f"data_source {data_source!r} needs spec_path: a YAML naming each column's role"
                )
            source, spec = Path(data_source), DatasetSpec.load(spec_path)
        report = validate_log(spec, source)
        split_result = split_by_time(spec, source, outputs, split)
    spec.save(spec_out)
    return PreparedData(spec, report, split_result.rows, split_result.duplicates)
