"""The dataset spec: the one place where column roles and tasks are declared.

Every later step reads roles from here (through the Merlin schema tags that the feature step derives
from it), so a log from any producer -- the synthetic generator or a user's own parquet/CSV -- flows
through the same pipeline once it has a spec.

A spec names the features (ids optional, any role list may be empty, at least one feature), the
tasks (any number >= 1; each ``binary`` or ``regression``, optionally ``given`` an earlier binary
task it only happens under, with a loss ``weight``), an optional per-row ``weight_column`` and the
evaluation ``slices``. The pre-0.2 ``targets: {click: ..., conversion: ...}`` mapping still loads:
a click task, and a conversion task given the click.

Besides scalar columns a role may carry **lists** (a user's recent ads or categories, an ad's
keywords) and **text** (an ad's title, the search query). A list is ordered oldest to newest:
its last ``lists_max_length`` values are kept, the newest. A history list declared ``of:`` a
scalar categorical column shares that column's vocabulary, so a user's recent ads and the
candidate ad are embedded alike. In a CSV log a list arrives as one string of values joined by
``list_separator``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rankflow.core.errors import SpecError

#: What a task predicts: a probability (binary) or a value in the target's own unit (regression).
TASK_KINDS = ("binary", "regression")
#: Losses per kind; the first is the default.
LOSSES = {"binary": ("bce",), "regression": ("mse", "huber")}
#: Target transforms a regression task may train in (served values are back in the target's unit).
TARGET_TRANSFORMS = ("log1p",)
#: What to do with a row whose task is positive where its ``given`` task is 0.
ON_VIOLATION = ("error", "drop", "count")
#: Continuous-column transforms, before the z-score.
CONTINUOUS_TRANSFORMS = ("log", "clip", "bucketize")
#: Quantiles of the train split that bound a ``clip`` transform unless ``min`` / ``max`` are given.
CLIP_QUANTILES = (0.001, 0.999)
#: Quantile buckets of a ``bucketize`` transform unless ``bins`` is given.
DEFAULT_BINS = 10
#: Values a list keeps (its newest) unless the spec says ``lists_max_length``.
LISTS_MAX_LENGTH = 20
#: How a CSV log joins a list's values into one field unless the spec says ``list_separator``.
LIST_SEPARATOR = "|"
#: The roles of a spec section, and which of them a section may have.
SECTION_KEYS = {
    "user": ("id", "categorical", "lists"),
    "item": ("id", "categorical", "lists", "text"),
    "context": ("categorical", "lists", "text"),
}


@dataclass(frozen=True)
class ListColumn:
    """A list (multi-hot or sequence) feature column.

    ``of`` names a scalar categorical column whose vocabulary the list shares (a history of ad
    ids ``of: ad_id``): one joint vocabulary, one embedding table. ``times`` optionally names a
    parallel list column holding each value's event time: the data step then checks that every
    value happened before its row (a history holding the row's own event leaks the label).
    """

    column: str
    of: str | None = None
    times: str | None = None

    def to_dict(self) -> str | dict[str, str]:
        if self.of is None and self.times is None:
            return self.column
        raw = {"column": self.column}
        if self.of is not None:
            raw["of"] = self.of
        if self.times is not None:
            raw["times"] = self.times
        return raw


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
class Task:
    """One thing the ranker predicts.

    ``given`` names a binary task this one only happens under (a conversion only after a click):
    the task's output is then P(task | given = 1) (or E[target | given = 1]), it trains on the
    given task's positives only, and its target may be null where the given task is 0.
    ``truth`` optionally names a column holding the true probability (binary) or conditional
    expectation (regression) of the task -- known for synthetic logs -- for oracle metrics.
    """

    name: str
    column: str
    kind: str = "binary"
    given: str | None = None
    weight: float = 1.0
    loss: str | None = None
    transform: str | None = None
    truth: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "multiclass":
            raise SpecError(
                f"task '{self.name}': kind 'multiclass' is not supported; declare one binary "
                "task per class (one-vs-rest), or a regression task for an ordinal target"
            )
        if self.kind not in TASK_KINDS:
            raise SpecError(
                f"task '{self.name}': kind must be one of {TASK_KINDS}, got {self.kind!r}"
            )
        if not self.weight > 0:
            raise SpecError(f"task '{self.name}': weight must be > 0, got {self.weight}")
        if self.loss is not None and self.loss not in LOSSES[self.kind]:
            raise SpecError(
                f"task '{self.name}': loss of a {self.kind} task is one of "
                f"{LOSSES[self.kind]}, got {self.loss!r}"
            )
        if self.transform is not None:
            if self.kind != "regression":
                raise SpecError(f"task '{self.name}': only a regression target takes a transform")
            if self.transform not in TARGET_TRANSFORMS:
                raise SpecError(
                    f"task '{self.name}': transform must be one of {TARGET_TRANSFORMS}, "
                    f"got {self.transform!r}"
                )

    @property
    def loss_name(self) -> str:
        return self.loss or LOSSES[self.kind][0]

    def to_dict(self) -> dict[str, Any]:
        raw: dict[str, Any] = {"name": self.name, "column": self.column}
        if self.kind != "binary":
            raw["kind"] = self.kind
        for key in ("given", "loss", "transform", "truth"):
            if getattr(self, key) is not None:
                raw[key] = getattr(self, key)
        if self.weight != 1.0:
            raw["weight"] = self.weight
        return raw


@dataclass(frozen=True)
class ContinuousTransform:
    """How one continuous column is shaped before its z-score.

    ``log``: log(1 + max(x, 0)), for money and counts. ``clip``: to [min, max], by default the
    train split's 0.1% / 99.9% quantiles. ``bucketize``: ``bins`` quantile buckets of the train
    split (or explicit ``bounds``), embedded as a categorical. Bounds are computed before the fit
    and handed to NVTabular's stock ops, so nothing custom is pickled into the workflow.
    """

    kind: str
    min: float | None = None
    max: float | None = None
    bins: int | None = None
    bounds: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in CONTINUOUS_TRANSFORMS:
            raise SpecError(
                f"continuous transform must be one of {CONTINUOUS_TRANSFORMS}, got {self.kind!r}"
            )
        if self.kind != "clip" and (self.min is not None or self.max is not None):
            raise SpecError(f"min/max belong to a clip transform, not {self.kind!r}")
        if self.kind != "bucketize" and (self.bins is not None or self.bounds is not None):
            raise SpecError(f"bins/bounds belong to a bucketize transform, not {self.kind!r}")
        if self.min is not None and self.max is not None and not self.min < self.max:
            raise SpecError(f"clip needs min < max, got {self.min} and {self.max}")
        if self.bins is not None and self.bins < 2:
            raise SpecError(f"bucketize needs bins >= 2, got {self.bins}")
        if self.bounds is not None and (
            not self.bounds or list(self.bounds) != sorted(set(self.bounds))
        ):
            raise SpecError(f"bucketize bounds must be increasing, got {list(self.bounds)}")


@dataclass(frozen=True)
class DatasetSpec:
    """Column roles and tasks of an interaction log."""

    name: str
    timestamp: str
    tasks: tuple[Task, ...]
    user_id: str | None = None
    item_id: str | None = None
    user_categorical: tuple[str, ...] = ()
    item_categorical: tuple[str, ...] = ()
    context_categorical: tuple[str, ...] = ()
    continuous: tuple[str, ...] = ()
    continuous_transforms: Mapping[str, ContinuousTransform] = field(default_factory=dict)
    weight_column: str | None = None
    slices: tuple[str, ...] = ()
    on_violation: str = "error"
    categorify: CategorifyOptions = field(default_factory=CategorifyOptions)
    user_lists: tuple[ListColumn, ...] = ()
    item_lists: tuple[ListColumn, ...] = ()
    context_lists: tuple[ListColumn, ...] = ()
    item_text: tuple[str, ...] = ()
    context_text: tuple[str, ...] = ()
    list_separator: str = LIST_SEPARATOR
    lists_max_length: int = LISTS_MAX_LENGTH

    def __post_init__(self) -> None:
        if not self.tasks:
            raise SpecError("spec.tasks must declare at least one task")
        if not self.feature_columns:
            raise SpecError(
                "the spec declares no feature: name at least one id, categorical or continuous "
                "column"
            )
        names = [t.name for t in self.tasks]
        for i, task in enumerate(self.tasks):
            if names.count(task.name) > 1:
                raise SpecError(f"task name '{task.name}' is declared more than once")
            if task.given is not None:
                earlier = {t.name: t for t in self.tasks[:i]}
                if task.given not in earlier:
                    raise SpecError(
                        f"task '{task.name}' is given '{task.given}', which is not a task "
                        f"declared before it (tasks: {names})"
                    )
                if earlier[task.given].kind != "binary":
                    raise SpecError(
                        f"task '{task.name}' is given '{task.given}', a regression task; "
                        "'given' names a binary task"
                    )
        if self.on_violation not in ON_VIOLATION:
            raise SpecError(
                f"on_violation must be one of {ON_VIOLATION}, got {self.on_violation!r}"
            )
        columns = (
            self.feature_columns
            + tuple(e.times for e in self.list_columns if e.times is not None)
            + self.target_columns
            + (self.timestamp,)
            + self.truth_columns
            + ((self.weight_column,) if self.weight_column else ())
        )
        seen: set[str] = set()
        for column in columns:
            if column in seen:
                raise SpecError(f"column '{column}' is given more than one role in the spec")
            seen.add(column)
        # Task names become the schema's target columns: they must not shadow another column.
        for task in self.tasks:
            if task.name != task.column and task.name in seen:
                raise SpecError(
                    f"task name '{task.name}' is also a column of the spec; name the task "
                    "after its own column or choose another name"
                )
        for column in self.slices:
            if column in self.target_columns or column == self.weight_column:
                raise SpecError(f"slice column '{column}' is a target or the weight column")
        for column in self.continuous_transforms:
            if column not in self.continuous:
                raise SpecError(f"a transform names '{column}', not a continuous column")
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
        self._check_lists()

    def _check_lists(self) -> None:
        if self.lists_max_length < 1:
            raise SpecError(f"lists_max_length must be >= 1, got {self.lists_max_length}")
        if not self.list_separator or self.list_separator in ("\n", "\r", '"'):
            raise SpecError(
                f"list_separator must be a non-empty string other than a newline or a quote, "
                f"got {self.list_separator!r}"
            )
        scalar = set(self.categorical_columns)
        for entry in self.list_columns:
            if entry.of is None:
                continue
            if entry.of not in scalar:
                raise SpecError(
                    f"list '{entry.column}' is declared of '{entry.of}', which is not a scalar "
                    f"id or categorical column of the spec ({sorted(scalar)})"
                )
            if entry.of in self.categorify.hash_buckets:
                raise SpecError(
                    f"list '{entry.column}' is declared of '{entry.of}', a hashed column; a "
                    "shared vocabulary needs a vocabulary column (drop it from hash_buckets)"
                )
        for entry in self.list_columns:
            if entry.column in self.categorify.hash_buckets:
                raise SpecError(
                    f"categorify.hash_buckets names the list '{entry.column}'; lists are "
                    "encoded with a vocabulary (raise freq_threshold to bound it)"
                )

    # Derived views -------------------------------------------------------------------------------
    @property
    def categorical_columns(self) -> tuple[str, ...]:
        return (
            ((self.user_id,) if self.user_id is not None else ())
            + self.user_categorical
            + ((self.item_id,) if self.item_id is not None else ())
            + self.item_categorical
            + self.context_categorical
        )

    @property
    def list_columns(self) -> tuple[ListColumn, ...]:
        return self.user_lists + self.item_lists + self.context_lists

    @property
    def list_names(self) -> tuple[str, ...]:
        return tuple(e.column for e in self.list_columns)

    @property
    def text_columns(self) -> tuple[str, ...]:
        return self.item_text + self.context_text

    def list_of(self, column: str) -> ListColumn:
        for entry in self.list_columns:
            if entry.column == column:
                return entry
        raise SpecError(f"no list column named '{column}' (lists: {list(self.list_names)})")

    @property
    def feature_columns(self) -> tuple[str, ...]:
        """Every model input column: scalar categoricals, continuous, lists, then text."""
        return self.categorical_columns + self.continuous + self.list_names + self.text_columns

    @property
    def target_columns(self) -> tuple[str, ...]:
        """The raw columns of the tasks, in task order."""
        return tuple(t.column for t in self.tasks)

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    @property
    def truth_columns(self) -> tuple[str, ...]:
        return tuple(t.truth for t in self.tasks if t.truth is not None)

    @property
    def id_columns(self) -> tuple[str, ...]:
        return tuple(c for c in (self.user_id, self.item_id) if c is not None)

    @property
    def label_columns(self) -> tuple[str, ...]:
        """Raw columns that are not features: what serving drops from the workflow's inputs."""
        return self.target_columns + ((self.weight_column,) if self.weight_column else ())

    @property
    def raw_columns(self) -> tuple[str, ...]:
        """Every column the pipeline reads from the raw log, in a stable order."""
        columns = list(self.feature_columns + self.label_columns + (self.timestamp,))
        times = tuple(e.times for e in self.list_columns if e.times is not None)
        columns += [c for c in times + self.truth_columns + self.slices if c not in columns]
        return tuple(columns)

    def task(self, name: str) -> Task:
        for task in self.tasks:
            if task.name == name:
                return task
        raise SpecError(f"no task named '{name}' (tasks: {list(self.task_names)})")

    # (De)serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        continuous: list[Any] = []
        for column in self.continuous:
            transform = self.continuous_transforms.get(column)
            if transform is None:
                continuous.append(column)
                continue
            entry: dict[str, Any] = {"column": column, "transform": transform.kind}
            for key in ("min", "max", "bins"):
                if getattr(transform, key) is not None:
                    entry[key] = getattr(transform, key)
            if transform.bounds is not None:
                entry["bounds"] = list(transform.bounds)
            continuous.append(entry)
        raw: dict[str, Any] = {"name": self.name, "timestamp": self.timestamp}
        sections = {
            "user": (self.user_id, self.user_categorical, self.user_lists, ()),
            "item": (self.item_id, self.item_categorical, self.item_lists, self.item_text),
            "context": (None, self.context_categorical, self.context_lists, self.context_text),
        }
        for key, (id_, categorical, lists, text) in sections.items():
            section: dict[str, Any] = {} if id_ is None else {"id": id_}
            section["categorical"] = list(categorical)
            if lists:
                section["lists"] = [e.to_dict() for e in lists]
            if text:
                section["text"] = list(text)
            raw[key] = section
        if self.list_columns:
            raw["list_separator"] = self.list_separator
            raw["lists_max_length"] = self.lists_max_length
        raw["continuous"] = continuous
        raw["tasks"] = [t.to_dict() for t in self.tasks]
        if self.weight_column is not None:
            raw["weight_column"] = self.weight_column
        if self.slices:
            raw["slices"] = list(self.slices)
        if self.on_violation != "error":
            raw["on_violation"] = self.on_violation
        raw["categorify"] = {
            "freq_threshold": self.categorify.freq_threshold,
            "hash_buckets": dict(self.categorify.hash_buckets),
            "max_vocabulary": self.categorify.max_vocabulary,
        }
        return raw

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
            "tasks",
            "targets",
            "true_probabilities",
            "weight_column",
            "slices",
            "on_violation",
            "categorify",
            "list_separator",
            "lists_max_length",
        }
        unknown = set(raw) - known
        if unknown:
            raise SpecError(f"unknown key(s) in dataset spec: {sorted(unknown)}")
        if "timestamp" not in raw:
            raise SpecError("dataset spec is missing required key 'timestamp'")
        if ("tasks" in raw) == ("targets" in raw):
            raise SpecError(
                "dataset spec needs exactly one of 'tasks' (a list of {name, column, kind, "
                "given, weight}) or the older 'targets' mapping"
            )
        user, item, context = _section(raw, "user"), _section(raw, "item"), _section(raw, "context")
        for section_name, section in (("user", user), ("item", item), ("context", context)):
            extra = set(section) - set(SECTION_KEYS[section_name])
            if extra:
                hint = " (text is an item or context role)" if "text" in extra else ""
                raise SpecError(
                    f"unknown key(s) in spec section '{section_name}': {sorted(extra)}; it "
                    f"takes {list(SECTION_KEYS[section_name])}{hint}"
                )
        tasks = (
            _tasks(raw["tasks"])
            if "tasks" in raw
            else _legacy_tasks(raw["targets"], raw.get("true_probabilities") or {})
        )
        if "tasks" in raw and raw.get("true_probabilities"):
            raise SpecError("true_probabilities goes with 'targets'; with 'tasks' use task.truth")
        continuous, transforms = _continuous(raw.get("continuous", []))
        categorify = _section(raw, "categorify")
        extra = set(categorify) - {"freq_threshold", "hash_buckets", "max_vocabulary"}
        if extra:
            raise SpecError(f"unknown key(s) in spec section 'categorify': {sorted(extra)}")
        weight = raw.get("weight_column")
        return cls(
            name=str(raw.get("name", "interactions")),
            timestamp=_name(raw["timestamp"], "timestamp"),
            tasks=tasks,
            user_id=_name(user["id"], "user.id") if user.get("id") is not None else None,
            item_id=_name(item["id"], "item.id") if item.get("id") is not None else None,
            user_categorical=_names(user.get("categorical") or [], "user.categorical"),
            item_categorical=_names(item.get("categorical") or [], "item.categorical"),
            context_categorical=_names(context.get("categorical") or [], "context.categorical"),
            user_lists=_lists(user.get("lists") or [], "user.lists"),
            item_lists=_lists(item.get("lists") or [], "item.lists"),
            context_lists=_lists(context.get("lists") or [], "context.lists"),
            item_text=_names(item.get("text") or [], "item.text"),
            context_text=_names(context.get("text") or [], "context.text"),
            list_separator=_separator(raw.get("list_separator", LIST_SEPARATOR)),
            lists_max_length=_int(
                raw.get("lists_max_length", LISTS_MAX_LENGTH), "lists_max_length"
            ),
            continuous=continuous,
            continuous_transforms=transforms,
            weight_column=_name(weight, "weight_column") if weight is not None else None,
            slices=_names(raw.get("slices") or [], "slices"),
            on_violation=str(raw.get("on_violation", "error")),
            categorify=CategorifyOptions(
                freq_threshold=_int(categorify.get("freq_threshold", 1), "freq_threshold"),
                hash_buckets={
                    str(k): _int(v, f"hash_buckets.{k}")
                    for k, v in (categorify.get("hash_buckets") or {}).items()
                },
                max_vocabulary=_int(
                    categorify.get("max_vocabulary", CategorifyOptions.max_vocabulary),
                    "max_vocabulary",
                ),
            ),
        )

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> DatasetSpec:
        try:
            raw = yaml.load(text, Loader=_UniqueKeyLoader)
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


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a repeated mapping key (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice in one mapping",
                    mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _UniqueKeyLoader.construct_mapping
)

