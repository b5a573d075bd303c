"""The `rankflow` command line: typed overrides, one subparser per command, and every error as
one line on stderr with exit code 2 (bad input or usage) or 1 (a failure)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from rankflow.cli import build_parser, main, parse_overrides
from rankflow.core.errors import UsageError
from tests.conftest import terminal_lines


def _one_line(text: str) -> str:
    lines = terminal_lines(text)
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


@pytest.mark.fast
def test_overrides_are_typed_like_the_pipeline_parameters():
    assert parse_overrides(
        ["architecture=ple", "epochs=2", 'gates={"click": {"min_auc": 0.6}}', "model_store=/s"]
    ) == {
        "architecture": "ple",
        "epochs": 2,
        "gates": '{"click": {"min_auc": 0.6}}',
        "model_store": "/s",
    }


@pytest.mark.fast
@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("epochs=two", "parameter 'epochs' expects Integer, got 'two'"),
        ("learning_rate=fast", "parameter 'learning_rate' expects Float"),
        ("epoch=2", "unknown pipeline parameter 'epoch'"),
        ("epochs", "--set takes NAME=VALUE"),
    ],
)
def test_bad_overrides_are_refused_by_name(pair, message):
    with pytest.raises(UsageError, match=message):
        parse_overrides([pair])


@pytest.mark.fast
def test_every_command_has_its_own_handler():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps them here
    assert set(commands) == {
        "run",
        "runs",
        "compile",
        "submit",
        "publish",
        "schedule",
        "query",
        "serve",
        "rollback",
        "contract",
        "drift",
    }
    handlers = {parser.parse_args([c, *_required(c)]).handler for c in commands}
    assert len(handlers) == len(commands)


def _required(command: str) -> list[str]:
    return {
        "submit": ["--host", "h"],
        "publish": ["--host", "h"],
        "schedule": ["--host", "h", "--cron", "0 0 3 * * *"],
        "query": ["--input", "x.csv"],
    }.get(command, [])


def _log(tmp_path, *, like: list) -> str:
    """A small CSV impression log (user, ad, time, a `like` target)."""
    n = len(like)
    table = pa.table(
        {
            "user": [i % 7 for i in range(n)],
            "ad": [i % 5 for i in range(n)],
            "ts": [1_700_000_000 + 60 * i for i in range(n)],
            "like": like,
        }
    )
    path = tmp_path / "log.csv"
    pacsv.write_csv(table, path)
    return str(path)


def _run_own_data(runs, log, spec) -> int:
    return main(
        [
            "run",
            "--runs-dir",
            str(runs),
            "--set",
            f"data_source={log}",
            "--set",
            f"spec_path={spec}",
        ]
    )


SPEC = "timestamp: ts\nuser: {id: user}\nitem: {id: ad}\ntargets: {click: like}\n"


@pytest.mark.fast
@pytest.mark.parametrize(
    ("spec", "data", "message"),
    [
        (SPEC + "colour: red\n", "log", "unknown key(s) in dataset spec: ['colour']"),
        ("timestamp: [unclosed", "log", "dataset spec is not valid YAML"),
        (None, "log", "dataset spec file not found"),
        (SPEC, "absent", "raw data not found"),
    ],
    ids=["bad-spec", "malformed-yaml", "missing-spec", "missing-log"],
)
def test_run_refuses_bad_input_in_one_line_before_anything_runs(
    tmp_path, capsys, spec, data, message
):
    log = _log(tmp_path, like=[0, 1] * 10) if data == "log" else str(tmp_path / "absent.csv")
    spec_path = tmp_path / "spec.yaml"
    if spec is not None:
        spec_path.write_text(spec)
    runs = tmp_path / "runs"
    code = _run_own_data(runs, log, spec_path)
    assert code == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("rankflow run: ") and message in line
    assert not runs.exists()  # refused before a run directory was made


@pytest.mark.fast
def test_usage_errors_exit_2_and_debug_shows_the_traceback(capsys):
    assert main(["run", "--set", "epoch=2"]) == 2
    assert _one_line(capsys.readouterr().err).startswith(
        "rankflow run: unknown pipeline parameter 'epoch'"
    )
    assert main(["run", "--debug", "--set", "epoch=2"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "rankflow run: unknown pipeline parameter 'epoch'" in err


@pytest.mark.fast
def test_missing_store_files_are_one_line(tmp_path, capsys):
    assert main(["rollback", "--store", str(tmp_path / "store")]) == 1
    assert "has no earlier deployed version" in _one_line(capsys.readouterr().err)
    assert main(["contract", "--store", str(tmp_path / "store")]) == 1
    assert "serves no version" in _one_line(capsys.readouterr().err)
    assert main(["query", "--input", str(tmp_path / "rows.csv")]) == 2
    assert _one_line(capsys.readouterr().err).startswith("rankflow query: input not found")


@pytest.mark.fast
def test_runs_on_an_empty_history(tmp_path, capsys):
    assert main(["runs", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "no runs yet" in capsys.readouterr().out
    assert main(["runs", "--runs-dir", str(tmp_path / "runs"), "--keep", "0"]) == 2
    assert "--keep must be >= 1" in _one_line(capsys.readouterr().err)


def test_a_bad_log_fails_its_step_with_the_steps_own_message(tmp_path, capsys):
    """A log that passes the up-front checks but not validation: kfp.local runs the data
    step, which fails; the CLI prints that step's own error and exits 2."""
    log = _log(tmp_path, like=["yes", "no"] * 10)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    runs = tmp_path / "runs"
    code = _run_own_data(runs, log, spec)
    assert code == 2
    line = _one_line(capsys.readouterr().err)
    run_dir = (runs / "latest").resolve()
    assert line == (
        "rankflow run: prepare-data: column 'like' (like binary target) has type string, expected "
        f"0/1 integers or booleans (log: {run_dir / 'pipeline.log'})"
    )
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "failed"
    assert record["failure"]["step"] == "prepare-data"
    assert record["failure"]["error"] == "DataValidationError"
    assert not (run_dir / "summary.json").exists()
    assert main(["runs", "--runs-dir", str(runs)]) == 0
    assert "failed at prepare-data" in capsys.readouterr().out
