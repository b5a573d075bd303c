"""Caching that can't lie: kfp.local runs of the data step wired as the pipeline wires it."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from kfp import dsl, local

from components.data.component import fingerprint_data, prepare_data
from components.data.synthetic import SyntheticConfig, iter_chunks, synthetic_spec


@dsl.pipeline(name="data-only")
def data_only(data_source: str, spec_path: str, data_snapshot: str) -> dsl.Metrics:
    """The head of the ranking pipeline: the fingerprint (never cached) keys the data step."""
    fingerprint = fingerprint_data(
        data_source=data_source, spec_path=spec_path, data_snapshot=data_snapshot
    )
    fingerprint.set_caching_options(False)
    data = prepare_data(
        data_source=data_source,
        spec_path=spec_path,
        synthetic_rows=1_000,  # unused: the log is not synthetic
        synthetic_content=False,
        seed=0,
        valid_fraction=0.1,
        test_fraction=0.1,
        data_fingerprint=fingerprint.output,
    )
    return data.outputs["data_stats"]


def _write(log: Path, rows: int, seed: int) -> None:
    frame = pd.concat(iter_chunks(SyntheticConfig(rows=rows, seed=seed)), ignore_index=True)
    frame.to_parquet(log, index=False)


@pytest.mark.slow
def test_a_changed_file_at_a_fixed_path_is_seen_by_the_next_run(tmp_path):
    """Same path, same bytes: the data step is reused. Same path, new bytes (the old mtime put
    back): it runs again and sees them. A named snapshot keys it instead."""
    log, spec = tmp_path / "log.parquet", tmp_path / "spec.yaml"
    spec.write_text(synthetic_spec().to_yaml())
    _write(log, 3_000, seed=1)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "root"),
        enable_caching=True,
        cache_root=str(tmp_path / "cache"),
    )

    def run(snapshot: str = "") -> tuple[str, dict]:
        stats = data_only(data_source=str(log), spec_path=str(spec), data_snapshot=snapshot).output
        return stats.uri, json.loads(Path(stats.path).read_text())

    first_uri, first = run()
    again_uri, again = run()
    assert again_uri == first_uri and again == first  # a cache hit: the same artifact
    stat = log.stat()
    _write(log, 3_000, seed=2)
    os.utime(log, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    changed_uri, changed = run()
    assert changed_uri != first_uri
    assert changed["data_fingerprint"] != first["data_fingerprint"]
    assert changed["click_rate"] != first["click_rate"]  # the new rows, not the old split
    # A snapshot name vouches for the bytes: the same name is reused, a new one runs.
    named_uri, _ = run("2026-12-01")
    assert run("2026-12-01")[0] == named_uri != changed_uri
