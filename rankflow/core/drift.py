"""Served-traffic drift: what the training inputs looked like, and how far served ones moved.

At export, :meth:`DriftReference.build` profiles every endpoint input on the training rows:

* a categorical input: its ``top`` most frequent values, "other" (seen in training, not top) and
  "unseen" (never in training: out of vocabulary), with sha-hashed training values kept as a
  sorted array to tell the two apart;
* a continuous input: ``bins`` equal-mass bins between training quantiles, plus "missing".

The endpoint counts each input's values per bucket (Prometheus counters on Triton's metrics port,
``rankflow_input_bucket_total``), and ``rankflow drift`` compares the served shares with the
training ones by the population stability index, PSI = Σ (served − train) · ln(served / train).
Rule of thumb (Siddiqi 2006, the credit-scoring origin of PSI): < 0.1 stable, 0.1–0.25 moderate,
> 0.25 a shift to act on.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rankflow.core.errors import InputError

#: File beside ``rankflow.json`` in a version directory.
REFERENCE_FILE = "drift.json"
VOCABULARY_FILE = "drift_vocabulary.npz"
METRIC = "rankflow_input_bucket_total"
OTHER, UNSEEN, MISSING = "other", "unseen", "missing"
#: A share below this is taken as this: an empty bucket would make PSI infinite.
SHARE_FLOOR = 1e-4
DEFAULT_THRESHOLD = 0.25
#: Values remembered per input as seen / unseen before the memory is dropped.
_SEEN_CACHE = 200_000


NULL = "<null>"


def as_text(values: np.ndarray) -> np.ndarray:
    """Values as the strings buckets are named by, the same for training and served arrays:
    pyarrow reads an integer column with nulls as float64 (123.0, NaN) while serving casts it
    to int64 (123), so integral floats print as integers and NaN / None as ``<null>``."""
    values = np.asarray(values).reshape(-1)
    if values.dtype.kind == "f":
        finite = np.isfinite(values)
        if finite.all() and np.all(values == np.round(values)):
            return values.astype(np.int64).astype(str)
        text = np.where(
            finite & (values == np.round(np.where(finite, values, 0))),
            np.where(finite, values, 0).astype(np.int64).astype(str),
            values.astype(str),
        )
        return np.where(finite, text, NULL)
    if values.dtype.kind == "O":
        return np.array([NULL if v is None else str(v) for v in values.tolist()], dtype=str)
    return values.astype(str)


def hash_values(text: np.ndarray) -> np.ndarray:
    """A deterministic 64-bit hash per string (pandas' siphash with its fixed key)."""
    import pandas as pd

    # As Python strings: a fixed-width numpy unicode array would hash its padding too.
    return pd.util.hash_array(np.asarray(text).astype(str).astype(object), categorize=True)


@dataclass(frozen=True)
class InputProfile:
    name: str
    kind: str  # "categorical" | "continuous"
    buckets: tuple[str, ...]
    shares: tuple[float, ...]
    #: Continuous only: the inner bin edges (len(buckets) - 2: the bins, then "missing").
    edges: tuple[float, ...] = ()
    mean: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "buckets": list(self.buckets),
            "shares": list(self.shares),
            "edges": list(self.edges),
            "mean": self.mean,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> InputProfile:
        return cls(
            name=raw["name"],
            kind=raw["kind"],
            buckets=tuple(raw["buckets"]),
            shares=tuple(float(s) for s in raw["shares"]),
            edges=tuple(float(e) for e in raw.get("edges", ())),
            mean=raw.get("mean"),
        )


@dataclass(frozen=True)
class DriftReference:
    """Training-time profiles of an endpoint's inputs, and each categorical's hashed vocabulary."""

    rows: int
    inputs: tuple[InputProfile, ...]
    vocabularies: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False)
    _seen: dict[str, dict[str, int]] = field(default_factory=dict, repr=False, compare=False)
    #: Per categorical input, its named buckets' slots (built once, not per request).
    _slots: dict[str, dict[str, int]] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(
        cls,
        columns: Mapping[str, np.ndarray],
        *,
        categorical: Iterable[str],
        continuous: Iterable[str],
        holdout: Mapping[str, np.ndarray] | None = None,
        top: int = 20,
        bins: int = 10,
    ) -> DriftReference:
        """Profiles of ``columns`` (the training rows). ``holdout`` (later rows, e.g. the
        validation split) sets each categorical's expected "unseen" share: ids keep arriving
        that training never saw, and served traffic should be judged against that rate, not
        against zero."""
        profiles, vocabularies = [], {}
        rows = len(next(iter(columns.values()))) if columns else 0
        for name in categorical:
            import pandas as pd

            counted = pd.Series(as_text(columns[name])).value_counts(sort=True)
            total = int(counted.sum())
            kept = counted.iloc[:top]
            vocabulary = np.unique(hash_values(counted.index.to_numpy()))
            unseen = 0.0
            if holdout is not None and len(holdout[name]):
                held = as_text(holdout[name])
                unseen = float(1 - _members(vocabulary, hash_values(held)).mean())
            shares = kept.to_numpy(dtype=np.float64) / total * (1 - unseen)
            profiles.append(
                InputProfile(
                    name=name,
                    kind="categorical",
                    buckets=(*map(str, kept.index), OTHER, UNSEEN),
                    shares=(*map(float, shares), float(1 - unseen - shares.sum()), unseen),
                )
            )
            vocabularies[name] = vocabulary
        for name in continuous:
            values = np.asarray(columns[name], dtype=np.float64).reshape(-1)
            finite = values[np.isfinite(values)]
            # An input never present in training has one bin and "missing" (np.quantile of
            # nothing raises).
            edges = (
                np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))
                if len(finite)
                else np.array([])
            )
            counts = np.bincount(
                np.searchsorted(edges, finite, side="right"), minlength=len(edges) + 1
            )
            profiles.append(
                InputProfile(
                    name=name,
                    kind="continuous",
                    buckets=(*(f"b{i}" for i in range(len(edges) + 1)), MISSING),
                    shares=(*(counts / len(values)).tolist(), float(1 - len(finite) / len(values))),
                    edges=tuple(float(e) for e in edges),
                    mean=float(finite.mean()) if len(finite) else None,
                )
            )
        return cls(rows=rows, inputs=tuple(profiles), vocabularies=vocabularies)

    def profile(self, name: str) -> InputProfile:
        for p in self.inputs:
            if p.name == name:
                return p
        raise KeyError(name)

    def bucket_counts(self, name: str, values: np.ndarray) -> dict[str, int]:
        """How many of ``values`` fall in each of ``name``'s buckets (only non-empty ones)."""
        profile = self.profile(name)
        values = np.asarray(values).reshape(-1)
        if profile.kind == "categorical":
            # A request repeats its values (a device, an hour): each distinct one is bucketed
            # once -- 2 ms of a 64-row request's ~12 for 16 inputs one value at a time.
            try:
                distinct, inverse = np.unique(values, return_inverse=True)
            except TypeError:  # None beside strings: no order, bucket value by value
                distinct, inverse = values, np.arange(len(values))
            text = as_text(distinct)
            index = self._slots.get(name)
            if index is None:
                index = self._slots[name] = {b: i for i, b in enumerate(profile.buckets[:-2])}
            other, unseen = len(index), len(index) + 1
            # Served values repeat: each is hashed once, then remembered (bounded).
            known = self._seen.setdefault(name, {})
            slots = np.empty(len(text), dtype=np.int64)
            fresh = []
            for i, v in enumerate(text.tolist()):
                slot = index.get(v, known.get(v, -1))
                slots[i] = slot
                if slot < 0:
                    fresh.append(i)
            if fresh:
                new = text[fresh]
                seen = _members(self.vocabularies[name], hash_values(new))
                slots[fresh] = np.where(seen, other, unseen)
                if len(known) > _SEEN_CACHE:
                    known.clear()
                known.update(zip(new.tolist(), slots[fresh].tolist(), strict=True))
            slots = slots[inverse.reshape(-1)]
        else:
            numbers = values.astype(np.float64)
            finite = np.isfinite(numbers)
            slots = np.where(
                finite,
                np.searchsorted(np.asarray(profile.edges), np.where(finite, numbers, 0), "right"),
                len(profile.buckets) - 1,
            )
        counts = np.bincount(slots, minlength=len(profile.buckets))
        return {profile.buckets[i]: int(c) for i, c in enumerate(counts) if c}

    # -- files ------------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        payload = {"rows": self.rows, "inputs": [p.to_dict() for p in self.inputs]}
        (directory / REFERENCE_FILE).write_text(json.dumps(payload, indent=1, sort_keys=True))
        np.savez(directory / VOCABULARY_FILE, **dict(self.vocabularies))

    @classmethod
    def load(cls, directory: Path) -> DriftReference:
        path = directory / REFERENCE_FILE
        if not path.is_file():
            raise InputError(
                f"{directory} has no {REFERENCE_FILE}: it was exported before drift profiles "
                "(or by the gpu flavour); deploy a version exported by this release"
            )
        payload = json.loads(path.read_text())
        with np.load(directory / VOCABULARY_FILE) as npz:
            vocabularies = {k: npz[k] for k in npz.files}
        return cls(
            rows=int(payload["rows"]),
            inputs=tuple(InputProfile.from_dict(p) for p in payload["inputs"]),
            vocabularies=vocabularies,
        )


