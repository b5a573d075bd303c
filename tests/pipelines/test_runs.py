"""Run history: a directory per run, `latest` pointing at the newest, nothing deleted unasked."""

from __future__ import annotations

import json
import os

import pytest

from pipelines.runs import HEADER, RunHistory, format_runs, run_id

pytestmark = pytest.mark.fast

ARGS = {"data_source": "synthetic", "synthetic_rows": 2_000_000, "architecture": "mmoe"}


def _summary(auc: float, version: int | None) -> dict:
    """The parts of summary.json (pipelines.local.summarize) that `rankflow runs` shows."""
    return {
        "model": {"architecture": "mmoe"},
        "metrics": {"click": {"auc": auc}, "conversion": {"auc": auc + 0.04}},
        "blessed": True,
        "serving": {"version": version},
    }


def test_run_ids_sort_by_time_and_tell_arguments_apart():
    a, b = run_id(ARGS, 1_764_600_000), run_id({**ARGS, "epochs": 2}, 1_764_600_000)
    assert a.startswith("20251201-144000-") and len(a) == len("20251201-144000-") + 6
    assert a != b and a[:15] == b[:15]
    assert run_id(ARGS, 1_764_600_000) == a


def test_two_runs_leave_two_directories_and_latest_points_at_the_newest(tmp_path):
    history = RunHistory(tmp_path / "runs")
    first = history.create(ARGS)
    second = history.create(ARGS)  # same second, same arguments: still its own directory
    assert first != second and first.is_dir() and second.is_dir()
    assert history.latest() == second.resolve()
    assert os.readlink(tmp_path / "runs" / "latest") == second.name  # relative: the tree moves

    (first / "summary.json").write_text(json.dumps(_summary(0.7727, 1)))
    RunHistory.update(first, status="succeeded")
    failure = {"step": "prepare-data", "error": "DataValidationError", "message": "bad"}
    RunHistory.update(second, status="failed", failure=failure)
    (tmp_path / "runs" / "model-store").mkdir()  # not a run: never listed, never pruned

    runs = history.runs()
    assert [r.path for r in runs] == [first, second]
    text = format_runs(runs).splitlines()
    assert text[0] == HEADER
    assert text[1].split() == [
        first.name,
        "succeeded",
        "synthetic",
        "2,000,000",
        "mmoe",
        "click=0.7727",
        "conversion=0.8127",
        "yes",
        "v1",
    ]
    assert text[2].split()[:4] == [second.name, "failed", "at", "prepare-data"]


def test_prune_keeps_the_newest_and_nothing_else_is_touched(tmp_path):
    history = RunHistory(tmp_path / "runs")
    made = [history.create({**ARGS, "seed": seed}) for seed in range(4)]
    (tmp_path / "runs" / "model-store").mkdir()
    assert history.prune(2) == [p.name for p in made[:2]]
    assert [r.path for r in history.runs()] == made[2:]
    assert (tmp_path / "runs" / "model-store").is_dir()
    assert history.latest() == made[-1].resolve()


def test_the_run_that_lived_in_latest_before_history_is_kept(tmp_path):
    legacy = tmp_path / "runs" / "latest"
    legacy.mkdir(parents=True)
    (legacy / "summary.json").write_text(json.dumps(_summary(0.77, None)))
    new = RunHistory(tmp_path / "runs").create(ARGS)
    runs = RunHistory(tmp_path / "runs").runs()
    assert len(runs) == 2 and runs[-1].path == new
    assert runs[0].path.name.endswith("-legacy") and runs[0].status == "succeeded"
    assert (runs[0].path / "summary.json").is_file()


def test_resume_needs_an_earlier_run(tmp_path):
    from rankflow.core.errors import MissingArtifactError

    with pytest.raises(MissingArtifactError, match="no earlier run"):
        RunHistory(tmp_path / "runs").latest()
