"""Compile the ranking pipeline to Kubeflow IR YAML."""

from __future__ import annotations

from pathlib import Path

from pipelines.profile import ClusterProfile

#: The committed, deterministic IR YAML; a test fails when it is stale.
COMPILED_PIPELINE = Path(__file__).resolve().parent / "compiled" / "rankflow_ranking.yaml"


def compile_pipeline(
    path: Path = COMPILED_PIPELINE, *, profile: ClusterProfile | None = None
) -> Path:
    """Write the IR YAML; ``profile`` defaults to the committed default cluster profile."""
    from kfp import compiler

    from pipelines.ranking import build_pipeline

    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(profile or ClusterProfile()), str(path))
    return path
