"""The data step: generator, validation, time split, the component (all light: fast tier)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from kfp import dsl

from components.data.component import prepare_data as prepare_component
from components.data.fingerprint import fingerprint
from components.data.prepare import prepare_data
from components.data.split import SplitConfig
from components.data.synthetic import (
    SyntheticConfig,
    iter_chunks,
    iter_later_chunks,
    synthetic_spec,
)
from components.data.validate import DataValidationError, validate_log
from components.evaluation.metrics import auc
from rankflow.core.errors import ConfigError
from rankflow.core.spec import DatasetSpec
from tests.conftest import pipeline_defaults

pytestmark = pytest.mark.fast

SMALL = SyntheticConfig(rows=12_000, seed=3, chunk_rows=5_000)


def _log(config: SyntheticConfig = SMALL) -> pd.DataFrame:
    return pd.concat(list(iter_chunks(config)), ignore_index=True)


# -- generator ---------------------------------------------------------------------------------
def test_generator_is_deterministic_per_seed():
    a, b = _log(), _log()
    pd.testing.assert_frame_equal(a, b)
    other = _log(SyntheticConfig(rows=12_000, seed=4, chunk_rows=5_000))
    assert not a["click"].equals(other["click"])


def test_generator_rows_time_order_and_funnel():
    log = _log()
    assert len(log) == SMALL.rows
    assert log["event_ts"].is_monotonic_increasing
    # Conversions and dwell times only ever follow clicks; conversions are rare.
    clicked = log["click"] == 1
    assert not ((log["conversion"] == 1) & ~clicked).any()
    assert log["dwell_seconds"].isna().eq(~clicked).all()
    assert 0.03 < log["click"].mean() < 0.15
    assert 0.002 < log["conversion"].mean() < log["click"].mean() / 2
    # True probabilities are calibrated: they are what the labels were drawn from; the
    # conversion truth is P(conversion | click), the dwell truth E[dwell | click].
    assert log["p_click"].mean() == pytest.approx(log["click"].mean(), rel=0.1)
    assert log["p_long_view"].mean() == pytest.approx(log["long_view"].mean(), rel=0.1)
    assert log["p_conversion"][clicked].mean() == pytest.approx(
        log["conversion"][clicked].mean(), rel=0.25
    )
    assert log["dwell_expected"][clicked].mean() == pytest.approx(
        log["dwell_seconds"][clicked].mean(), rel=0.1
    )


def test_click_intercept_sets_the_click_rate():
    """The default intercept clicks several percent of rows, enough clicks for the given tasks
    to be learnable; a lower one clicks fewer (the other tasks' draws stay aligned)."""
    default = _log(SyntheticConfig(rows=200_000, seed=5, chunk_rows=100_000))
    # 7.7% in the default 2M rows, 13% in this smaller world.
    assert 0.05 < default["click"].mean() < 0.15
    rarer = _log(SyntheticConfig(rows=200_000, seed=5, chunk_rows=100_000, click_intercept=-2.9))
    assert rarer["click"].mean() < 0.7 * default["click"].mean()
    pd.testing.assert_series_equal(rarer["long_view"], default["long_view"])
    with pytest.raises(ConfigError, match="click_intercept must be within"):
        SyntheticConfig(click_intercept=float("nan"))


def test_later_chunks_continue_the_same_world_without_repeating_the_log():
    """Rows after the log's end: the same users and ads (their attributes agree), later
    timestamps, no row of the log again, and the same rows on every call."""
    config = SyntheticConfig(rows=5_000, seed=9)
    log = _log(config)
    later = pd.concat(list(iter_later_chunks(config, 3_000)), ignore_index=True)
    assert len(later) == 3_000
    assert later["event_ts"].min() > log["event_ts"].max()
    for entity, attribute in (("user_id", "user_interest"), ("ad_id", "ad_category")):
        both = pd.concat([log, later])[[entity, attribute]].drop_duplicates()
        assert both[entity].is_unique  # one attribute per user / ad across the two
        assert later[entity].isin(log[entity]).mean() > 0.9
    # Its own random stream: not the log's draws again (as chunk 0's stream would give).
    assert (later["user_id"].to_numpy()[:1000] != log["user_id"].to_numpy()[:1000]).mean() > 0.5
    again = pd.concat(list(iter_later_chunks(config, 3_000)), ignore_index=True)
    pd.testing.assert_frame_equal(later, again)
    with pytest.raises(ConfigError, match="later rows must be >= 1"):
        next(iter_later_chunks(config, 0))


def test_every_task_has_signal_a_constant_cannot_pass():
    """Oracle AUC >= 0.70 per binary task (conversion on clicks), oracle R^2 >= 0.4 for dwell."""
    log = _log(SyntheticConfig(rows=200_000, seed=5, chunk_rows=100_000))
    clicked = log["click"] == 1
    assert auc(log["click"], log["p_click"]) > 0.72
    assert auc(log["long_view"], log["p_long_view"]) > 0.72
    assert auc(log["conversion"][clicked], log["p_conversion"][clicked]) > 0.70
    dwell = log["dwell_seconds"][clicked].to_numpy(float)
    expected = log["dwell_expected"][clicked].to_numpy()
    assert 1 - ((dwell - expected) ** 2).mean() / dwell.var() > 0.45


def test_oracle_scores_its_own_auc_and_beats_single_features():
    log = _log(SyntheticConfig(rows=60_000, seed=5))
    oracle = auc(log["click"], log["p_click"])
    assert oracle > 0.72
    # The labels need feature interactions: no single feature's click rate comes close.
    for column in ("user_interest", "ad_category", "surface", "position"):
        rate = log.groupby(column)["click"].transform("mean")
        assert auc(log["click"], rate) < oracle - 0.08


def test_synthetic_spec_round_trips_through_yaml():
    spec = synthetic_spec()
    assert DatasetSpec.from_yaml(spec.to_yaml()) == spec


# -- validation ---------------------------------------------------------------------------------
@pytest.fixture
def raw_log(tmp_path) -> pd.DataFrame:
    return _log(SyntheticConfig(rows=3_000, seed=9))


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda f: f.drop(columns=["device"]), r"\['device'\].*missing"),
        (lambda f: f.assign(bid="high"), "column 'bid' \\(continuous\\) has type string"),
        (lambda f: f.assign(user_id=f["user_id"].astype("float").where(f.index != 7)), "'user_id'"),
        (
            lambda f: f.assign(click=f["click"].where(f.index != 3, 2)),
            "'click' \\(click, binary\\) must be 0/1, found 2.*kind: regression",
        ),
        (
            lambda f: f.assign(conversion=f["conversion"].where(f.index != 5, 1), click=0),
            "'conversion' \\(conversion\\) is positive on \\d+ row\\(s\\) where 'click' "
            "\\(click, its given task\\) is 0.*on_violation: drop",
        ),
        (
            lambda f: f.assign(long_view=f["long_view"].astype(float).where(f.index != 2)),
            "'long_view' \\(long_view\\) has 1 null value\\(s\\);",
        ),
        (
            lambda f: f.assign(dwell_seconds=f["dwell_seconds"].where(f["click"] == 0)),
            "'dwell_seconds' \\(dwell_seconds\\) has \\d+ null value\\(s\\) where 'click'",
        ),
        (
            lambda f: f.assign(dwell_seconds="long"),
            "'dwell_seconds' \\(dwell_seconds regression target\\) has type string",
        ),
        (lambda f: f.assign(ad_id=-f["ad_id"] - 1), "'ad_id' has negative ids"),
        (lambda f: f.iloc[:0], "has no rows"),
    ],
)
def test_invalid_log_names_the_problem(raw_log, tmp_path, corrupt, message):
    path = _write(corrupt(raw_log), tmp_path / "log.parquet")
    with pytest.raises(DataValidationError, match=message):
        validate_log(synthetic_spec(), path)


