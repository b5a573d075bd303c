"""Content: the language model in the content step and in the endpoint, against their floors.

A synthetic log with content (user histories, ad keywords, ad titles, search queries, cold ads)
goes through the project's own steps: prepare, ``embed_content``, the feature step, the ranker
(one epoch), ``export_cpu_repository`` with the content table, and the real Triton.

* ``embed``: on a catalogue of its own (``ads`` ads), seconds of ``embed_content`` (read the
  train split, each item's latest text, tokenise, forward, pool, project, seal; no cache)
  against the bare model: ONNX Runtime's batched forward pass alone over the same distinct
  texts, pre-tokenised in the same batches (the floor). Both are timed ``repeats`` times; the
  best of each is compared. Texts/s of both.
* ``endpoint``: at batch 64, Triton (gRPC, ``RankflowClient``) against the same scoring in
  process (``RankerScorer`` with the same content features: table lookup, cold items and
  queries embedded), interleaved in a seeded order; request ``i`` sends the same test rows to
  both, a new sample each request, so each side's text cache sees the same traffic. Then
  batch 1 with one query text per request, twice: queries from the log (its head queries
  repeat, as real ones do, and are served from the cache) and queries never seen before (every
  request embeds its text: the worst case). p50/p99 over the timed requests after warm-up;
  every Triton response is checked against in-process scores. Where Triton's perf_analyzer
  runs, the batch-64 rows and the unseen queries go through it too (a C++ client, on a fresh
  server), and it judges the targets, as in the serving benchmark.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Any

import numpy as np

from bench.common import Workspace, latency_stats, progress

logger = logging.getLogger(__name__)

#: The batch of the endpoint's ratio target.
CONTENT_BATCH = 64
#: Largest |Triton - in-process| score accepted as "the same prediction" (relative past 1).
TOLERANCE = 1e-5


def _skew(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> float:
    return max(
        float(np.max(np.abs(got[t] - expected[t]) / np.maximum(1.0, np.abs(expected[t]))))
        for t in expected
    )


def _bare_forward(encoder: Any, texts: list[str], batch: int) -> float:
    """Seconds of ONNX Runtime's forward passes alone over ``texts``, tokenised beforehand in
    the batches :meth:`TextEncoder.embed` makes (length-sorted, padded per batch)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    feeds = []
    for start in range(0, len(order), batch):
        encodings = encoder.tokenizer.encode_batch([texts[i] for i in order[start : start + batch]])
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds.append(
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )
    start = time.perf_counter()
    for feed in feeds:
        encoder.session.run(None, feed)
    return time.perf_counter() - start


def bench_embed(workspace: Workspace, *, ads: int, repeats: int) -> dict[str, Any]:
    """A catalogue of ``ads`` ads (each shown ~5 times in the log): a step's fixed costs (read,
    session, projection, sealing) are judged against a catalogue's worth of forward passes,
    not against the few hundred ads of a small log."""
    from components.content.embed import ContentConfig, embed_content, latest_texts
    from components.data.prepare import prepare_data
    from components.data.split import SplitConfig
    from components.data.synthetic import SyntheticConfig
    from rankflow.core.text import BATCH, EncoderFiles, TextEncoder

    root = workspace.root / f"catalogue-{ads}"
    rows = 5 * ads
    outputs = {name: root / name for name in ("train", "valid", "test")}
    spec = prepare_data(
        "synthetic",
        spec_path=None,
        synthetic=SyntheticConfig(
            rows=rows, seed=workspace.seed, n_ads=ads, chunk_rows=min(rows, 250_000), content=True
        ),
        split=SplitConfig(),
        outputs=outputs,
        spec_out=root / "spec.yaml",
    ).spec
    prepared = {"train": outputs["train"]}
    _, per_column = latest_texts(spec, prepared["train"])
    texts = sorted({t for column in per_column.values() for t in column if t and t.strip()})
    encoder = TextEncoder(EncoderFiles.installed())
    encoder.embed(texts[:BATCH])  # ONNX Runtime's first run allocates; neither side pays it
    step, bare = [], []
    for attempt in progress(range(repeats), desc="embed"):
        out = workspace.root / f"content-bench-{attempt}"
        start = time.perf_counter()
        _, stats = embed_content(spec, prepared["train"], out, config=ContentConfig())
        step.append(time.perf_counter() - start)
        bare.append(_bare_forward(encoder, texts, BATCH))
    best_step, best_bare = min(step), min(bare)
    logger.info(
        "embed-content: %d texts, step %.2f s, bare forward %.2f s",
        len(texts),
        best_step,
        best_bare,
    )
    return {
        "rows": rows,
        "ads": ads,
        "items": stats.items,
        "texts": len(texts),
        "embedded": stats.embedded,
        "repeats": repeats,
        "step_s": step,
        "bare_forward_s": bare,
        "texts_per_s": {"step": stats.embedded / best_step, "bare_forward": len(texts) / best_bare},
        "x_bare": best_step / best_bare,
    }


