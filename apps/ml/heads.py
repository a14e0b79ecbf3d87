"""The serving head: one forward gives the logits and the image's embedding. No Django here.

The embedding is the pooled feature vector the classifier reads (the input of the model's last ``Linear``),
L2-normalised in the graph. The classifier's ``Linear`` is swapped for ``EmbeddingHead``, which returns
``[logits | embedding]`` as one tensor, so every runtime (eager, ONNX Runtime, OpenVINO, int8, CUDA) runs and
returns exactly one output, as before, and the predictor splits it: the first ``len(labels)`` columns are the
logits. An architecture whose last ``Linear`` is not its final operation gets no embedding (the predictor
sees an output as wide as its labels and says ``embedding_dim = 0``).
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class EmbeddingHead(nn.Module):
    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.linear(features)
        embedding = nn.functional.normalize(features.float(), dim=1).to(logits.dtype)
        return torch.cat([logits, embedding], dim=1)


def with_embedding(model: nn.Module, *, copied: bool = False) -> nn.Module:
    """``model`` with its last ``Linear`` wrapped in ``EmbeddingHead`` (in place, or in a copy with ``copied``,
    so a caller's model is left alone). A model already wrapped, or one without a ``Linear``, is returned as it is."""
    if any(isinstance(module, EmbeddingHead) for module in model.modules()):
        return model
    if copied:
        model = copy.deepcopy(model)
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        return model
    parent_name, _, attribute = last.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attribute, EmbeddingHead(getattr(parent, attribute)))
    return model