def test_nulls_in_ids_are_refused(raw_log, tmp_path):
    frame = raw_log.astype({"user_id": "Int64"})
    frame.loc[7, "user_id"] = pd.NA
    path = _write(frame, tmp_path / "log.parquet")
    with pytest.raises(DataValidationError, match="column 'user_id' has 1 null"):
        validate_log(synthetic_spec(), path)


def test_corrupt_and_missing_files(tmp_path):
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataValidationError, match="cannot read parquet"):
        validate_log(synthetic_spec(), corrupt)
    with pytest.raises(DataValidationError, match="not found"):
        validate_log(synthetic_spec(), tmp_path / "absent.parquet")
    with pytest.raises(DataValidationError, match="cannot tell the format"):
        validate_log(
            synthetic_spec(),
            _write(pd.DataFrame({"a": [1]}), tmp_path / "x.parquet").rename(tmp_path / "x.bin"),
        )


def _with_event_time(frame: pd.DataFrame, row: int, micros: int):  # -> pyarrow.Table
    """The log with one event time set to ``micros`` since the epoch (beyond pandas' ns range)."""
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    ts = table.column("event_ts").cast(pa.timestamp("us")).to_numpy().astype("int64")
    ts[row] = micros
    index = table.schema.get_field_index("event_ts")
    return table.set_column(index, "event_ts", pa.array(ts, type=pa.timestamp("us")))