def _served(workspace: Workspace, rows: int) -> dict[str, Any]:
    """The content endpoint's artifacts, built with the project's own steps."""
    from components.content.embed import ContentConfig, embed_content
    from components.features.workflow import FeatureConfig, run_feature_engineering
    from components.training.ranker import RankerConfig, train_ranker
    from rankflow.core.spec import DatasetSpec

    prepared = workspace.prepared(rows, content=True)
    spec = DatasetSpec.load(prepared["spec"])
    root = workspace.root / f"content-served-{rows}"
    embed_content(spec, prepared["train"], root / "content", config=ContentConfig())
    splits = {s: prepared[s] for s in ("train", "valid", "test")}
    features = {s: root / "features" / s for s in splits}
    run_feature_engineering(
        spec,
        splits,
        workflow_dir=root / "workflow",
        outputs=features,
        config=FeatureConfig(),
        content=root / "content",
    )
    with contextlib.redirect_stdout(sys.stderr):
        train_ranker(
            spec,
            features["train"],
            features["valid"],
            model_dir=root / "model",
            config=RankerConfig(epochs=1, batch_size=1024, seed=workspace.seed),
        )
    return {"spec": spec, "root": root, "test": prepared["test"]}


def bench_endpoint(
    workspace: Workspace, *, rows: int, batch: int, requests: int, warmup: int
) -> dict[str, Any]:
    from rankflow.core.content import content_fields, open_content
    from serving.client import ClientConfig, RankflowClient, read_rows
    from serving.export import MODEL_NAME, ExportConfig, export_cpu_repository
    from serving.scorer import RankerScorer
    from serving.triton import TritonConfig, TritonServer

    built = _served(workspace, rows)
    spec, root = built["spec"], built["root"]
    repository = export_cpu_repository(
        spec,
        workflow_dir=root / "workflow",
        model_dir=root / "model",
        repository=root / "repository",
        config=ExportConfig(content_table=root / "content"),
    )
    scorer = RankerScorer(
        root / "workflow",
        root / "model",
        targets=spec.label_columns,
        content=open_content(root / "content", content_fields(spec)),
    )
    test = read_rows(built["test"])
    rng = np.random.default_rng(workspace.seed)
    total = warmup + requests
    frames = [test.iloc[rng.choice(len(test), size=batch)] for _ in range(total)]
    searched = test[test[spec.context_text[0]].astype(str).str.strip() != ""]
    log_queries = [searched.iloc[[i]] for i in rng.choice(len(searched), size=total)]
    # A query no request sent before: the row's own query and a word of its own.
    fresh = unseen_pool(searched, spec, rng, size=total)
    unseen = [fresh.iloc[[i]] for i in range(total)]
    results: dict[str, Any] = {"rows": rows, "requests": requests, "warmup": warmup}
    config = TritonConfig(repository, models=(MODEL_NAME,), ready_timeout_s=600)
    with TritonServer(config) as server:
        client = RankflowClient(ClientConfig(url=server.grpc_url, timeout_s=120))
        try:
            cells = {
                f"batch {batch}": frames,
                "batch 1, log query": log_queries,
                "batch 1, unseen query": unseen,
            }
            for name, sequence in progress(list(cells.items()), desc="content endpoint"):
                times: dict[str, list[float]] = {"triton": [], "in_process": []}
                skew = 0.0
                for i, frame in enumerate(sequence):
                    scores = {}
                    for side in rng.permutation(list(times)):
                        start = time.perf_counter()
                        scores[side] = (
                            client.score(frame) if side == "triton" else scorer.score(frame)
                        )
                        if i >= warmup:
                            times[side].append(time.perf_counter() - start)
                    skew = max(skew, _skew(scores["triton"], scores["in_process"]))
                cell = {side: latency_stats(seconds) for side, seconds in times.items()}
                cell["x_in_process_p50"] = cell["triton"]["p50_ms"] / cell["in_process"]["p50_ms"]
                cell["max_skew"] = skew
                cell["correct"] = skew <= TOLERANCE
                results[name] = cell
                logger.info(
                    "content endpoint %s: Triton p50 %.2f ms p99 %.2f ms, in-process p50 %.2f ms",
                    name,
                    cell["triton"]["p50_ms"],
                    cell["triton"]["p99_ms"],
                    cell["in_process"]["p50_ms"],
                )
        finally:
            client.close()
    results["batch"] = batch
    results["perf_analyzer"] = _perf_analyzer(
        workspace, spec, scorer, repository, frames, unseen_pool(searched, spec, rng), results
    )
    return results