_TASK_KEYS = {"name", "column", "kind", "given", "weight", "loss", "transform", "truth"}


def _tasks(value: Any) -> tuple[Task, ...]:
    if not isinstance(value, list) or not value:
        raise SpecError(f"dataset spec 'tasks' must be a non-empty list, got {value!r}")
    tasks = []
    for i, entry in enumerate(value):
        if isinstance(entry, str):
            entry = {"name": entry, "column": entry}
        if not isinstance(entry, Mapping):
            raise SpecError(f"tasks[{i}] must be a mapping {{name, column, ...}}, got {entry!r}")
        unknown = set(entry) - _TASK_KEYS
        if unknown:
            raise SpecError(
                f"tasks[{i}] has unknown key(s) {sorted(unknown)} ({sorted(_TASK_KEYS)})"
            )
        if "column" not in entry and "name" not in entry:
            raise SpecError(f"tasks[{i}] needs a 'column' (and optionally a 'name')")
        column = _name(entry.get("column", entry.get("name")), f"tasks[{i}].column")
        name = _name(entry.get("name", column), f"tasks[{i}].name")
        if "/" in name:
            raise SpecError(f"task name '{name}' may not contain '/'")
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise SpecError(f"tasks[{i}].weight must be a number, got {weight!r}")
        optional = {
            key: _name(entry[key], f"tasks[{i}].{key}")
            for key in ("given", "loss", "transform", "truth")
            if entry.get(key) is not None
        }
        tasks.append(
            Task(
                name=name,
                column=column,
                kind=str(entry.get("kind", "binary")),
                weight=float(weight),
                **optional,
            )
        )
    return tuple(tasks)


