"""Training recipes as data: the hyperparameters a run takes unless the user sets them. No Django.

``finetune`` is the original system's recipe for ImageNet weights (Adam 1e-4, weight decay 1e-4,
early stopping after 10 epochs without progress). ``scratch`` is what measurement picked for a model
that starts from random weights on small, long-tailed data (bench/accuracy.py, numbers in the README):
a learning rate ten times higher with a short warm-up, label smoothing, loss weights that lift the
rare characters, an exponential moving average of the weights, the whole cosine schedule instead of
early stopping, and a final refit on train + val at the epoch count validation chose.

``recipe: auto`` takes ``finetune`` when the run starts from pretrained weights and ``scratch``
otherwise; every value can still be overridden one by one (``--lr``, ``--set ema_decay=0``, ...).
"""
from __future__ import annotations

RECIPE_CHOICES = ("auto", "finetune", "scratch")

RECIPES: dict[str, dict] = {
    "finetune": {"optimizer": "adam", "lr": 1e-4, "weight_decay": 1e-4, "warmup_epochs": 0, "label_smoothing": 0.0,
                 "patience": 10, "class_weighting": 0.0, "ema_decay": 0.0, "refit": False},
    "scratch": {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 0.05, "warmup_epochs": 2, "label_smoothing": 0.1,
                "patience": 0, "class_weighting": 0.5, "ema_decay": 0.998, "refit": True},
}
RECIPE_KEYS = tuple(RECIPES["finetune"])


def recipe_for(recipe: str, weights_source: str) -> str:
    """The recipe a run uses: the one asked for, or (``auto``) the one that fits its starting weights."""
    if recipe != "auto":
        return recipe
    return "scratch" if weights_source == "none" else "finetune"
