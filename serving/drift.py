"""``rankflow drift``: the serving version's input counters against its training profiles."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from pathlib import Path

from rankflow.core.drift import (
    DEFAULT_THRESHOLD,
    DriftReference,
    DriftReport,
    compare,
    parse_counts,
)
from rankflow.core.errors import InputError, RankflowError
from serving.store import ModelStore

logger = logging.getLogger(__name__)

DEFAULT_METRICS_URL = "http://127.0.0.1:8002/metrics"


def metrics_url(store: str | Path, url: str | None) -> str:
    """``url``, else the metrics endpoint of the `rankflow serve` running on ``store``, else
    Triton's default."""
    if url:
        return url
    from serving.deploy import local_server

    server = local_server(store)
    if server is None:
        return DEFAULT_METRICS_URL
    return f"http://{server.metrics_url}/metrics"


class DriftError(RankflowError, RuntimeError):
    """The metrics could not be read."""


def scrape(url: str, *, timeout_s: float = 10.0) -> str:
    """The Prometheus text exposition at ``url`` (Triton's metrics port)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.read().decode()
    except (urllib.error.URLError, OSError) as err:
        raise DriftError(
            f"cannot read metrics from {url}: {err}; pass --metrics-url (Triton's metrics port, "
            "8002 by default)"
        ) from err


def drift(
    store: str | Path,
    *,
    model: str,
    metrics: str,
    version: int | None = None,
    since: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    min_rows: int = 500,
) -> DriftReport:
    """Compare the counters in ``metrics`` (a scrape) for ``model`` at ``version`` (default:
    the serving one) with that version's training profiles. The counters run from the moment
    Triton loaded the version; ``since`` (an earlier scrape) limits the judgement to the traffic
    after it."""
    if not threshold > 0:
        raise InputError(f"--threshold must be > 0, got {threshold}")
    models = ModelStore(store)
    if version is None:
        version = models.serving_version(model)
        if version is None:
            raise InputError(f"{model!r} serves no version in the model store {store}")
    reference = DriftReference.load(Path(store) / model / str(version))
    counts = parse_counts(metrics, model=model, version=str(version))
    if since is not None:
        earlier = parse_counts(since, model=model, version=str(version))
        counts = {
            name: {b: n - earlier.get(name, {}).get(b, 0.0) for b, n in buckets.items()}
            for name, buckets in counts.items()
        }
        if any(n < 0 for buckets in counts.values() for n in buckets.values()):
            raise InputError(
                "the --since scrape has higher counts than now: Triton restarted (or reloaded "
                "the version) since; judge without --since"
            )
    report = compare(
        reference, counts, model=model, version=str(version), threshold=threshold, min_rows=min_rows
    )
    logger.info("drift of %s v%s: %s", model, version, ", ".join(report.drifted) or "none")
    return report
