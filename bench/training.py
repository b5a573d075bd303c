"""Training: examples/s of the default ranker through its dataloader vs in-memory tensors.

For each batch size, two copies of the default ranker (``build_ranker(RankerConfig())``) train on
the processed train split: one through ``split_loader`` as ``train_ranker`` does (the split's
arrays in memory on the CPU, ``mm.Loader`` on the GPU), one from the same
rows pre-materialised as ``tf.data`` tensors (the compute floor: no parquet, no dataloader). Each
repeat is one ``fit`` epoch capped at ``steps`` steps; a callback stamps every batch end, and
steps/s is measured over the batches after ``warmup`` (tracing and first-batch costs excluded).
examples/s = steps/s * batch size; medians over repeats, the two feeds alternating.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from bench.common import Workspace, median, progress

logger = logging.getLogger(__name__)


def _stamps_callback():
    import tensorflow as tf

    class Stamps(tf.keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.stamps: list[float] = []

        def on_train_batch_end(self, batch, logs=None) -> None:
            self.stamps.append(time.perf_counter())

    return Stamps()


def _materialise(path: Path, batch_size: int):
    """The loader's batches, concatenated once into in-memory arrays, as a batched tf.data."""
    import numpy as np
    import tensorflow as tf

    from rankflow.core.artifacts import split_loader

    loader = split_loader(path, batch_size=8192, shuffle=False)
    features: dict[str, list] = {}
    targets: dict[str, list] = {}
    for inputs, labels in loader:
        for name, value in inputs.items():
            features.setdefault(name, []).append(np.asarray(value))
        for name, value in labels.items():
            targets.setdefault(name, []).append(np.asarray(value))

    def batched(parts: list) -> np.ndarray:
        # Pre-batched [n_batches, batch, ...]: tf.data then slices whole batches, no per-row work.
        values = np.concatenate(parts)
        n = len(values) // batch_size
        return values[: n * batch_size].reshape(n, batch_size, *values.shape[1:])

    arrays = (
        {k: batched(v) for k, v in features.items()},
        {k: batched(v) for k, v in targets.items()},
    )
    data = tf.data.Dataset.from_tensor_slices(arrays).cache().repeat()
    return data.prefetch(tf.data.AUTOTUNE), loader.input_schema


def _compiled(schema, batch_size: int, seed: int):
    import tensorflow as tf

    from components.training.ranker import PEAK_LEARNING_RATE, RankerConfig, build_ranker

    config = RankerConfig(batch_size=batch_size, seed=seed)
    tf.keras.utils.set_random_seed(seed)
    model = build_ranker(schema, config=config)
    # The heads' own default metrics (a regression head takes no AUC).
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=PEAK_LEARNING_RATE))
    return model


def _steps_per_s(model, data, *, steps: int, warmup: int) -> float:
    stamps = _stamps_callback()
    model.fit(data, epochs=1, steps_per_epoch=steps, callbacks=[stamps], verbose=0)
    marks = stamps.stamps
    if len(marks) <= warmup + 1:
        raise RuntimeError(f"only {len(marks)} steps ran; need more than warmup={warmup} + 1")
    return (len(marks) - 1 - warmup) / (marks[-1] - marks[warmup])


def bench_training(
    workspace: Workspace,
    *,
    rows: int,
    batch_sizes: list[int],
    steps: int,
    warmup: int,
    repeats: int,
) -> dict[str, Any]:
    from rankflow.core.artifacts import split_loader

    features = workspace.features(rows)
    results = []
    for batch in batch_sizes:
        loader = split_loader(features["train"], batch_size=batch, shuffle=True)
        available = len(loader)
        if available < steps:
            logger.warning(
                "train split has %d batches of %d; measuring %d steps", available, batch, available
            )
        n_steps = min(steps, available)
        memory, schema = _materialise(features["train"], batch)
        models = {
            "dataloader": _compiled(loader.input_schema, batch, workspace.seed),
            "in_memory": _compiled(schema, batch, workspace.seed),
        }
        feeds = {"dataloader": loader, "in_memory": memory}
        rates: dict[str, list[float]] = {name: [] for name in feeds}
        for repeat in progress(range(repeats), desc=f"training batch {batch}"):
            order = list(feeds) if repeat % 2 == 0 else list(reversed(feeds))
            for name in order:
                rates[name].append(
                    _steps_per_s(models[name], feeds[name], steps=n_steps, warmup=warmup)
                )
        steps_per_s = {name: median(values) for name, values in rates.items()}
        examples = {name: rate * batch for name, rate in steps_per_s.items()}
        results.append(
            {
                "batch_size": batch,
                "steps": n_steps,
                "warmup_steps": warmup,
                "repeats": repeats,
                "steps_per_s": steps_per_s,
                "steps_per_s_all": rates,
                "examples_per_s": examples,
                "x_floor": examples["in_memory"] / examples["dataloader"],
            }
        )
        logger.info("training batch %d: %s examples/s", batch, examples)
    return {"rows": rows, "results": results}
