"""Triton python-backend model: raw feature columns in, one score per task out.

Copied into the model repository as ``<model>/<version>/model.py``; the version directory also
holds the fitted workflow, the SavedModel and ``rankflow.json``. Runs inside Triton's python stub,
which provides ``triton_python_backend_utils``.
"""

import contextlib
import json
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from rankflow.core.errors import ScoringError
from serving.scorer import version_scorer

#: A categorical value longer than this is not a category (a pasted document, an attack).
MAX_VALUE_BYTES = 4096
#: The same for a text input (an ad's copy, a query): the model reads its first 256 tokens, a
#: few KB; past this a request is refused rather than tokenised.
MAX_TEXT_BYTES = 65_536
#: Seconds between pushes of the drift counts to Triton's metrics (``drift_flush_s`` in
#: ``rankflow.json`` overrides it).
DRIFT_FLUSH_S = 1.0


def _column(
    name: str, values: np.ndarray, *, keep_shape: bool = False, text: bool = False
) -> np.ndarray:
    shape = values.shape
    values = values.reshape(-1)
    if values.dtype.kind not in ("O", "S"):
        return values.reshape(shape) if keep_shape else values
    # Triton hands BYTES tensors over as bytes objects.
    sizes = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    limit = MAX_TEXT_BYTES if text else MAX_VALUE_BYTES
    if len(sizes) and sizes.max() > limit:
        row = int(sizes.argmax())
        raise ScoringError(
            f"input '{name}' row {row}: a {sizes[row]:,}-byte value (at most "
            f"{limit:,} bytes per {'text' if text else 'categorical'} value)"
        )
    try:
        decoded = np.array(
            [v.decode() if isinstance(v, bytes) else v for v in values], dtype=object
        )
        return decoded.reshape(shape) if keep_shape else decoded
    except UnicodeDecodeError as err:
        row = next(i for i, v in enumerate(values) if isinstance(v, bytes) and not _utf8(v))
        raise ScoringError(f"input '{name}' row {row} is not UTF-8 text: {err}") from err


def _utf8(value: bytes) -> bool:
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