def _prepare(source: Path, tmp_path: Path, spec: Path | None = None):
    if spec is None:
        spec = tmp_path / "spec.in.yaml"
        synthetic_spec().save(spec)
    return prepare_data(
        str(source),
        spec_path=str(spec),
        synthetic=SyntheticConfig(),
        split=SplitConfig(),
        outputs={n: tmp_path / "out" / n for n in ("train", "valid", "test")},
        spec_out=tmp_path / "out" / "spec.yaml",
    )


@pytest.mark.parametrize(
    ("write", "message"),
    [
        pytest.param(
            lambda f, p: (
                f.astype({"ad_id": "uint64"})
                .assign(ad_id=lambda x: x["ad_id"].where(x.index != 4, np.uint64(2**63 + 5)))
                .to_parquet(p / "log.parquet")
            ),
            r"'ad_id' has ids above 9223372036854775807 \(int64\)",
            id="overflowing-ids",
        ),
        pytest.param(
            lambda f, p: pq.write_table(
                _with_event_time(f, 9, 253_402_214_400_000_000), p / "log.parquet"
            ),
            r"1 event time\(s\) after .* e\.g\. 9999-12-31",
            id="timestamp-in-year-9999",
        ),
        pytest.param(
            lambda f, p: pq.write_table(_with_event_time(f, 9, 0), p / "log.parquet"),
            r"1 event time\(s\) before 1990-01-01.* e\.g\. 1970-01-01",
            id="timestamp-at-epoch-zero",
        ),
        pytest.param(
            lambda f, p: (p / "log.csv").write_text(
                f.to_csv(index=False) + '1,2,"unterminated,4\n'
            ),
            r"cannot read csv data at .*log\.csv: row 3000 \(line 3002\): "
            r"Expected \d+ columns, got 3",
            id="csv-broken-row",
        ),
        pytest.param(
            lambda f, p: (p / "log.parquet").write_bytes(b""),
            r"cannot read parquet data",
            id="zero-byte-file",
        ),
    ],
)
def test_bad_logs_fail_the_data_step_and_write_nothing(raw_log, tmp_path, write, message):
    write(raw_log, tmp_path)
    (source,) = [p for p in tmp_path.iterdir() if p.name.startswith("log.")]
    with pytest.raises(DataValidationError, match=message):
        _prepare(source, tmp_path)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


EVIL_WRITER = """
import os, sys
import pyarrow as pa, pyarrow.parquet as pq

class Evil(pa.PyExtensionType):
    def __init__(self):
        super().__init__(pa.int64())

    def __reduce__(self):
        return (os.system, (f"touch {sys.argv[1]}",))

column = pa.ExtensionArray.from_storage(Evil(), pa.array([1, 2, 3], pa.int64()))
pq.write_table(pa.table({"user_id": column}), sys.argv[2])
"""


def test_parquet_that_would_run_code_when_read_is_refused(tmp_path):
    """CVE-2023-47248 (pyarrow < 14.0.1): reading a pickled extension type runs its pickle."""
    import subprocess
    import sys

    marker, evil = tmp_path / "pwned", tmp_path / "log.parquet"
    subprocess.run([sys.executable, "-c", EVIL_WRITER, str(marker), str(evil)], check=True)
    # Proof the file is live: plain pyarrow in a fresh process runs the payload.
    subprocess.run(
        [sys.executable, "-c", "import pyarrow.parquet as pq, sys; pq.read_schema(sys.argv[1])",
         str(evil)],
        check=False,
        capture_output=True,
    )  # fmt: skip
    assert marker.exists()
    marker.unlink()
    with pytest.raises(DataValidationError, match="pickled Arrow extension type"):
        _prepare(evil, tmp_path)
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_spec_naming_an_absent_column_is_refused(raw_log, tmp_path):
    raw_log.to_parquet(tmp_path / "log.parquet")
    spec = synthetic_spec().to_dict()
    spec["item"]["categorical"] = [*spec["item"]["categorical"], "landing_page"]
    path = tmp_path / "spec.in.yaml"
    DatasetSpec.from_dict(spec).save(path)
    with pytest.raises(DataValidationError, match=r"\['landing_page'\] named in the dataset spec"):
        _prepare(tmp_path / "log.parquet", tmp_path, spec=path)
    assert not (tmp_path / "out").exists()


