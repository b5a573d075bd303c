"""List and text columns in the data step: read from parquet lists or delimited CSV strings,
normalised (null -> empty, one value type), and every malformed value refused in one line that
names the column and the row, with nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.data.prepare import prepare_data
from components.data.split import SplitConfig
from components.data.synthetic import SyntheticConfig
from components.data.validate import validate_log
from rankflow.core.errors import DataValidationError, SpecError
from rankflow.core.spec import DatasetSpec

pytestmark = pytest.mark.fast

SPEC = """
timestamp: ts
user: {id: user_id, lists: [{column: recent_ads, of: ad_id}]}
item: {id: ad_id, lists: [keywords], text: [title]}
context: {categorical: [surface], text: [query]}
tasks: [click]
"""
ROWS = 400


def _table(rows: int = ROWS, seed: int = 0) -> dict[str, pa.Array]:
    rng = np.random.default_rng(seed)
    ads = rng.integers(0, 30, rows)
    history = [list(rng.integers(0, 30, rng.integers(0, 5))) for _ in range(rows)]
    keywords = [[f"k{j}" for j in rng.integers(0, 9, rng.integers(1, 4))] for _ in range(rows)]
    return {
        "user_id": pa.array(rng.integers(0, 50, rows)),
        "ad_id": pa.array(ads),
        "recent_ads": pa.array(history, pa.list_(pa.int64())),
        "keywords": pa.array(keywords, pa.list_(pa.string())),
        "title": pa.array([f"ad {a} for runners" for a in ads]),
        "query": pa.array(["running shoes" if i % 3 else "" for i in range(rows)]),
        "surface": pa.array(np.where(rng.random(rows) < 0.5, "search", "feed")),
        "ts": pa.array(np.arange(rows, dtype=np.int64) * 60),
        "click": pa.array((rng.random(rows) < 0.2).astype(np.int8)),
    }


def _write(tmp_path: Path, columns: dict, spec: str = SPEC, name: str = "log.parquet"):
    log, spec_path = tmp_path / name, tmp_path / "spec.yaml"
    if name.endswith(".csv"):
        import pyarrow.csv as pcsv

        # A CSV log holds a list as one field of values joined by the separator.
        joined = {
            k: pa.array(["|".join(map(str, v)) for v in a.to_pylist()])
            if pa.types.is_list(a.type)
            else a
            for k, a in columns.items()
        }
        pcsv.write_csv(pa.table(joined), log)
    else:
        pq.write_table(pa.table(columns), log)
    spec_path.write_text(spec)
    return log, spec_path


def _prepare(tmp_path: Path, log: Path, spec: Path):
    outputs = {s: tmp_path / "out" / s for s in ("train", "valid", "test")}
    prepared = prepare_data(
        str(log),
        spec_path=str(spec),
        synthetic=SyntheticConfig(rows=10),
        split=SplitConfig(),
        outputs=outputs,
        spec_out=tmp_path / "out" / "spec.yaml",
    )
    return prepared, outputs


def _column(outputs: dict[str, Path], column: str) -> list:
    return [
        value
        for split in ("train", "valid", "test")
        for value in pq.read_table(outputs[split] / "part-0.parquet").column(column).to_pylist()
    ]


def test_spec_with_lists_and_text_round_trips():
    spec = DatasetSpec.from_yaml(SPEC + "list_separator: ';'\nlists_max_length: 8\n")
    assert spec.list_names == ("recent_ads", "keywords")
    assert spec.list_of("recent_ads").of == "ad_id"
    assert spec.text_columns == ("title", "query")
    assert (spec.list_separator, spec.lists_max_length) == (";", 8)
    assert DatasetSpec.from_yaml(spec.to_yaml()) == spec


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("user: {id: user_id, lists: [{column: recent_ads, of: shop}]}", "not a scalar id"),
        ("user: {id: user_id, text: [bio]}", "text is an item or context role"),
        ("item: {id: ad_id, lists: [ad_id]}", "more than one role"),
        ("lists_max_length: 0", "lists_max_length must be >= 1"),
        ("list_separator: ''", "list_separator must be a non-empty"),
        (
            "user: {id: user_id, lists: [{column: recent_ads, of: ad_id, order: asc}]}",
            "unknown key",
        ),
    ],
)
def test_malformed_list_specs_are_refused(change, message):
    lines = [line for line in SPEC.strip().splitlines() if not line.startswith(change[:5])]
    with pytest.raises(SpecError, match=message):
        DatasetSpec.from_yaml("\n".join([*lines, change]))


def test_parquet_lists_are_normalised_and_kept_whole(tmp_path):
    columns = _table()
    history = columns["recent_ads"].to_pylist()
    history[5] = None  # no history yet
    history[6] = []
    history[7] = list(range(30)) * 2  # longer than lists_max_length: the workflow truncates
    columns["recent_ads"] = pa.array(history, pa.list_(pa.int32()))
    log, spec = _write(tmp_path, columns)
    prepared, outputs = _prepare(tmp_path, log, spec)
    assert sum(prepared.rows.values()) == ROWS
    got = _column(outputs, "recent_ads")
    assert got[5] == [] and got[6] == [] and got[7] == list(range(30)) * 2
    schema = pq.read_schema(outputs["train"] / "part-0.parquet")
    assert schema.field("recent_ads").type == pa.list_(pa.int64())
    assert schema.field("keywords").type == pa.list_(pa.string())


def test_csv_lists_are_split_on_the_separator(tmp_path):
    columns = _table()
    join = lambda values: "|".join(str(v) for v in values)  # noqa: E731
    history = [join(v) for v in columns["recent_ads"].to_pylist()]
    history[3] = "17"  # one value: still a list, not an integer
    history[4] = ""  # empty field: the empty list
    columns["recent_ads"] = pa.array(history)
    columns["keywords"] = pa.array([join(v) for v in columns["keywords"].to_pylist()])
    log, spec = _write(tmp_path, columns, name="log.csv")
    _, outputs = _prepare(tmp_path, log, spec)
    got = _column(outputs, "recent_ads")
    assert got[3] == [17] and got[4] == []
    assert _column(outputs, "keywords")[0] == columns["keywords"][0].as_py().split("|")
    schema = pq.read_schema(outputs["train"] / "part-0.parquet")
    assert schema.field("recent_ads").type == pa.list_(pa.int64())  # of: ad_id, an integer id


def _not_utf8(rows: int, row: int) -> pa.Array:
    """A string column whose ``row`` is Latin-1, as a writer that never checked would leave it."""
    values = [b"ok"] * rows
    values[row] = b"caf\xe9"
    binary = pa.array(values, pa.binary())
    return pa.Array.from_buffers(pa.string(), rows, binary.buffers())


def _strings(columns: dict, column: str, row: int, value) -> dict:
    values = columns[column].to_pylist()
    values[row] = value
    columns[column] = pa.array(values, columns[column].type)
    return columns


@pytest.mark.parametrize(
    ("corrupt", "name", "message"),
    [
        (
            lambda c: {**c, "recent_ads": c["ad_id"]},
            "log.parquet",
            r"column 'recent_ads' \(user list of ad_id\) has type int64, expected a list",
        ),
        (
            lambda c: {**c, "keywords": pa.array([[0.5]] * ROWS)},
            "log.parquet",
            r"column 'keywords' \(item list\) is a list of double",
        ),
        (
            lambda c: {**c, "recent_ads": pa.array([["a"]] * ROWS)},
            "log.parquet",
            r"'recent_ads' .* holds string values but 'ad_id'.* holds ints",
        ),
        (
            lambda c: _strings(c, "recent_ads", 9, [1, None, 3]),
            "log.parquet",
            r"column 'recent_ads' row 9 holds a null value inside its list",
        ),
        (
            lambda c: {
                **c,
                "recent_ads": pa.array(["1|2"] * 11 + ["3|x"] + ["4"] * (ROWS - 12)),
            },
            "log.csv",
            r"column 'recent_ads' row 11 holds 'x', not an integer",
        ),
        (
            lambda c: {**c, "keywords": pa.array(["a|b"] * 21 + ["a||b"] + ["c"] * (ROWS - 22))},
            "log.csv",
            r"column 'keywords' row 21: 'a\|\|b' has an empty value between separators",
        ),
        (
            lambda c: {**c, "keywords": pa.array(["a|b"] * 30 + ["a|"] + ["c"] * (ROWS - 31))},
            "log.parquet",
            r"column 'keywords' row 30: 'a\|' has an empty value",
        ),
        (
            lambda c: {**c, "title": _not_utf8(ROWS, 12)},
            "log.parquet",
            r"text column 'title' row 12 is not UTF-8",
        ),
    ],
)
def test_malformed_lists_and_text_fail_the_data_step_and_write_nothing(
    tmp_path, corrupt, name, message
):
    log, spec = _write(tmp_path, corrupt(_table()), name=name)
    with pytest.raises(DataValidationError, match=message):
        _prepare(tmp_path, log, spec)
    assert not (tmp_path / "out").exists()


def test_invalid_utf8_in_a_csv_names_the_row(tmp_path):
    log, spec = _write(tmp_path, _table(), name="log.csv")
    lines = log.read_bytes().split(b"\n")
    lines[8] = lines[8].replace(b"runners", b"runn\xe9rs")
    log.write_bytes(b"\n".join(lines))
    with pytest.raises(
        DataValidationError,
        match=r"log.csv: column 'title' row 7 \(line 9\): CSV conversion error to string: "
        r"invalid UTF8 data; re-encode",
    ):
        validate_log(DatasetSpec.load(spec), log)


def test_a_csv_list_split_on_the_csv_delimiter_names_the_row(tmp_path):
    """``list_separator: ","`` works in quoted CSV fields; an unquoted one splits the row."""
    columns = _table()
    columns["keywords"] = pa.array([",".join(v) for v in columns["keywords"].to_pylist()])
    columns["recent_ads"] = pa.array(
        [",".join(map(str, v)) for v in columns["recent_ads"].to_pylist()]
    )
    log, spec = _write(tmp_path, columns, SPEC + 'list_separator: ","\n', name="log.csv")
    _, outputs = _prepare(tmp_path, log, spec)  # pyarrow quotes fields holding a comma
    assert _column(outputs, "keywords")[0] == columns["keywords"][0].as_py().split(",")
    text = log.read_text().split("\n")
    row = next(i for i, line in enumerate(text) if i and line.count(",") > 8)
    text[row] = text[row].replace('"', "")
    log.write_text("\n".join(text))
    with pytest.raises(
        DataValidationError,
        match=rf"log.csv: row {row - 1} \(line {row + 1}\): Expected 9 columns, got \d+: .*quoted",
    ):
        _prepare(tmp_path / "again", log, spec)


def test_a_history_that_includes_the_rows_own_event_is_refused(tmp_path):
    columns = _table(rows=2000)
    clicks = columns["click"].to_numpy(zero_copy_only=False)
    ads = columns["ad_id"].to_numpy(zero_copy_only=False)
    # Built from events up to and including the row's own: a clicked ad ends its history.
    history = [
        h + [int(a)] if c else h
        for h, a, c in zip(columns["recent_ads"].to_pylist(), ads, clicks, strict=True)
    ]
    columns["recent_ads"] = pa.array(history, pa.list_(pa.int64()))
    log, spec = _write(tmp_path, columns)
    with pytest.raises(
        DataValidationError,
        match=r"history 'recent_ads' ends with the row's own 'ad_id' on 100% of 'click' "
        r"positive rows",
    ):
        validate_log(DatasetSpec.load(spec), log)


def test_history_times_must_precede_their_row(tmp_path):
    columns = _table()
    lengths = [len(v) for v in columns["recent_ads"].to_pylist()]
    ts = columns["ts"].to_numpy()
    times = [[int(t) - 60 * (n - i) for i in range(n)] for t, n in zip(ts, lengths, strict=True)]
    columns["recent_ads_ts"] = pa.array(times, pa.list_(pa.int64()))
    spec = SPEC.replace("of: ad_id}", "of: ad_id, times: recent_ads_ts}")
    log, spec_path = _write(tmp_path, columns, spec)
    _, outputs = _prepare(tmp_path, log, spec_path)
    assert _column(outputs, "recent_ads_ts")[:3] == times[:3]
    row = next(i for i, n in enumerate(lengths) if n and i > 40)
    times[row][-1] = int(ts[row])  # the row's own moment: not before it
    columns["recent_ads_ts"] = pa.array(times, pa.list_(pa.int64()))
    log, spec_path = _write(tmp_path, columns, spec)
    with pytest.raises(
        DataValidationError, match=rf"column 'recent_ads' row {row} holds a value from"
    ):
        validate_log(DatasetSpec.load(spec_path), log)


def test_duplicate_rows_with_lists_are_dropped(tmp_path):
    columns = _table()
    doubled = {k: pa.concat_arrays([v, v[:10]]) for k, v in columns.items()}
    log, spec = _write(tmp_path, doubled)
    prepared, _ = _prepare(tmp_path, log, spec)
    assert prepared.duplicates == 10 and sum(prepared.rows.values()) == ROWS


def test_the_synthetic_content_log_passes_the_data_step(tmp_path):
    outputs = {s: tmp_path / "out" / s for s in ("train", "valid", "test")}
    prepared = prepare_data(
        "synthetic",
        spec_path=None,
        synthetic=SyntheticConfig(rows=20_000, seed=3, content=True),
        split=SplitConfig(),
        outputs=outputs,
        spec_out=tmp_path / "out" / "spec.yaml",
    )
    assert prepared.spec.list_names == ("recent_ads", "recent_categories", "ad_keywords")
    schema = pq.read_schema(outputs["test"] / "part-0.parquet")
    assert schema.field("recent_ads").type == pa.list_(pa.int64())
    assert schema.field("ad_keywords").type == pa.list_(pa.string())
    assert schema.field("ad_title").type == pa.string()
    test = pq.read_table(outputs["test"] / "part-0.parquet").to_pandas()
    train = pq.read_table(outputs["train"] / "part-0.parquet").to_pandas()
    cold = ~test["ad_id"].isin(train["ad_id"])
    assert 0.1 < cold.mean() < 0.3  # ads first shown in the test period


def test_a_category_history_ending_with_the_rows_own_category_is_a_signal_not_a_leak(tmp_path):
    """Only an item-id history is judged for leaks: users come back to the categories they like."""
    columns = _table(rows=2000)
    clicks = columns["click"].to_numpy(zero_copy_only=False)
    category = np.asarray(columns["ad_id"].to_numpy(zero_copy_only=False)) % 5
    columns["category"] = pa.array(category)
    history = [[int(c)] if y else [] for c, y in zip(category, clicks, strict=True)]
    columns["recent_categories"] = pa.array(history, pa.list_(pa.int64()))
    spec = SPEC.replace(
        "lists: [{column: recent_ads, of: ad_id}]}",
        "lists: [{column: recent_ads, of: ad_id}, {column: recent_categories, of: category}]}",
    ).replace("item: {id: ad_id,", "item: {id: ad_id, categorical: [category],")
    log, spec_path = _write(tmp_path, columns, spec)
    validate_log(DatasetSpec.load(spec_path), log)  # no leak reported
