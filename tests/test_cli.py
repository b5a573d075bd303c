"""`rankflow run --set NAME=VALUE`: typed from the pipeline's own parameter declarations."""

from __future__ import annotations

import pytest

from rankflow.cli import parse_overrides


def test_overrides_are_typed_like_the_pipeline_parameters():
    assert parse_overrides(
        ["architecture=ple", "epochs=2", "min_auc_click=0.6", "model_store=/tmp/store"]
    ) == {"architecture": "ple", "epochs": 2, "min_auc_click": 0.6, "model_store": "/tmp/store"}


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
    with pytest.raises(SystemExit, match=message):
        parse_overrides([pair])