def test_exact_duplicate_rows_are_dropped_and_counted(raw_log, tmp_path):
    doubled = pd.concat([raw_log, raw_log.iloc[100:110], raw_log.iloc[[7]]], ignore_index=True)
    doubled.to_parquet(tmp_path / "log.parquet")
    prepared = _prepare(tmp_path / "log.parquet", tmp_path)
    assert prepared.duplicates == 11
    assert sum(prepared.rows.values()) == len(raw_log)
    out = pd.concat([pq.read_table(tmp_path / "out" / n).to_pandas() for n in prepared.rows])
    assert not out.duplicated().any()
    # A row that differs in one column (the same impression clicked) is not a duplicate.
    near = pd.concat([raw_log, raw_log.iloc[[3]].assign(bid=raw_log["bid"].iloc[3] + 1)])
    near.to_parquet(tmp_path / "near.parquet")
    assert _prepare(tmp_path / "near.parquet", tmp_path / "n").duplicates == 0


# -- bring your own data -------------------------------------------------------------------------
def _own_csv(tmp_path: Path, raw_log: pd.DataFrame) -> tuple[Path, Path]:
    """The generator's log renamed and saved as CSV, with a hand-written spec: another producer."""
    frame = raw_log.rename(columns={"user_id": "uid", "ad_id": "item", "click": "clicked"})
    frame = frame.drop(columns=["p_click", "p_conversion", "p_long_view", "dwell_expected"])
    frame["clicked"] = frame["clicked"].astype(bool)
    csv = _write(frame, tmp_path / "own.csv")
    spec = tmp_path / "own.yaml"
    spec.write_text(
        """
name: my-log
timestamp: event_ts
user: {id: uid, categorical: [user_geo]}
item: {id: item, categorical: [ad_category]}
context: {categorical: [surface, position]}
continuous: [bid]
targets: {click: clicked, conversion: conversion}
categorify: {freq_threshold: 1, hash_buckets: {item: 64}}
"""
    )
    return csv, spec


def test_prepare_own_csv_splits_by_time(raw_log, tmp_path):
    csv, spec_path = _own_csv(tmp_path, raw_log)
    outputs = {name: tmp_path / name for name in ("train", "valid", "test")}
    prepared = prepare_data(
        str(csv),
        spec_path=str(spec_path),
        synthetic=SyntheticConfig(),
        split=SplitConfig(valid_fraction=0.2, test_fraction=0.2),
        outputs=outputs,
        spec_out=tmp_path / "spec.yaml",
    )
    assert sum(prepared.rows.values()) == len(raw_log)
    frames = {n: pq.read_table(outputs[n]).to_pandas() for n in outputs}
    assert frames["train"]["event_ts"].max() < frames["valid"]["event_ts"].min()
    assert frames["valid"]["event_ts"].max() < frames["test"]["event_ts"].min()
    assert len(frames["test"]) == pytest.approx(0.2 * len(raw_log), rel=0.05)
    # Boolean targets arrive as 0/1 integers; columns outside the spec are dropped.
    assert frames["train"]["clicked"].dtype == np.int32
    assert "user_gender" not in frames["train"]
    assert DatasetSpec.load(tmp_path / "spec.yaml").item_id == "item"


def test_failed_validation_leaves_no_partial_output(raw_log, tmp_path):
    csv, spec_path = _own_csv(tmp_path, raw_log.assign(conversion=1))
    outputs = {name: tmp_path / "out" / name for name in ("train", "valid", "test")}
    with pytest.raises(DataValidationError, match="where 'clicked' \\(clicked, its given task\\)"):
        prepare_data(
            str(csv),
            spec_path=str(spec_path),
            synthetic=SyntheticConfig(),
            split=SplitConfig(),
            outputs=outputs,
            spec_out=tmp_path / "out" / "spec.yaml",
        )
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_own_data_needs_a_spec(tmp_path):
    with pytest.raises(ValueError, match="needs spec_path"):
        prepare_data(
            str(tmp_path / "log.parquet"),
            spec_path=None,
            synthetic=SyntheticConfig(),
            split=SplitConfig(),
            outputs={n: tmp_path / n for n in ("train", "valid", "test")},
            spec_out=tmp_path / "spec.yaml",
        )


