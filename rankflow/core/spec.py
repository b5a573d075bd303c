"""The dataset spec: the one place where column roles are declared.

Every later step reads roles from here (through the Merlin schema tags that the feature step derives
from it), so a log from any producer -- the synthetic generator or a user's own parquet/CSV -- flows
through the same pipeline once it has a spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rankflow.core.errors import SpecError

#: Funnel stages a target can play. A conversion can only follow a click, which validation enforces.
TARGET_STAGES = ("click", "conversion")


@dataclass(frozen=True)
class CategorifyOptions:
    """How categorical columns are encoded.

    ``freq_threshold`` maps values seen fewer times than this in train to the out-of-vocabulary
    index; ``hash_buckets`` hashes the named high-cardinality columns into that many buckets
    instead of building a vocabulary. A vocabulary column with more than ``max_vocabulary``
    distinct train values is refused by the feature step (its embedding table would be that
    many rows): hash it, raise the limit, or raise ``freq_threshold``.
    """

    freq_threshold: int = 1
    hash_buckets: Mapping[str, int] = field(default_factory=dict)
    max_vocabulary: int = 1_000_000


@dataclass(frozen=True)
class DatasetSpec:
    """Column roles of an interaction log."""

    name: str
    timestamp: str
    user_id: str
    item_id: str
    targets: Mapping[str, str]
    user_categorical: tuple[str, ...] = ()
    item_categorical: tuple[str, ...] = ()
    context_categorical: tuple[str, ...] = ()
    continuous: tuple[str, ...] = ()
    true_probabilities: Mapping[str, str] = field(default_factory=dict)
    categorify: CategorifyOptions = field(default_factory=CategorifyOptions)

    def __post_init__(self) -> None:
        if "click" not in self.targets:
            raise SpecError("spec.targets must name the 'click' target column")
        unknown = set(self.targets) - set(TARGET_STAGES)
        if unknown:
            raise SpecError(
                f"spec.targets has unknown stage(s) {sorted(unknown)}; stages are {TARGET_STAGES}"
            )
        stray = set(self.true_probabilities) - set(self.targets)
        if stray:
            raise SpecError(
                f"spec.true_probabilities names stage(s) {sorted(stray)} without a target"
            )
        columns = self.feature_columns + self.target_columns + (self.timestamp,)
        columns += tuple(self.true_probabilities.values())
        seen: set[str] = set()
        for column in columns:
            if column in seen:
                raise SpecError(f"column '{column}' is given more than one role in the spec")
            seen.add(column)
        for column, buckets in self.categorify.hash_buckets.items():
            if column not in self.categorical_columns:
                raise SpecError(
                    f"categorify.hash_buckets names '{column}', not a categorical column"
                )
            if buckets < 2:
                raise SpecError(f"categorify.hash_buckets['{column}'] must be >= 2, got {buckets}")
        if self.categorify.freq_threshold < 1:
            raise SpecError("categorify.freq_threshold must be >= 1")
        if self.categorify.max_vocabulary < 2:
            raise SpecError("categorify.max_vocabulary must be >= 2")

    # Derived views -------------------------------------------------------------------------------
    @property
    def categorical_columns(self) -> tuple[str, ...]:
        return (
            (self.user_id,)
            + self.user_categorical
            + (self.item_id,)
            + self.item_categorical
            + self.context_categorical
        )

    @property
    def feature_columns(self) -> tuple[str, ...]:
        return self.categorical_columns + self.continuous

    @property
    def target_columns(self) -> tuple[str, ...]:
        return tuple(self.targets[stage] for stage in TARGET_STAGES if stage in self.targets)

    @property
    def id_columns(self) -> tuple[str, ...]:
        return (self.user_id, self.item_id)

    @property
    def raw_columns(self) -> tuple[str, ...]:
        """Every column the pipeline reads from the raw log, in a stable order."""
        return (
            self.feature_columns
            + self.target_columns
            + (self.timestamp,)
            + tuple(
                self.true_probabilities[s] for s in TARGET_STAGES if s in self.true_probabilities
            )
        )

    def task_of(self, stage: str) -> str:
        """The task (target column) name for a funnel stage."""
        return self.targets[stage]

    # (De)serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "timestamp": self.timestamp,
            "user": {"id": self.user_id, "categorical": list(self.user_categorical)},
            "item": {"id": self.item_id, "categorical": list(self.item_categorical)},
            "context": {"categorical": list(self.context_categorical)},
            "continuous": list(self.continuous),
            "targets": dict(self.targets),
            "true_probabilities": dict(self.true_probabilities),
            "categorify": {
                "freq_threshold": self.categorify.freq_threshold,
                "hash_buckets": dict(self.categorify.hash_buckets),
                "max_vocabulary": self.categorify.max_vocabulary,
            },
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DatasetSpec:
        if not isinstance(raw, Mapping):
            raise SpecError(f"a dataset spec is a mapping, got {type(raw).__name__}")
        known = {
            "name",
            "timestamp",
            "user",
            "item",
            "context",
            "continuous",
            "targets",
            "true_probabilities",
            "categorify",
        }
        unknown = set(raw) - known
        if unknown:
            raise SpecError(f"unknown key(s) in dataset spec: {sorted(unknown)}")
        for key in ("timestamp", "user", "item", "targets"):
            if key not in raw:
                raise SpecError(f"dataset spec is missing required key '{key}'")
        user, item = _section(raw, "user"), _section(raw, "item")
        for section_name, section in (("user", user), ("item", item)):
            if "id" not in section:
                raise SpecError(f"dataset spec section '{section_name}' needs an 'id' column")
        categorify = _section(raw, "categorify")
        return cls(
            name=str(raw.get("name", "interactions")),
            timestamp=_name(raw["timestamp"], "timestamp"),
            user_id=_name(user["id"], "user.id"),
            item_id=_name(item["id"], "item.id"),
            user_categorical=_names(user.get("categorical", []), "user.categorical"),
            item_categorical=_names(item.get("categorical", []), "item.categorical"),
            context_categorical=_names(
                _section(raw, "context").get("categorical", []), "context.categorical"
            ),
            continuous=_names(raw.get("continuous", []), "continuous"),
            targets=_str_mapping(raw["targets"], "targets"),
            true_probabilities=_str_mapping(
                raw.get("true_probabilities") or {}, "true_probabilities"
            ),
            categorify=CategorifyOptions(
                freq_threshold=int(categorify.get("freq_threshold", 1)),
                hash_buckets={
                    str(k): int(v) for k, v in (categorify.get("hash_buckets") or {}).items()
                },
                max_vocabulary=int(
                    categorify.get("max_vocabulary", CategorifyOptions.max_vocabulary)
                ),
            ),
        )

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> DatasetSpec:
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise SpecError(f"dataset spec is not valid YAML: {problem}{where}") from err
        return cls.from_dict(raw)

    def save(self, path: str | Path) -> None:
        from rankflow.core.io import atomic_write_text

        atomic_write_text(path, self.to_yaml())

    @classmethod
    def load(cls, path: str | Path) -> DatasetSpec:
        path = Path(path)
        if not path.is_file():
            raise SpecError(f"dataset spec file not found: {path}")
        return cls.from_yaml(path.read_text())


def _section(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, Mapping):
        raise SpecError(f"dataset spec key '{key}' must be a mapping, got {type(value).__name__}")
    return value


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(f"dataset spec '{where}' must be a non-empty column name, got {value!r}")
    return value


def _names(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise SpecError(f"dataset spec '{where}' must be a list of column names, got {value!r}")
    return tuple(_name(v, where) for v in value)


def _str_mapping(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise SpecError(f"dataset spec '{where}' must be a mapping, got {value!r}")
    return {str(k): _name(v, f"{where}.{k}") for k, v in value.items()}