class _DriftCounters:
    """Per input and bucket, how many served values fell there (``rankflow drift`` reads them
    from Triton's metrics port). Counting never fails a request: an error stops the counting."""

    def __init__(self, reference, model: str, version: str, flush_s: float):
        from rankflow.core.drift import METRIC

        self.reference = reference
        self.labels = {"model": model, "version": version}
        self.family = pb_utils.MetricFamily(
            name=METRIC,
            description="served input values per training-profile bucket (rankflow drift)",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.metrics: dict = {}
        # Counts go to Triton at most once a second: each increment is a message to the server
        # process, and per-request increments cost more than the counting itself.
        self.pending: dict = {}
        self.flushed = time.monotonic()
        self.flush_s = flush_s

    @classmethod
    def start(cls, version_dir: Path, model: str, version: str, flush_s: float):
        try:
            from rankflow.core.drift import REFERENCE_FILE, DriftReference
        except ImportError as err:  # an image built before drift profiles
            pb_utils.Logger.log_error(f"rankflow: drift counting off: {err!r}")
            return None

        if not (version_dir / REFERENCE_FILE).is_file():
            return None  # exported before drift profiles
        if getattr(pb_utils, "MetricFamily", None) is None:  # Triton before 23.05
            pb_utils.Logger.log_warn("rankflow: this Triton has no custom metrics: no drift counts")
            return None
        try:
            return cls(DriftReference.load(version_dir), model, version, flush_s)
        except Exception as err:  # monitoring must never keep a version from serving
            pb_utils.Logger.log_error(f"rankflow: drift counting off: {err!r}")
            return None

    def close(self) -> None:
        with contextlib.suppress(Exception):  # shutting down: the counts die with the server
            self.flush()
        # Triton wants every Metric gone before its MetricFamily.
        self.metrics.clear()
        self.family = None

    def count(self, columns: dict) -> None:
        if self.reference is None:
            return
        try:
            for profile in self.reference.inputs:
                counts = self.reference.bucket_counts(profile.name, columns[profile.name])
                for bucket, n in counts.items():
                    key = (profile.name, bucket)
                    self.pending[key] = self.pending.get(key, 0) + n
            if time.monotonic() - self.flushed >= self.flush_s:
                self.flush()
        except Exception as err:  # a bug here must not cost a request its scores
            self.reference = None
            pb_utils.Logger.log_error(f"rankflow: drift counting stopped: {err!r}")

    def flush(self) -> None:
        for key, n in self.pending.items():
            if key not in self.metrics:
                name, bucket = key
                self.metrics[key] = self.family.Metric(
                    labels={**self.labels, "input": name, "bucket": bucket}
                )
            self.metrics[key].increment(n)
        self.pending = {}
        self.flushed = time.monotonic()


class TritonPythonModel:
    def initialize(self, args):
        from rankflow.core import integrity

        version_dir = Path(args["model_repository"]) / args["model_version"]
        # Refuse a version whose files are not the ones exported (the workflow is a pickle).
        integrity.verify(version_dir)
        meta = json.loads((version_dir / "rankflow.json").read_text())
        self.tasks = meta["tasks"]
        # "drop": the raw label columns (0.2+); before, the task names were the target columns.
        self.scorer = version_scorer(version_dir, meta, targets=meta.get("drop", self.tasks))
        self.drift = _DriftCounters.start(
            version_dir,
            args["model_name"],
            args["model_version"],
            flush_s=float(meta.get("drift_flush_s", DRIFT_FLUSH_S)),
        )

    def finalize(self):
        if self.drift is not None:
            self.drift.close()

    def _columns(self, request) -> dict:
        from rankflow.core.contract import LENGTH_SUFFIX

        lists = getattr(self.scorer, "lists", ())
        content = getattr(self.scorer, "content", None)
        texts = set(content.columns) if content is not None else set()
        names = [*self.scorer.input_dtypes, *(name + LENGTH_SUFFIX for name in lists)]
        columns = {}
        for name in names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ScoringError(f"missing input '{name}'")
            # A list arrives [rows, width] (padded) beside its [rows, 1] lengths.
            columns[name] = _column(
                name, tensor.as_numpy(), keep_shape=name in lists, text=name in texts
            )
        return self.scorer.prepare(columns)

    def _response(self, scores: dict, start: int, stop: int):
        return pb_utils.InferenceResponse(
            [pb_utils.Tensor(t, scores[t][start:stop].reshape(-1, 1)) for t in self.tasks]
        )

    @staticmethod
    def _error(err: Exception):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"rankflow: {err}"))

    def execute(self, requests):
        # One bad request must not take the model (or the requests batched with it) down:
        # each is checked on its own, the good ones are scored together in one model call.
        responses = [None] * len(requests)
        good = []
        for i, request in enumerate(requests):
            try:
                good.append((i, self._columns(request)))
            except Exception as err:
                responses[i] = self._error(err)
        if self.drift is not None:
            for _, columns in good:
                self.drift.count(columns)
        if len(good) > 1 and self.scorer.rows_independent:
            try:
                merged = self.scorer.concat([columns for _, columns in good])
                scores = self.scorer.score_prepared(merged)
                start = 0
                for i, columns in good:
                    stop = start + self.scorer.rows(columns)
                    responses[i] = self._response(scores, start, stop)
                    start = stop
                good = []
            except Exception:  # score them one by one below, so the error lands where it belongs
                pass
        for i, columns in good:
            try:
                scores = self.scorer.score_prepared(columns)
                responses[i] = self._response(scores, 0, len(scores[self.tasks[0]]))
            except Exception as err:
                responses[i] = self._error(err)
        return responses