def _violating(raw_log: pd.DataFrame, tmp_path: Path, policy: str) -> tuple[Path, Path]:
    """The log with 7 conversions (and dwell times) on rows without a click, and a spec."""
    unclicked = raw_log.index[raw_log["click"] == 0][:7]
    frame = raw_log.copy()
    frame.loc[unclicked, "conversion"] = 1
    path = _write(frame, tmp_path / "log.parquet")
    spec = synthetic_spec().to_dict() | {"on_violation": policy}
    spec_path = tmp_path / "spec.in.yaml"
    DatasetSpec.from_dict(spec).save(spec_path)
    return path, spec_path


@pytest.mark.parametrize("policy", ["drop", "count"])
def test_given_violations_are_dropped_or_counted(raw_log, tmp_path, policy):
    source, spec_path = _violating(raw_log, tmp_path, policy)
    report = validate_log(DatasetSpec.load(spec_path), source)
    assert report.violations == {"conversion": 7, "dwell_seconds": 0}
    prepared = _prepare(source, tmp_path, spec=spec_path)
    kept = sum(prepared.rows.values())
    assert prepared.violations_dropped == (7 if policy == "drop" else 0)
    assert kept == len(raw_log) - prepared.violations_dropped


def test_independent_tasks_have_no_funnel(tmp_path):
    """Census-style multi-task (income and never-married, the MMoE paper's benchmark): positives
    of one where the other is 0 are normal when the spec declares no 'given'."""
    rng = np.random.default_rng(0)
    rows = 500
    frame = pd.DataFrame(
        {
            "ts": np.arange(rows),
            "education": rng.choice(["hs", "ba", "phd"], rows),
            "age": rng.uniform(18, 80, rows),
            "capital_gain": rng.exponential(1000, rows),
            "income": rng.integers(0, 2, rows),
            "never_married": rng.integers(0, 2, rows),
        }
    )
    spec = DatasetSpec.from_yaml(
        "timestamp: ts\ncontext: {categorical: [education]}\n"
        "continuous: [age, {column: capital_gain, transform: log}]\n"
        "tasks: [income, never_married]\n"
    )
    report = validate_log(spec, _write(frame, tmp_path / "census.csv"))
    assert report.rows == rows and report.violations == {}
    assert report.positives == {
        "income": int(frame["income"].sum()),
        "never_married": int(frame["never_married"].sum()),
    }


def test_targets_null_where_not_given_become_zero_and_keep_their_kind(raw_log, tmp_path):
    """A dwell time exists only after a click: null elsewhere, 0 in the splits (weight 0)."""
    source = _write(raw_log, tmp_path / "log.parquet")
    _prepare(source, tmp_path)
    train = pq.read_table(tmp_path / "out" / "train").to_pandas()
    assert train["dwell_seconds"].dtype == np.float32 and not train["dwell_seconds"].isna().any()
    assert (train.loc[train["click"] == 0, "dwell_seconds"] == 0).all()
    assert train["long_view"].dtype == np.int32


def test_weight_column_must_be_complete_and_non_negative(raw_log, tmp_path):
    spec = DatasetSpec.from_dict(synthetic_spec().to_dict() | {"weight_column": "w"})
    for weights, message in (
        (np.where(raw_log.index == 4, -1.0, 1.0), "finite weights >= 0"),
        (np.zeros(len(raw_log)), "0 on every row"),
    ):
        path = _write(raw_log.assign(w=weights), tmp_path / "log.parquet")
        with pytest.raises(DataValidationError, match=message):
            validate_log(spec, path)


