from __future__ import annotations

import pytest

from rankflow.core.artifacts import atomic_dir
from rankflow.core.io import parquet_parts

pytestmark = pytest.mark.fast


def test_atomic_dir_publishes_only_on_success(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_dir(final) as scratch:
        (scratch / "half.parquet").write_text("x")
        raise RuntimeError("killed mid-write")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(final) as scratch:
        (scratch / "whole.parquet").write_text("x")
    assert sorted(p.name for p in final.iterdir()) == ["_SHA256SUMS", "whole.parquet"]
    # Re-running replaces the previous artifact whole.
    with atomic_dir(final) as scratch:
        (scratch / "again.parquet").write_text("y")
    assert sorted(p.name for p in final.iterdir()) == ["_SHA256SUMS", "again.parquet"]


def test_parquet_parts_orders_numerically_and_skips_metadata(tmp_path):
    for name in ("part_10.parquet", "part_2.parquet", "schema.pbtxt", "_metadata"):
        (tmp_path / name).write_text("")
    assert [p.name for p in parquet_parts(tmp_path)] == ["part_2.parquet", "part_10.parquet"]
    with pytest.raises(FileNotFoundError, match="no parquet files"):
        parquet_parts(tmp_path / "schema.pbtxt")