def _legacy_tasks(targets: Any, truths: Any) -> tuple[Task, ...]:
    """``targets: {click: c, conversion: v}`` (pre-0.2): click, then conversion given click."""
    targets = _str_mapping(targets, "targets")
    truths = _str_mapping(truths, "true_probabilities")
    if "click" not in targets:
        raise SpecError("spec.targets must name the 'click' target column")
    unknown = set(targets) - {"click", "conversion"}
    if unknown:
        raise SpecError(
            f"spec.targets has unknown stage(s) {sorted(unknown)}; stages are click and "
            "conversion (declare other tasks in a 'tasks' list)"
        )
    stray = set(truths) - set(targets)
    if stray:
        raise SpecError(f"spec.true_probabilities names stage(s) {sorted(stray)} without a target")
    tasks = [Task(name=targets["click"], column=targets["click"], truth=truths.get("click"))]
    if "conversion" in targets:
        # The older truth column held P(click and conversion); it is no conditional truth.
        tasks.append(
            Task(name=targets["conversion"], column=targets["conversion"], given=tasks[0].name)
        )
    return tuple(tasks)


def _continuous(value: Any) -> tuple[tuple[str, ...], dict[str, ContinuousTransform]]:
    if not isinstance(value, list):
        raise SpecError(f"dataset spec 'continuous' must be a list, got {value!r}")
    names: list[str] = []
    transforms: dict[str, ContinuousTransform] = {}
    for entry in value:
        if isinstance(entry, str):
            names.append(_name(entry, "continuous"))
            continue
        if not isinstance(entry, Mapping) or "column" not in entry:
            raise SpecError(
                f"a continuous entry is a column name or {{column, transform}}, got {entry!r}"
            )
        unknown = set(entry) - {"column", "transform", "min", "max", "bins", "bounds"}
        if unknown:
            raise SpecError(f"continuous entry {entry!r} has unknown key(s) {sorted(unknown)}")
        column = _name(entry["column"], "continuous.column")
        names.append(column)
        if entry.get("transform") is None:
            continue
        bounds = entry.get("bounds")
        transforms[column] = ContinuousTransform(
            kind=str(entry["transform"]),
            min=_number(entry.get("min"), f"{column}.min"),
            max=_number(entry.get("max"), f"{column}.max"),
            bins=_int(entry["bins"], f"{column}.bins") if entry.get("bins") is not None else None,
            bounds=tuple(_number(b, f"{column}.bounds") for b in bounds) if bounds else None,  # type: ignore[misc]
        )
    return tuple(names), transforms


