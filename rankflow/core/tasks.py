"""Task names: the schema's targets, and the model heads and endpoint outputs named after them.

Merlin Models names a head ``<target>/<kind>_output`` (``click/binary_output``); the endpoint
serves each task under the target's own name. Every layer maps between the two through here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from rankflow.core.errors import ExportError

if TYPE_CHECKING:
    from merlin.schema import Schema


def task_of(output_name: str) -> str:
    """``click/binary_output`` -> ``click``; a plain task name is its own task."""
    return output_name.split("/", 1)[0]


def task_heads(tasks: Sequence[str], outputs: Iterable[str]) -> dict[str, str]:
    """Task -> the one output named ``<task>`` or ``<task>/...``; refuses ambiguity."""
    names = sorted(outputs)
    heads = {}
    for task in tasks:
        matches = [n for n in names if n == task or n.startswith(f"{task}/")]
        if len(matches) != 1:
            raise ExportError(
                f"task '{task}' needs exactly one SavedModel output named '{task}' or "
                f"'{task}/...'; the signature has {names}"
            )
        heads[task] = matches[0]
    return heads


def target_columns(schema: Schema) -> list[str]:
    """Target columns, i.e. the tasks the ranker predicts, in schema order."""
    from merlin.schema import Tags

    return schema.select_by_tag(Tags.TARGET).column_names
