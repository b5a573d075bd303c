"""Kept for model-store versions exported by rankflow 0.1.0: their ``model.py`` runs
``from rankflow import integrity`` inside Triton (see :mod:`rankflow.core.contract`, serving
format 1). New code imports :mod:`rankflow.core.integrity`; ``make lint`` forbids this module."""

from rankflow.core.integrity import verify

__all__ = ["verify"]
