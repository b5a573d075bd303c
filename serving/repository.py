"""What every flavour of exported Triton repository shares: its options and its seals."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankflow.core import integrity
from rankflow.core.contract import DEFAULT_ENDPOINT
from rankflow.core.drift import DriftReference
from rankflow.core.window import TimeWindow


@dataclass(frozen=True)
class ExportConfig:
    model_name: str = DEFAULT_ENDPOINT
    version: int = 1
    max_batch_size: int = 1024
    instances: int = 1
    max_queue_delay_us: int = 0
    #: The rows the model was fitted on (train + valid), recorded in the manifest: what a later
    #: champion comparison must not judge it on.
    training_window: TimeWindow | None = None
    #: The training inputs' profiles: what the endpoint's drift counters are bucketed by and
    #: ``rankflow drift`` compares with (cpu flavour).
    drift_reference: DriftReference | None = None
    #: How often the endpoint pushes its drift counts to Triton's metrics (each push is a round
    #: trip to the server process; 0 pushes after every request).
    drift_flush_s: float = 1.0
    #: The content step's table (embed-content's output): needed when the spec has text
    #: columns; the version carries a copy, and the encoder's files, to embed what it lacks.
    content_table: Path | None = None

    def manifest_fields(self) -> dict[str, Any]:
        """What this export adds to every version's ``rankflow.json``."""
        fields: dict[str, Any] = {}
        if self.training_window is not None:
            fields["training_window"] = self.training_window.to_dict()
        if self.drift_reference is not None:
            fields["drift_flush_s"] = self.drift_flush_s
        return fields


def _compile_bytecode(source: Path) -> None:
    """Write ``model.py``'s bytecode now, checked against the source by hash.

    Triton's python stub imports ``model.py`` and would write ``__pycache__`` into the version
    directory, which must match its sealed manifest; with the bytecode already there (and in
    the manifest) the import reads it instead. Hash-checked, so copies into the store stay
    valid whatever their timestamps. The export step runs on the serving image's Python.
    """
    import importlib.util
    import py_compile

    py_compile.compile(
        str(source),
        cfile=importlib.util.cache_from_source(str(source)),
        doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
    )


def seal_versions(repository: Path) -> None:
    """Seal every ``<model>/<version>`` directory: Triton loads (and the store publishes) a
    version directory on its own, so each carries its own manifest besides the repository's.
    Python backend modules get their bytecode first (see ``_compile_bytecode``)."""
    for config in sorted(Path(repository).glob("*/config.pbtxt")):
        for version in sorted(config.parent.iterdir()):
            if version.is_dir() and version.name.isdigit():
                for module in sorted(version.glob("*.py")):
                    _compile_bytecode(module)
                integrity.seal(version)


def write_config(path: Path, config: object) -> Path:  # config: a tritonclient ModelConfig
    """A ``config.pbtxt`` in Triton's protobuf text format."""
    from google.protobuf import text_format

    path.write_text(text_format.MessageToString(config))
    return path
