"""Compile the ranking pipeline to Kubeflow IR YAML."""

from __future__ import annotations

from pathlib import Path

#: The committed, deterministic IR YAML; a test fails when it is stale.
COMPILED_PIPELINE = Path(__file__).resolve().parent / "compiled" / "rankflow_ranking.yaml"


def compile_pipeline(path: Path = COMPILED_PIPELINE) -> Path:
    from kfp import compiler

    from pipelines.ranking import ranking_pipeline

    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(ranking_pipeline, str(path))
    return path