# -- component ----------------------------------------------------------------------------------
def test_component_writes_named_artifacts(artifact):
    outs = {
        "train_data": artifact(dsl.Dataset, "train_data"),
        "valid_data": artifact(dsl.Dataset, "valid_data"),
        "test_data": artifact(dsl.Dataset, "test_data"),
        "dataset_spec": artifact(dsl.Artifact, "dataset_spec"),
        "data_stats": artifact(dsl.Metrics, "data_stats"),
    }
    params = {**pipeline_defaults(prepare_component), "synthetic_rows": 5_000, "seed": 2}
    key = fingerprint("synthetic", spec_path=None, snapshot=None)
    prepare_component.python_func(**outs, **params, data_fingerprint=key)
    assert outs["data_stats"].metadata["data_fingerprint"] == key
    stats = outs["data_stats"].metadata
    assert stats["train_rows"] + stats["valid_rows"] + stats["test_rows"] == 5_000
    assert 0 < stats["conversion_rate"] < stats["click_rate"] < 1
    # The pipeline's default log is the one with content (lists, text, cold ads).
    assert params["synthetic_content"] is True
    assert DatasetSpec.load(outs["dataset_spec"].path) == synthetic_spec(content=True)
    assert pq.read_table(outs["test_data"].path).num_rows == stats["test_rows"]
    # Every output records its digest; a consumer refuses one changed after it was written.
    from rankflow.core.integrity import IntegrityError, checked

    for name in ("train_data", "valid_data", "test_data", "dataset_spec"):
        assert checked(outs[name]) == Path(outs[name].path)
    Path(outs["dataset_spec"].path).write_text(synthetic_spec().to_yaml().replace("click", "clk"))
    with pytest.raises(IntegrityError, match="dataset_spec: sha256"):
        checked(outs["dataset_spec"])


