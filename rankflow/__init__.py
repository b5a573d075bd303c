"""rankflow: a GPU-accelerated multi-task ranking workflow for Kubeflow Pipelines."""

__version__ = "0.1.0"