def _members(vocabulary: np.ndarray, hashed: np.ndarray) -> np.ndarray:
    """Which of ``hashed`` are in the sorted ``vocabulary``."""
    if not len(vocabulary):
        return np.zeros(len(hashed), dtype=bool)
    at = np.minimum(np.searchsorted(vocabulary, hashed), len(vocabulary) - 1)
    return vocabulary[at] == hashed


def psi(expected: Iterable[float], observed: Iterable[float]) -> float:
    """Population stability index of observed shares against expected ones (each floored)."""
    e = np.maximum(np.asarray(list(expected), dtype=np.float64), SHARE_FLOOR)
    o = np.maximum(np.asarray(list(observed), dtype=np.float64), SHARE_FLOOR)
    e, o = e / e.sum(), o / o.sum()
    return float(np.sum((o - e) * np.log(o / e)))


# -- the served side ------------------------------------------------------------------------------
_SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>(?:[^"}]|"(?:[^"\\]|\\.)*")*)\}\s+'
    r"(?P<value>\S+)"
)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
# The exposition format escapes only these three in label values.
_ESCAPE = re.compile(r"\\(.)")


def _unescape(value: str) -> str:
    return _ESCAPE.sub(lambda m: "\n" if m[1] == "n" else m[1], value)


def parse_counts(text: str, *, model: str, version: str) -> dict[str, dict[str, float]]:
    """``input -> bucket -> count`` of one model version from a Prometheus text exposition."""
    counts: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group("name") != METRIC:
            continue
        labels = {k: _unescape(v) for k, v in _LABEL.findall(match["labels"])}
        if labels.get("model") != model or labels.get("version") != version:
            continue
        by_bucket = counts.setdefault(labels["input"], {})
        by_bucket[labels["bucket"]] = by_bucket.get(labels["bucket"], 0.0) + float(match["value"])
    return counts


