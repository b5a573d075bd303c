"""The one container image every component runs in, tagged with the package version.

The committed compiled pipeline names this release tag. ``rankflow publish`` rewrites every step
to a per-commit reference (``:sha-<commit>`` or a digest, pipelines/kubeflow.py), so a published
pipeline version runs exactly the code it was built from.
"""

from rankflow import __version__

REPOSITORY = "ghcr.io/rankflow/rankflow"
IMAGE = f"{REPOSITORY}:{__version__}"
