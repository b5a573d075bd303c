"""A small typed gRPC client for the rankflow endpoint: health, metadata, score raw rows."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rankflow.core.contract import DEFAULT_ENDPOINT, LENGTH_SUFFIX
from rankflow.core.errors import ClientError, ClientInputError

logger = logging.getLogger(__name__)

DEFAULT_URL = "127.0.0.1:8001"


@dataclass(frozen=True)
class ClientConfig:
    url: str = DEFAULT_URL
    model_name: str = DEFAULT_ENDPOINT
    model_version: str = ""  # Triton's own convention: "" = the latest ready version
    timeout_s: float = 10.0
    #: How a CSV row joins a list's values into one field ("a|b|c").
    list_separator: str = "|"


def pad_lists(
    name: str, rows: Any, width: int, dtype: np.dtype, *, separator: str = "|"
) -> tuple[np.ndarray, np.ndarray]:
    """One list per row -> (``[rows, width]`` values, ``[rows, 1]`` int32 lengths), the wire
    format of a list input. A list is ordered oldest to newest; one longer than ``width`` keeps
    its newest ``width`` values, as the workflow would. A null is the empty list; a string is
    split on ``separator`` (a CSV field), and an integer is the one-value list."""
    text = dtype.kind == "O"
    padded = np.full((len(rows), width), "" if text else 0, dtype=object if text else dtype)
    lengths = np.zeros((len(rows), 1), dtype=np.int32)
    for i, value in enumerate(rows):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        if isinstance(value, str):
            value = value.split(separator) if value else []
        elif isinstance(value, int | np.integer):
            value = [value]  # a CSV field "17" is read as a number: the one-value list
        if np.ndim(value) != 1:
            raise ClientInputError(f"column '{name}' row {i} is {value!r}, not a list of values")
        kept = list(value)[-width:]
        if not text and any(
            isinstance(v, float | np.floating) and not float(v).is_integer() for v in kept
        ):
            raise ClientInputError(f"column '{name}' row {i} holds {kept!r}, not {dtype} values")
        try:
            padded[i, : len(kept)] = [str(v) for v in kept] if text else np.asarray(kept, dtype)
        except (TypeError, ValueError) as err:
            raise ClientInputError(
                f"column '{name}' row {i} holds {kept!r}, not {dtype} values: {err}"
            ) from err
        lengths[i, 0] = len(kept)
    return padded, lengths


def read_rows(path: str | Path) -> pd.DataFrame:
    """Raw rows from parquet (file or directory), CSV, JSON array or JSON lines."""
    from rankflow.core.io import harden_pyarrow

    harden_pyarrow()  # rows from anywhere
    path = Path(path)
    if not path.exists():
        raise ClientInputError(f"input not found: {path}")
    suffix = path.suffix.lower()
    try:
        if path.is_dir() or suffix in (".parquet", ".pq"):
            import pyarrow.dataset as ds

            return ds.dataset(str(path), format="parquet").to_table().to_pandas()
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".json", ".jsonl", ".ndjson"):
            text = path.read_text().strip()
            if text.startswith("["):
                return pd.DataFrame(json.loads(text))
            return pd.read_json(path, lines=True)
    except (ValueError, OSError) as err:
        raise ClientInputError(f"cannot read rows from {path}: {err}") from err
    raise ClientInputError(f"unsupported input {path}: use .parquet, .csv, .json or .jsonl")


class RankflowClient:
    """``RankflowClient(ClientConfig(url=...)).score(frame)`` -> ``{task: scores}``."""

    def __init__(self, config: ClientConfig) -> None:
        import tritonclient.grpc as grpcclient

        self.config = config
        self._client = grpcclient.InferenceServerClient(config.url)
        self._metadata: dict[str, Any] | None = None

    def _call(self, what: str, fn, *args, **kwargs):
        from tritonclient.utils import InferenceServerException

        try:
            return fn(*args, **kwargs)
        except InferenceServerException as err:
            message = err.message() or str(err)
            if "unavailable" in (err.status() or "").lower() or "failed to connect" in message:
                raise ClientError(f"cannot reach Triton at {self.config.url}: {message}") from err
            raise ClientError(f"{what} failed on {self.config.url}: {message}") from err

    def health(self) -> dict[str, bool]:
        live = self._call(
            "liveness", self._client.is_server_live, client_timeout=self.config.timeout_s
        )
        ready = self._call("readiness", self._client.is_server_ready)
        model = self._call(
            "model readiness",
            self._client.is_model_ready,
            self.config.model_name,
            self.config.model_version,
        )
        return {"live": bool(live), "ready": bool(ready), "model_ready": bool(model)}

    def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            if not self._call(
                "model readiness",
                self._client.is_model_ready,
                self.config.model_name,
                self.config.model_version,
            ):
                raise ClientError(
                    f"model '{self.config.model_name}' is not loaded on {self.config.url}"
                )
            self._metadata = self._call(
                "model metadata",
                self._client.get_model_metadata,
                self.config.model_name,
                self.config.model_version,
                as_json=True,
            )
        return self._metadata

    def score(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        import tritonclient.grpc as grpcclient

        metadata = self.metadata()
        names = {i["name"] for i in metadata["inputs"]}
        # A list input travels padded beside its lengths (see rankflow.core.contract).
        lists = {n for n in names if n + LENGTH_SUFFIX in names}
        lengths = {n + LENGTH_SUFFIX for n in lists}
        missing = [
            i["name"]
            for i in metadata["inputs"]
            if i["name"] not in frame.columns and i["name"] not in lengths
        ]
        if missing:
            raise ClientInputError(
                f"rows lack input column(s) {missing} of '{self.config.model_name}'"
            )
        if frame.empty:
            raise ClientInputError("no rows to score")
        inputs = []
        for spec in metadata["inputs"]:
            name, datatype = spec["name"], spec["datatype"]
            if name in lengths:
                continue
            if name in lists:
                dtype = (
                    np.dtype(object)
                    if datatype == "BYTES"
                    else np.dtype(grpcclient.triton_to_np_dtype(datatype))
                )
                padded, count = pad_lists(
                    name,
                    frame[name].to_numpy(),
                    int(spec["shape"][-1]),
                    dtype,
                    separator=self.config.list_separator,
                )
                for tensor_name, array, kind in (
                    (name, padded, datatype),
                    (name + LENGTH_SUFFIX, count, "INT32"),
                ):
                    tensor = grpcclient.InferInput(tensor_name, list(array.shape), kind)
                    tensor.set_data_from_numpy(array)
                    inputs.append(tensor)
                continue
            values = frame[name].to_numpy()
            if datatype == "BYTES":
                values = values.astype(str).astype(object)
            else:
                try:
                    values = values.astype(grpcclient.triton_to_np_dtype(datatype))
                except (TypeError, ValueError) as err:
                    raise ClientInputError(f"column '{name}' is not {datatype}: {err}") from err
            tensor = grpcclient.InferInput(name, [len(frame), 1], datatype)
            tensor.set_data_from_numpy(values.reshape(-1, 1))
            inputs.append(tensor)
        outputs = [grpcclient.InferRequestedOutput(o["name"]) for o in metadata["outputs"]]
        result = self._call(
            "inference",
            self._client.infer,
            self.config.model_name,
            inputs,
            model_version=self.config.model_version,
            outputs=outputs,
            client_timeout=self.config.timeout_s,
        )
        return {o["name"]: result.as_numpy(o["name"]).reshape(-1) for o in metadata["outputs"]}

    def close(self) -> None:
        self._client.close()
