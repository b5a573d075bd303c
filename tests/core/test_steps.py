"""A failing step leaves one structured record of its error beside its outputs."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from rankflow.core.errors import DataValidationError
from rankflow.core.steps import RECORD, StepFailure, read_failures, reporting

pytestmark = pytest.mark.fast


def _output(tmp_path, task: str):
    return SimpleNamespace(path=str(tmp_path / "run-1" / task / "dataset_spec"))


def test_a_failure_is_recorded_and_re_raised(tmp_path):
    with (
        pytest.raises(DataValidationError),
        reporting("prepare-data", _output(tmp_path, "prepare-data")),
    ):
        raise DataValidationError("column 'like' (click target) has type string")
    assert (tmp_path / "run-1" / "prepare-data" / RECORD).is_file()
    assert read_failures(tmp_path) == [
        StepFailure(
            "prepare-data", "DataValidationError", "column 'like' (click target) has type string", 2
        )
    ]


def test_any_other_error_is_a_failure_with_exit_code_1(tmp_path):
    with pytest.raises(KeyError), reporting("train-ranker", _output(tmp_path, "train-ranker")):
        {}["missing"]
    (failure,) = read_failures(tmp_path)
    assert (failure.step, failure.error, failure.message, failure.exit_code) == (
        "train-ranker",
        "KeyError",
        "'missing'",
        1,
    )


def test_success_records_nothing_and_old_records_can_be_skipped(tmp_path):
    with reporting("prepare-data", _output(tmp_path, "prepare-data")):
        pass
    assert read_failures(tmp_path) == []
    with (
        pytest.raises(DataValidationError),
        reporting("prepare-data", _output(tmp_path, "prepare-data")),
    ):
        raise DataValidationError("old")
    assert read_failures(tmp_path, since=time.time() + 5) == []