def unseen_pool(searched: Any, spec: Any, rng: np.random.Generator, size: int = 4000) -> Any:
    """``size`` search rows, each with a query no other row has."""
    column = spec.context_text[0]
    rows = searched.iloc[rng.choice(len(searched), size=size)].reset_index(drop=True)
    return rows.assign(**{column: [f"{q} deal{i}" for i, q in enumerate(rows[column])]})


def wire_columns(frame: Any, scorer: Any, width: int) -> dict[str, np.ndarray]:
    """``frame``'s inputs as the endpoint takes them: a list padded ``[rows, width]`` beside
    its ``<name>__length``, as the client sends it."""
    from rankflow.core.contract import LENGTH_SUFFIX
    from serving.client import pad_lists

    columns: dict[str, np.ndarray] = {}
    for name, dtype in scorer.input_dtypes.items():
        if name in scorer.lists:
            padded, lengths = pad_lists(name, frame[name].to_numpy(), width, dtype)
            columns[name], columns[name + LENGTH_SUFFIX] = padded, lengths.reshape(-1)
        else:
            values = frame[name].to_numpy()
            columns[name] = values.astype(str) if dtype.kind == "O" else values
    return columns


def _perf_analyzer(workspace, spec, scorer, repository, frames, unseen, results) -> dict:
    """Triton's C++ client on the batch-64 rows and on the unseen queries (one a request):
    it adds the least of its own to the latency, as in the serving benchmark."""
    import pandas as pd

    from bench import perf_analyzer
    from serving.export import MODEL_NAME
    from serving.triton import TritonConfig, TritonServer

    try:
        perf_analyzer.binary()
    except perf_analyzer.PerfAnalyzerUnavailable as err:
        logger.warning("perf_analyzer not used: %s", err)
        return {"error": str(err)}
    width = spec.lists_max_length
    batch = results["batch"]
    cells = {
        # 50 batches of rows, cycled: their queries are cached by then, as in the python-client
        # cell whose in-process p50 is the floor.
        f"batch {batch}": (pd.concat(frames[:50], ignore_index=True), batch),
        "batch 1, unseen query": (unseen, 1),
    }
    # perf_analyzer cycles the batch rows, whose texts it then finds cached: the floor is the
    # scorer's p50 on the same batches, once they are cached in process too.
    for frame in frames[:50]:
        scorer.score(frame)
    seconds = []
    for frame in frames[:50]:
        start = time.perf_counter()
        scorer.score(frame)
        seconds.append(time.perf_counter() - start)
    floors = {f"batch {batch}": latency_stats(seconds)["p50_ms"]}
    out: dict[str, Any] = {}
    # A fresh server: its text cache has seen none of the unseen queries.
    config = TritonConfig(repository, models=(MODEL_NAME,), ready_timeout_s=600)
    with TritonServer(config) as server:
        for name, (rows, size) in cells.items():
            data = perf_analyzer.write_input_data(
                wire_columns(rows, scorer, width), workspace.root / f"content-{size}.json"
            )
            measured = perf_analyzer.measure(
                grpc_url=server.grpc_url,
                model=MODEL_NAME,
                input_data=data,
                batch=size,
                concurrency=1,
                requests=results["requests"],
                scratch=workspace.root,
            )
            floor = floors.get(name, results[name]["in_process"]["p50_ms"])
            measured["in_process_p50_ms"] = floor
            measured["x_in_process_p50"] = measured["p50_ms"] / floor
            out[name] = measured
            logger.info(
                "content endpoint %s (perf_analyzer): p50 %.2f ms p99 %.2f ms",
                name,
                measured["p50_ms"],
                measured["p99_ms"],
            )
    return out


def bench_content(
    workspace: Workspace,
    *,
    rows: int,
    ads: int,
    embed_repeats: int,
    batch: int,
    requests: int,
    warmup: int,
) -> dict[str, Any]:
    return {
        "embed": bench_embed(workspace, ads=ads, repeats=embed_repeats),
        "endpoint": bench_endpoint(
            workspace, rows=rows, batch=batch, requests=requests, warmup=warmup
        ),
    }
