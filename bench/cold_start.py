"""Cold start with and without content, on one split of the synthetic content log.

    python -m bench.cold_start [--rows 400000] [--variants text,bow,lists,none] [--out DIR]

Every variant runs the default feature step and ranker on the same split: ``text`` (lists and
the language model's vectors of the ad title and the query), ``bow`` (the same with the hashed
TF-IDF baseline), ``lists`` (lists, no text) and ``none`` (neither). Printed per variant: the
click task's AUC on all test rows and on the cold rows (items train never saw, with their 95%
bootstrap interval), and the seconds each of the feature step and training took; then, for the
language model against each other variant, the paired bootstrap interval of the cold-start AUC
difference (both models scored on the same resampled cold rows). The
evaluation's vectors come from the feature step, which embeds a cold item's text as the
endpoint does (``tests/serving/test_text_serving.py`` holds the two equal within 1e-5).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("text", "bow", "lists", "none")


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import pyarrow.parquet as pq

    from components.content.embed import ContentConfig, embed_content
    from components.data.prepare import prepare_data
    from components.data.split import SplitConfig
    from components.data.synthetic import SyntheticConfig
    from components.evaluation.evaluate import Gates, cold_rows, evaluate_ranker
    from components.evaluation.metrics import paired_bootstrap
    from components.features.workflow import FeatureConfig, run_feature_engineering
    from components.training.ranker import RankerConfig, train_ranker
    from rankflow.core.artifacts import load_ranker, predict

    parser = argparse.ArgumentParser(prog="python -m bench.cold_start")
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench-cold-start")
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {unknown}: choose from {list(VARIANTS)}")

    root = args.out / f"rows{args.rows}-seed{args.seed}"
    splits = {s: root / s for s in ("train", "valid", "test")}
    spec = prepare_data(
        "synthetic",
        spec_path=None,
        synthetic=SyntheticConfig(rows=args.rows, seed=args.seed, content=True),
        split=SplitConfig(),
        outputs=splits,
        spec_out=root / "spec.yaml",
    ).spec
    tables = {"text": root / "content-minilm", "bow": root / "content-tfidf"}
    for name, encoder in (("text", "minilm"), ("bow", "tfidf")):
        if name in names:
            embed_content(
                spec,
                splits["train"],
                tables[name],
                config=ContentConfig(encoder=encoder, cache_dir=args.out / "embedding-cache"),
            )
    specs = {
        "text": spec,
        "bow": spec,
        "lists": replace(spec, item_text=(), context_text=()),
        "none": replace(spec, item_text=(), context_text=(), user_lists=(), item_lists=()),
    }
    results: dict = {}
    cold_scores: dict[str, np.ndarray] = {}
    cold_mask = cold_rows(spec, splits["train"], splits["test"])
    if cold_mask is None:
        raise SystemExit("the synthetic spec has an item id: cold rows are defined")
    clicks = pq.read_table(str(splits["test"]), columns=["click"]).column("click").to_numpy()
    for name in names:
        variant = specs[name]
        where = root / name
        features = {s: where / "features" / s for s in splits}
        start = time.perf_counter()
        run_feature_engineering(
            variant,
            splits,
            workflow_dir=where / "workflow",
            outputs=features,
            config=FeatureConfig(),
            content=tables.get(name),
        )
        featured = time.perf_counter()
        train_ranker(
            variant,
            features["train"],
            features["valid"],
            model_dir=where / "model",
            config=RankerConfig(),
        )
        trained = time.perf_counter()
        evaluation = evaluate_ranker(
            variant,
            model_dir=where / "model",
            test_features=features["test"],
            raw_test=splits["test"],
            gates=Gates().for_spec(variant),
            raw_train=splits["train"],
        )
        click = evaluation.tasks["click"]
        cold_scores[name] = predict(load_ranker(where / "model"), features["test"])["click"][
            cold_mask
        ]
        results[name] = {
            "auc": click.metrics["auc"],
            "cold_start": click.cold_start,
            "features_s": featured - start,
            "training_s": trained - featured,
        }
        cold = click.cold_start or {}
        print(
            f"{name:6s} click AUC {click.metrics['auc']:.4f}  cold-start AUC "
            f"{cold.get('auc', float('nan')):.4f} [{cold.get('low', float('nan')):.4f}, "
            f"{cold.get('high', float('nan')):.4f}] on {int(cold.get('rows', 0))} rows  "
            f"features {featured - start:.0f}s  training {trained - featured:.0f}s",
            flush=True,
        )
    if "text" in cold_scores:
        labels = np.asarray(clicks, dtype=np.float64)[cold_mask]
        for other in (n for n in names if n != "text"):
            d = paired_bootstrap("auc", labels, cold_scores["text"], cold_scores[other])
            results[f"text_minus_{other}"] = {
                "cold_start_auc": d.candidate - d.reference,
                "low": d.low,
                "high": d.high,
            }
            print(
                f"text - {other}: cold-start AUC {d.candidate - d.reference:+.4f} "
                f"[{d.low:+.4f}, {d.high:+.4f}] (paired bootstrap, 95%)",
                flush=True,
            )
    (root / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
