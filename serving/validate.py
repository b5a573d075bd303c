"""Infra-validation (like TFX's InfraValidator): load the exported repository on a fresh real
Triton, score held-out raw rows over gRPC and compare with the offline in-process scores."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rankflow.core.errors import ClientError, DataValidationError, TritonError
from rankflow.core.spec import DatasetSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InfraValidationConfig:
    """``rows`` held-out rows are compared; latency is timed over ``latency_requests`` requests
    of ``batch_size`` rows; any task differing by more than ``tolerance`` fails validation.

    The difference is judged relative to the offline score where that is past 1 (a regression
    in seconds): Triton scores in batches of ``batch_size``, the offline side in one, and
    float32 results depend on the batching by an ulp -- 3.05e-5 for a dwell time of 300 s,
    1.5e-7 for a probability. A probability's difference is judged as it is."""

    rows: int = 1024
    batch_size: int = 64
    latency_requests: int = 50
    tolerance: float = 1e-5
    ready_timeout_s: float = 180.0
    #: Per request; generous because a busy CI machine is not a serving outage.
    request_timeout_s: float = 60.0


@dataclass(frozen=True)
class InfraReport:
    blessed: bool
    rows: int
    skew_max_abs: dict[str, float] = field(default_factory=dict)
    #: max |online - offline| / max(1, |offline|): what ``tolerance`` judges.
    skew_max_rel: dict[str, float] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)


def infra_validate(
    spec: DatasetSpec,
    *,
    repository: Path,
    model_name: str,
    workflow_dir: Path,
    model_dir: Path,
    rows: pd.DataFrame,
    config: InfraValidationConfig,
    content_table: Path | None = None,
) -> InfraReport:
    """Blessed only when the server loads the model and every task's online scores match.
    With text inputs, ``content_table`` (the content step's) gives the offline side its vectors:
    looked up for known items, embedded from the row for the others and for queries."""
    from serving.client import ClientConfig, RankflowClient
    from serving.scorer import RankerScorer
    from serving.triton import TritonConfig, TritonServer

    rows = rows.head(config.rows).reset_index(drop=True)
    if rows.empty:
        raise DataValidationError("infra-validation needs at least one held-out row")
    server = TritonServer(
        TritonConfig(repository, models=(model_name,), ready_timeout_s=config.ready_timeout_s)
    )
    try:
        # Triton's python stub spends seconds importing TensorFlow and NVTabular and loading the
        # model: score the reference rows in this process meanwhile.
        server.start(wait=False)
        from rankflow.core.content import spec_content

        content = spec_content(spec, content_table)
        offline = RankerScorer(
            workflow_dir, model_dir, targets=spec.label_columns, content=content
        ).score(rows)
        server.wait_ready()
        client = RankflowClient(
            ClientConfig(
                url=server.grpc_url,
                model_name=model_name,
                timeout_s=config.request_timeout_s,
            )
        )
        parts = [
            client.score(rows.iloc[i : i + config.batch_size])
            for i in range(0, len(rows), config.batch_size)
        ]
        online = {t: np.concatenate([p[t] for p in parts]) for t in offline}
        batch = rows.head(config.batch_size)
        client.score(batch)  # warm-up outside the timed loop
        timings = []
        for _ in range(config.latency_requests):
            began = time.perf_counter()
            client.score(batch)
            timings.append((time.perf_counter() - began) * 1000.0)
        client.close()
    except (TritonError, ClientError) as err:
        logger.warning("infra-validation failed: %s", err)
        return InfraReport(blessed=False, rows=len(rows), reasons=[f"serving failed: {err}"])
    finally:
        server.stop()
    skew = {t: float(np.abs(online[t] - offline[t]).max()) for t in offline}
    relative = {
        t: float((np.abs(online[t] - offline[t]) / np.maximum(1.0, np.abs(offline[t]))).max())
        for t in offline
    }
    reasons = [
        f"{task}: online/offline max |diff| {skew[task]:.2e} (relative past 1: {value:.2e}) "
        f"> {config.tolerance:.0e}"
        for task, value in relative.items()
        if not value <= config.tolerance
    ]
    latency = {
        "p50": float(np.percentile(timings, 50)),
        "p99": float(np.percentile(timings, 99)),
    }
    logger.info("infra-validation: skew %s (relative %s), latency %s ms", skew, relative, latency)
    return InfraReport(not reasons, len(rows), skew, relative, latency, reasons)
