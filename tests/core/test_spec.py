"""The dataset spec: roles declared once, refused in one clear line when malformed."""

from __future__ import annotations

import pytest

from components.data.synthetic import synthetic_spec
from rankflow.core.errors import InputError
from rankflow.core.spec import DatasetSpec, SpecError

pytestmark = pytest.mark.fast


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("timestamp"), "missing required key 'timestamp'"),
        (lambda d: d["targets"].pop("click"), "'click' target"),
        (lambda d: d["targets"].update(like="like"), "unknown stage"),
        (lambda d: d.update(colour="red"), "unknown key"),
        (lambda d: d["item"].update(id="user_id"), "more than one role"),
        (lambda d: d["categorify"]["hash_buckets"].update(bid=10), "not a categorical column"),
    ],
)
def test_malformed_spec_is_refused(mutate, message):
    raw = synthetic_spec().to_dict()
    mutate(raw)
    with pytest.raises(SpecError, match=message):
        DatasetSpec.from_dict(raw)


def test_spec_file_errors(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        DatasetSpec.load(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        DatasetSpec.load(bad)


def test_spec_errors_are_input_errors():
    """Bad specs exit 2 through the CLI, and code that caught ValueError still does."""
    with pytest.raises(InputError) as err:
        DatasetSpec.from_yaml("- a list")
    assert isinstance(err.value, ValueError) and err.value.exit_code == 2