def test_the_fingerprint_follows_the_bytes_not_the_path(tmp_path, monkeypatch):
    """Same bytes: same key; a changed byte (same size, mtime put back), another file, another
    spec or a named snapshot: another key. A missing source is fingerprinted, not an error."""
    import os

    import components.data.fingerprint as fp

    log = tmp_path / "log"
    log.mkdir()
    part = log / "part-0.parquet"
    part.write_bytes(bytes(range(256)) * 64)
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\n")

    def key(**kw):
        return fp.fingerprint(str(log), spec_path=str(spec), snapshot=kw.get("snapshot"))

    first = key()
    assert key() == first
    stat = part.stat()
    data = bytearray(part.read_bytes())
    data[5000] ^= 1
    part.write_bytes(bytes(data))
    os.utime(part, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert part.stat().st_size == stat.st_size and part.stat().st_mtime_ns == stat.st_mtime_ns
    changed = key()
    assert changed != first
    # Large files are sampled: a block at the head, the tail and spread between them.
    monkeypatch.setattr(fp, "WHOLE_FILE_BYTES", 1024)
    monkeypatch.setattr(fp, "BLOCK_BYTES", 512)
    sampled = key()
    data[-1] ^= 1
    part.write_bytes(bytes(data))
    os.utime(part, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert key() != sampled
    monkeypatch.undo()
    (log / "part-1.parquet").write_bytes(b"more")
    grown = key()
    assert grown not in (first, changed)
    spec.write_text("name: y\n")
    assert key() != grown
    assert key(snapshot="2026-12-01") == key(snapshot="2026-12-01") != key()
    missing = fp.fingerprint(str(tmp_path / "nope"), spec_path=None, snapshot=None)
    assert len(missing) == 64
    assert fp.fingerprint("synthetic", spec_path=None, snapshot=None) != missing


# -- content columns of the generator ----------------------------------------------------------
CONTENT = SyntheticConfig(rows=60_000, seed=5, chunk_rows=30_000, content=True)


def test_content_columns_leave_the_other_columns_as_they_were():
    """Content comes from streams of its own: without it the log is unchanged, and with it the
    rows that don't show a cold ad keep every feature. Their outcomes move: an ad's topic,
    which its words tell, is part of its latent vector."""
    plain = _log(SyntheticConfig(rows=60_000, seed=5, chunk_rows=30_000))
    rich = _log(CONTENT)
    pd.testing.assert_frame_equal(_log(CONTENT), rich)
    assert not {"recent_ads", "ad_title", "query"} & set(plain.columns)
    warm = rich["ad_id"] < CONTENT.ads
    assert 0 < (~warm).sum() < 0.05 * len(rich)
    outcomes = [
        "click",
        "conversion",
        "long_view",
        "dwell_seconds",
        "p_click",
        "p_conversion",
        "p_long_view",
        "dwell_expected",
    ]
    features = [c for c in plain.columns if c not in outcomes]
    pd.testing.assert_frame_equal(plain.loc[warm.to_numpy(), features], rich.loc[warm, features])
    assert not np.allclose(plain.loc[warm.to_numpy(), "p_click"], rich.loc[warm, "p_click"])


def test_an_ads_topic_shows_in_its_words_and_moves_its_clicks():
    """What only the text tells: most of an ad's title words come from its topic, and for the
    same users and ad category, ads of different topics click differently -- more so than the
    same rows without content, where topics don't exist."""
    from components.data.synthetic import FRESH_TOPICS, TOPICS

    rich = _log(CONTENT)
    plain = _log(SyntheticConfig(rows=60_000, seed=5, chunk_rows=30_000))
    words = {w: t for t, topic in enumerate(TOPICS) for w in topic}
    fresh = {w: t for t, topic in enumerate(FRESH_TOPICS) for w in topic}
    # New ads come with new copy: a cold ad's words are the fresh ones, a warm ad's never.
    ads = rich.drop_duplicates("ad_id")
    cold_words = {w for t in ads.loc[ads["ad_id"] >= CONTENT.ads, "ad_title"] for w in t.split()}
    warm_words = {w for t in ads.loc[ads["ad_id"] < CONTENT.ads, "ad_title"] for w in t.split()}
    assert cold_words and cold_words <= set(fresh) and warm_words <= set(words)
    words |= fresh

    def counts(title: str) -> np.ndarray:
        return np.bincount([words[w] for w in title.split()], minlength=len(TOPICS))

    titles = rich.drop_duplicates("ad_id")["ad_title"]
    assert np.mean([counts(t).max() / counts(t).sum() for t in titles]) >= 0.5
    warm = (rich["ad_id"] < CONTENT.ads).to_numpy()
    topic = rich.loc[warm, "ad_title"].map(lambda t: int(counts(t).argmax())).to_numpy()

    def spread(log: pd.DataFrame) -> float:
        rows = log[warm].assign(topic=topic)
        means = rows.groupby(["user_interest", "ad_category", "topic"])["p_click"].mean()
        return float(means.groupby(level=[0, 1]).std().dropna().median())

    assert spread(rich) > 1.5 * spread(plain)


def test_cold_ads_appear_only_late_and_histories_hold_earlier_ads():
    log = _log(CONTENT)
    cold = log["ad_id"] >= CONTENT.ads
    assert log.loc[cold, "event_ts"].min() >= log["event_ts"].quantile(1 - CONTENT.cold_period)
    assert log["ad_id"][cold].nunique() > 5
    # Histories are warm ads the user engaged with, oldest first, some empty, some past 20.
    lengths = log["recent_ads"].map(len)
    assert lengths.min() == 0 and lengths.max() > 20
    flat = np.concatenate(log["recent_ads"].to_numpy())
    assert flat.max() < CONTENT.ads
    # recent_categories are the categories of recent_ads; queries only on search.
    category_of = dict(zip(log["ad_id"], log["ad_category"], strict=False))
    for ads, categories in zip(
        log["recent_ads"][:500], log["recent_categories"][:500], strict=True
    ):
        assert [category_of.get(a, c) for a, c in zip(ads, categories, strict=True)] == list(
            categories
        )
    assert (log["query"] != "").eq(log["surface"] == "search").all()
    assert log.groupby("ad_id")["ad_title"].nunique().max() == 1


def test_content_carries_signal():
    """An ad whose category the user's history holds is clicked more; a search whose query
    shares a word with the ad's title more too."""
    log = _log(CONTENT)
    in_history = np.array(
        [c in set(h) for c, h in zip(log["ad_category"], log["recent_categories"], strict=True)]
    )
    assert log["click"][in_history].mean() > 1.1 * log["click"][~in_history].mean()
    search = log[log["surface"] == "search"]
    shared = np.array(
        [
            bool(set(q.split()) & set(t.split()))
            for q, t in zip(search["query"], search["ad_title"], strict=True)
        ]
    )
    assert search["click"][shared].mean() > 1.1 * search["click"][~shared].mean()


def test_content_spec_declares_lists_and_text():
    spec = synthetic_spec(content=True)
    assert spec.list_of("recent_ads").of == "ad_id"
    assert spec.list_of("recent_categories").of == "ad_category"
    assert spec.list_names == ("recent_ads", "recent_categories", "ad_keywords")
    assert spec.text_columns == ("ad_title", "query")
    assert DatasetSpec.from_yaml(spec.to_yaml()) == spec
