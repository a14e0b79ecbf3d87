"""The old name of ``apps.inference.loading`` (the per-process cache of loaded models and their loader).

Kept only for ``apps/training/runner.py``, which imports ``load_serving_predictor`` from here and belongs
to another change in progress; new code imports ``apps.inference.loading``.
"""
from .loading import load_serving_predictor  # noqa: F401
