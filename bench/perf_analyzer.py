"""Triton's own load generator, ``perf_analyzer`` (C++), against the served model.

The ``tritonclient==2.51.0`` wheel ships the binary but not two of its shared libraries; the
``nvidia-pytriton`` wheel bundles both under mangled names (``libb64-<hash>.so.0d``,
``libcudart-<hash>.so.12.*``; cudart is only loaded, no GPU is used), so links with the sonames the
binary asks for are made in a scratch directory put on ``LD_LIBRARY_PATH``.

perf_analyzer reports the client-observed percentiles and Triton's server-side split of each
request (queue, compute input / infer / output), which says where time goes without a profiler.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rankflow.core.errors import RankflowError

logger = logging.getLogger(__name__)

#: soname the binary needs -> glob of the bundled file in ``nvidia_pytriton.libs``.
LIBRARIES = {"libb64.so.0d": "libb64-*.so.0d", "libcudart.so.12": "libcudart-*.so.12*"}


#: The CSV columns that add up to the average latency (microseconds).
PARTS = (
    "Client Send",
    "Network+Server Send/Recv",
    "Server Queue",
    "Server Compute Input",
    "Server Compute Infer",
    "Server Compute Output",
    "Client Recv",
)


class PerfAnalyzerUnavailable(RankflowError, RuntimeError):
    """The binary or one of its libraries isn't installed here."""


def binary() -> Path:
    found = Path(sys.prefix) / "bin" / "perf_analyzer"
    if found.is_file():
        return found
    which = shutil.which("perf_analyzer")
    if which is None:
        raise PerfAnalyzerUnavailable("perf_analyzer not found (tritonclient wheel not installed)")
    return Path(which)


def library_dir(scratch: Path) -> Path:
    """``scratch/perf-libs`` with the sonames perf_analyzer links against."""
    import sysconfig

    bundled = Path(sysconfig.get_paths()["purelib"]) / "nvidia_pytriton.libs"
    target = scratch / "perf-libs"
    target.mkdir(parents=True, exist_ok=True)
    for soname, pattern in LIBRARIES.items():
        matches = sorted(bundled.glob(pattern))
        if not matches:
            raise PerfAnalyzerUnavailable(f"no {pattern} in {bundled} for perf_analyzer")
        link = target / soname
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(matches[0])
    return target


def write_input_data(columns: Mapping[str, np.ndarray], path: Path) -> Path:
    """perf_analyzer ``--input-data`` JSON: one entry per row, an input of shape [1], or
    ``[width]`` for a ``[rows, width]`` array (a padded list, the wire format of lists)."""

    def plain(value: Any) -> Any:
        value = value.item() if isinstance(value, np.generic) else value
        return value.decode() if isinstance(value, bytes) else value

    rows = len(next(iter(columns.values())))
    data = []
    for i in range(rows):
        entry = {}
        for name, values in columns.items():
            if np.ndim(values) == 2:
                row = [plain(v) for v in values[i]]
                entry[name] = {"content": row, "shape": [len(row)]}
            else:
                entry[name] = {"content": [plain(values[i])], "shape": [1]}
        data.append(entry)
    path.write_text(json.dumps({"data": data}))
    return path


def measure(
    *,
    grpc_url: str,
    model: str,
    input_data: Path,
    batch: int,
    concurrency: int,
    requests: int,
    scratch: Path,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """One perf_analyzer measurement; latencies in ms, throughput in rows/s."""
    libs = library_dir(scratch)
    report = scratch / f"perf-b{batch}-c{concurrency}.csv"
    command = [
        str(binary()),
        "-m",
        model,
        "-u",
        grpc_url,
        "-i",
        "grpc",
        "-b",
        str(batch),
        "--concurrency-range",
        str(concurrency),
        "--input-data",
        str(input_data),
        "--measurement-mode",
        "count_windows",
        "--measurement-request-count",
        str(requests),
        # Two shared cores never hold perf_analyzer's default 10 % stability over 3 windows.
        "--stability-percentage",
        "30",
        "--max-trials",
        "10",
        "-f",
        str(report),
    ]
    env = {**os.environ, "LD_LIBRARY_PATH": f"{libs}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"perf_analyzer timed out after {timeout_s:.0f} s") from err
    if done.returncode != 0 or not report.is_file():
        raise RuntimeError(
            f"perf_analyzer failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}"
        )
    with report.open() as handle:
        row = next(csv.DictReader(handle))
    us = {key: float(value) for key, value in row.items() if value not in ("", None)}
    return {
        "p50_ms": us["p50 latency"] / 1000,
        "p99_ms": us["p99 latency"] / 1000,
        # perf_analyzer's CSV has no average; its parts add up to one.
        "mean_ms": sum(us[k] for k in PARTS) / 1000,
        "rows_per_s": us["Inferences/Second"],
        "server_ms": {
            "queue": us["Server Queue"] / 1000,
            "compute_input": us["Server Compute Input"] / 1000,
            "compute_infer": us["Server Compute Infer"] / 1000,
            "compute_output": us["Server Compute Output"] / 1000,
        },
        "client_ms": {
            "send": us["Client Send"] / 1000,
            "network_and_server": us["Network+Server Send/Recv"] / 1000,
            "recv": us["Client Recv"] / 1000,
        },
    }
