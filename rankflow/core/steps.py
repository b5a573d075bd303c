"""A failing pipeline step leaves a small structured record of its error for whoever ran it.

kfp.local (and a cluster) report only that a task failed; the reason is somewhere in its log. A
component body runs inside :func:`reporting`, which writes ``rankflow-error.json`` (step, error
class, message, exit code) into the step's output directory and logs the same line, then lets the
error fail the task. ``rankflow run`` reads the record back (:func:`read_failures`) to print the
step's own message and exit 2 on bad input, 1 on anything else.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rankflow.core.errors import RankflowError
from rankflow.core.io import atomic_write_text

logger = logging.getLogger(__name__)

RECORD = "rankflow-error.json"


@dataclass(frozen=True)
class StepFailure:
    step: str
    error: str  # the exception's class name
    message: str
    exit_code: int  # 2: bad input, 1: any other failure

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def failure_of(step: str, err: BaseException) -> StepFailure:
    exit_code = err.exit_code if isinstance(err, RankflowError) else 1
    message = str(err) or type(err).__name__
    return StepFailure(step, type(err).__name__, message, exit_code)


@contextmanager
def reporting(step: str, anchor: Any) -> Iterator[None]:
    """Run a step's body; on an error, record it beside ``anchor`` (one of the step's output
    artifacts: its directory is the step's own) and re-raise it."""
    try:
        yield
    except Exception as err:
        failure = failure_of(step, err)
        logger.error("%s failed: %s: %s", step, failure.error, failure.message)
        try:
            atomic_write_text(Path(anchor.path).parent / RECORD, failure.to_json())
        except OSError:  # the record is a courtesy; the step's own error is what matters
            logger.exception("could not record the failure of %s", step)
        raise


def read_failures(root: Path, *, since: float = 0.0) -> list[StepFailure]:
    """Every failure recorded under ``root`` (a pipeline root) at or after ``since`` (a
    ``time.time()``), oldest first."""
    stamped = [(path.stat().st_mtime, path) for path in Path(root).rglob(RECORD)]
    failures = []
    for _, path in sorted(t for t in stamped if t[0] >= since):
        try:
            failures.append(StepFailure(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            logger.warning("unreadable step failure record %s", path)
    return failures
