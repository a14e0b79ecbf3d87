"""Learnable generated images for the framework-free ML tests: one colour and shape family per class."""
from __future__ import annotations

import pytest
import torch

from .images import make_samples


@pytest.fixture(autouse=True)
def _one_thread():
    # The box has two cores shared with other work; one thread keeps tests steady and deterministic.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_splits():
    return {"train": make_samples(3, 16), "val": make_samples(3, 6, offset=100), "test": make_samples(3, 6, offset=200)}
