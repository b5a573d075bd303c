"""components, pipelines and serving install as top-level names: safe only while no other
installed distribution claims one of them (checked by `make lint` and the image build)."""

from __future__ import annotations

import pytest

from rankflow import packaging

pytestmark = pytest.mark.fast


def test_our_top_level_names_are_ours_alone_here():
    assert packaging.problems() == []


def test_a_distribution_claiming_one_of_them_is_named(tmp_path):
    info = tmp_path / "serving_utils-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: serving-utils\nVersion: 1.0\n")
    (info / "top_level.txt").write_text("serving\n")
    found = packaging.problems(path=[str(tmp_path)])
    assert found == ["distribution serving-utils also installs ['serving']"]
