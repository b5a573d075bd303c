"""Score raw rows with a store version as it serves: its own exported transform and model.

What a champion comparison needs: the serving version judges the candidate's test rows. A
registry per layout (``rankflow.json``'s ``layout``): the python layout holds the fitted
workflow and the ranker, scored in this process with the same :class:`RankerScorer` its
``model.py`` runs in Triton; any other layout (the ensemble: a transform model, a SavedModel
step) is scored by a private Triton started on the store, which loads the pinned version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd

from rankflow.core.errors import ClientError, StoreError, TritonError
from serving.store import ModelStore

logger = logging.getLogger(__name__)

#: Rows per scoring call in this process (bounded memory on a long test split).
CHUNK_ROWS = 65_536

Scores = dict[str, np.ndarray]


def _in_process(store: ModelStore, endpoint: str, version: int, rows: pd.DataFrame) -> Scores:
    from serving.scorer import version_scorer

    manifest = store.manifest(endpoint, version)
    directory = store.root / endpoint / str(version)
    drop = manifest.drop if manifest.drop is not None else manifest.contract.tasks
    scorer = version_scorer(directory, manifest.extra, targets=drop)
    parts = [scorer.score(rows.iloc[i : i + CHUNK_ROWS]) for i in range(0, len(rows), CHUNK_ROWS)]
    return {t: np.concatenate([p[t] for p in parts]) for t in manifest.contract.tasks}


def _on_triton(store: ModelStore, endpoint: str, version: int, rows: pd.DataFrame) -> Scores:
    from serving.client import ClientConfig, RankflowClient
    from serving.triton import TritonConfig, TritonServer

    if store.serving_version(endpoint) != version:
        # The store's configs pin the serving version: a Triton on it loads that one only.
        raise StoreError(
            f"version {version} of {endpoint!r} does not serve: only the serving version is "
            "scored on Triton"
        )
    rollout = store.rollout(endpoint)
    assert rollout is not None  # it serves
    batch = store.contract(endpoint, version).max_batch_size
    try:
        with TritonServer(TritonConfig(store.root, models=rollout.models)) as server:
            client = RankflowClient(
                ClientConfig(url=server.grpc_url, model_name=endpoint, model_version=str(version))
            )
            try:
                parts = [client.score(rows.iloc[i : i + batch]) for i in range(0, len(rows), batch)]
            finally:
                client.close()
    except (TritonError, ClientError) as err:
        raise StoreError(f"version {version} of {endpoint!r} could not score: {err}") from err
    return {t: np.concatenate([p[t] for p in parts]) for t in parts[0]}


#: Layout -> how to score a version of it; a layout not named is scored on Triton.
SCORERS: dict[str, Callable[[ModelStore, str, int, pd.DataFrame], Scores]] = {
    "python": _in_process,
}


def score_version(
    store: ModelStore, endpoint: str, version: int, rows: pd.DataFrame, *, on_triton: bool = False
) -> Scores:
    """Per-task scores of ``rows`` by ``endpoint`` at ``version`` (checked against its sha256
    manifest first); ``on_triton`` scores any layout on a private Triton."""
    store.verify(endpoint, version)
    layout = store.manifest(endpoint, version).layout
    scorer = _on_triton if on_triton else SCORERS.get(layout, _on_triton)
    logger.info(
        "scoring %d rows with %s version %d (%s layout)", len(rows), endpoint, version, layout
    )
    return scorer(store, endpoint, version, rows)
