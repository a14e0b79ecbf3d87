"""Which training recipe wins on small, long-tailed data: an ablation judged on the validation split only.

    .venv/bin/python bench/recipes.py --data EXPORT [--image-size 64] [--epochs 30] [--only NAME ...]
                                      [--json out.json] [--deadline 14400]

``EXPORT`` is what ``manage.py export_dataset`` writes (``train/`` and ``val/`` folders of
``<series>_<character>/`` class folders; ``test/`` is never read). Each variant trains
``apps.ml.engine.fit`` from scratch (MobileNetV2, the same seed, epochs and size) with the platform's
``scratch`` recipe with one change, without the final refit (validation cannot judge a model that
trained on it), and reports the best epoch's validation top-1 and mean per-class accuracy, which is
the number the recipe is chosen on. ``reference-like`` is the plain script's recipe inside Kyara's loop
(AdamW 1e-3, weight decay 0.01, nothing else). The refit's own effect is measured on the test split by
``bench/accuracy.py``, after the choice. Bounded by ``--deadline`` seconds over all variants.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apps.ml.config import TrainConfig  # noqa: E402
from apps.ml.data import Sample  # noqa: E402
from apps.ml.engine import fit  # noqa: E402
from apps.ml.recipes import RECIPES  # noqa: E402

SCRATCH = {**RECIPES["scratch"], "refit": False}
VARIANTS = {
    "reference-like": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01, "warmup_epochs": 0,
                       "label_smoothing": 0.0, "class_weighting": 0.0, "ema_decay": 0.0, "patience": 0},
    "scratch": {},
    "lr 1e-3": {"lr": 1e-3},
    "lr 4e-3": {"lr": 4e-3},
    "no warm-up": {"warmup_epochs": 0},
    "no label smoothing": {"label_smoothing": 0.0},
    "no class weights": {"class_weighting": 0.0},
    "class weights 1.0": {"class_weighting": 1.0},
    "no weight EMA": {"ema_decay": 0.0},
    "weight decay 0.01": {"weight_decay": 0.01},
}


def _samples(folder: Path, classes: list[str]) -> list[Sample]:
    out = []
    for label, name in enumerate(classes):
        for path in sorted((folder / name).glob("*")) if (folder / name).is_dir() else []:
            out.append(Sample(key=str(path), label=label, read=path.read_bytes))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="an export_dataset folder (train/, val/)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--only", nargs="*", help="run these variants only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--deadline", type=float, default=14400)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    classes = sorted(p.name for p in (args.data / "train").iterdir() if p.is_dir())
    train, val = _samples(args.data / "train", classes), _samples(args.data / "val", classes)
    print(f"{len(classes)} classes, {len(train)} train, {len(val)} val images; {args.image_size} px, "
          f"{args.epochs} epochs")
    started = time.perf_counter()
    rows = []
    cache = Path(tempfile.mkdtemp(prefix="kyara-recipes-"))
    for name, change in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        if time.perf_counter() - started > args.deadline:
            print(f"deadline reached before {name}")
            break
        values = {**SCRATCH, **change, "architecture": "mobilenet_v2", "weights": "none", "recipe": "scratch",
                  "image_size": args.image_size, "epochs": args.epochs, "seed": args.seed, "threads": args.threads}
        config = TrainConfig.from_dict(values)
        began = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="kyara-recipe-run-") as run_dir:
            result = fit(config, train=train, val=val, class_names=classes, run_dir=Path(run_dir), cache_dir=cache)
            state = json.loads((Path(run_dir) / "config.json").read_text())
        best, correct = result["best_val_accuracy"], result["best_val_mean_class_accuracy"]
        row = {"variant": name, "change": change, "val_top1": best, "val_mean_per_class": correct,
               "best_epoch": result["best_epoch"], "seconds": round(time.perf_counter() - began, 1),
               "threads": state.get("threads")}
        rows.append(row)
        print(f"  {name:22s} val top-1 {best * 100:5.1f}%  mean per-class {correct * 100:5.1f}%  "
              f"best epoch {result['best_epoch']:3d}  {row['seconds']:7.1f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
