"""Submit the compiled pipeline to a Kubeflow Pipelines endpoint."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def submit(
    host: str,
    *,
    pipeline_yaml: Path,
    arguments: Mapping[str, Any],
    experiment: str = "rankflow",
    namespace: str | None = None,
) -> str:
    """Create a run of the compiled pipeline; returns the run id."""
    import kfp

    if not pipeline_yaml.is_file():
        raise FileNotFoundError(
            f"compiled pipeline not found: {pipeline_yaml} (run `make compile`)"
        )
    client = kfp.Client(host=host, namespace=namespace)
    run = client.create_run_from_pipeline_package(
        str(pipeline_yaml),
        arguments=dict(arguments),
        experiment_name=experiment,
        # None keeps each task's compiled caching option; True would override them all and
        # reuse the champion comparison, infra-validation and deploy from an earlier run.
        enable_caching=None,
    )
    logger.info("submitted run %s to %s", run.run_id, host)
    return run.run_id
