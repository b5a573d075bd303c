"""Cold start with and without content, on one split of the synthetic content log.

    python -m bench.cold_start [--rows 400000] [--variants text,bow,lists,none] [--out DIR]

Every variant runs the default feature step and ranker on the same split: ``text`` (lists and
the language model's vectors of the ad title and the query), ``bow`` (the same with the hashed
TF-IDF baseline), ``lists`` (lists, no text) and ``none`` (neither). Printed per variant: the
click task's AUC on all test rows and on the cold rows (items train never saw, with their 95%
bootstrap interval), and the seconds each of the feature step and training took. The
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
    from components.content.embed import ContentConfig, embed_content
    from components.data.prepare import prepare_data
    from components.data.split import SplitConfig
    from components.data.synthetic import SyntheticConfig
    from components.evaluation.evaluate import Gates, evaluate_ranker
    from components.features.workflow import FeatureConfig, run_feature_engineering
    from components.training.ranker import RankerConfig, train_ranker

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
    results = {}
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
    (root / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
