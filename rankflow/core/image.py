"""The one container image every component runs in, tagged with the package version.

Changing the version is the only way to change the tag, so a compiled pipeline always names an
immutable image that matches the code it was compiled from.
"""

from rankflow import __version__

REPOSITORY = "ghcr.io/rankflow/rankflow"
IMAGE = f"{REPOSITORY}:{__version__}"