def _lists(value: Any, where: str) -> tuple[ListColumn, ...]:
    if not isinstance(value, list):
        raise SpecError(f"dataset spec '{where}' must be a list, got {value!r}")
    entries = []
    for entry in value:
        if isinstance(entry, str):
            entries.append(ListColumn(_name(entry, where)))
            continue
        if not isinstance(entry, Mapping) or "column" not in entry:
            raise SpecError(
                f"a '{where}' entry is a column name or {{column, of, times}}, got {entry!r}"
            )
        unknown = set(entry) - {"column", "of", "times"}
        if unknown:
            raise SpecError(f"'{where}' entry {dict(entry)!r} has unknown key(s) {sorted(unknown)}")
        entries.append(
            ListColumn(
                _name(entry["column"], f"{where}.column"),
                of=_name(entry["of"], f"{where}.of") if entry.get("of") is not None else None,
                times=(
                    _name(entry["times"], f"{where}.times")
                    if entry.get("times") is not None
                    else None
                ),
            )
        )
    return tuple(entries)


def _separator(value: Any) -> str:
    if not isinstance(value, str):
        raise SpecError(f"dataset spec 'list_separator' must be a string, got {value!r}")
    return value


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


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"dataset spec '{where}' must be an integer, got {value!r}")
    return value


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"dataset spec '{where}' must be a number, got {value!r}")
    return float(value)


def _str_mapping(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise SpecError(f"dataset spec '{where}' must be a mapping, got {value!r}")
    return {str(k): _name(v, f"{where}.{k}") for k, v in value.items()}