@dataclass(frozen=True)
class InputDrift:
    name: str
    kind: str
    psi: float
    rows: int
    #: Categorical: the served share of values never seen in training.
    unseen_share: float | None
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class DriftReport:
    model: str
    version: str
    threshold: float
    rows: int
    inputs: tuple[InputDrift, ...]

    @property
    def drifted(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs if i.drifted)

    def to_json(self) -> str:
        return json.dumps(
            {
                "model": self.model,
                "version": self.version,
                "threshold": self.threshold,
                "rows": self.rows,
                "drifted": list(self.drifted),
                "inputs": [i.to_dict() for i in self.inputs],
            },
            sort_keys=True,
        )

    def table(self) -> str:
        lines = [
            f"{self.model} v{self.version}: {self.rows:,} served rows, PSI threshold "
            f"{self.threshold:g}",
            f"{'input':<24} {'kind':<12} {'PSI':>8} {'unseen':>8}  drifted",
        ]
        for i in sorted(self.inputs, key=lambda i: -i.psi):
            unseen = "" if i.unseen_share is None else f"{i.unseen_share:.1%}"
            lines.append(
                f"{i.name:<24} {i.kind:<12} {i.psi:>8.4f} {unseen:>8}  {'yes' if i.drifted else ''}"
            )
        return "\n".join(lines)


def compare(
    reference: DriftReference,
    counts: Mapping[str, Mapping[str, float]],
    *,
    model: str,
    version: str,
    threshold: float = DEFAULT_THRESHOLD,
    min_rows: int = 500,
) -> DriftReport:
    """PSI of every profiled input's served shares; refuses to judge fewer than ``min_rows``."""
    results, rows = [], 0
    for profile in reference.inputs:
        served = counts.get(profile.name, {})
        n = sum(served.values())
        rows = max(rows, int(n))
        if n < min_rows:
            raise InputError(
                f"{model} v{version} has served {int(n):,} rows of input '{profile.name}' (at "
                f"least {min_rows:,} needed to judge drift): wait for traffic, or lower --min-rows"
            )
        observed = [served.get(b, 0.0) / n for b in profile.buckets]
        value = psi(profile.shares, observed)
        unseen = observed[-1] if profile.kind == "categorical" else None
        results.append(
            InputDrift(
                name=profile.name,
                kind=profile.kind,
                psi=round(value, 6),
                rows=int(n),
                unseen_share=unseen,
                drifted=value > threshold or math.isnan(value),
            )
        )
    return DriftReport(
        model=model, version=version, threshold=threshold, rows=rows, inputs=tuple(results)
    )
