"""Training speed and accuracy: Kyara's loop against a plain torchvision reference loop.

    .venv/bin/python bench/train.py --data /tmp/data/pokemon32 [--sizes 224 128] [--speed-images 192]
                                    [--epochs 3] [--acc-size 128] [--json out.json]

``--data`` is an exported dataset (``manage.py export_dataset``: ``train/`` and ``val/`` of
``<series>_<character>/`` folders) or a plain folder of class folders, split here 80/20 by a hash of
the file name. Both loops train the same architecture from the same initial weights with the same
batch size, optimizer and augmentation (random resized crop, flip, rotation, colour jitter):

- reference: ``ImageFolder`` + torchvision transforms on PIL images, a DataLoader with
  ``--ref-workers`` processes decoding files every epoch, fp32, NCHW.
- kyara: ``apps.ml.engine.fit``: images decoded once into a uint8 cache, one loader worker that only
  slices, batched augmentation, bf16 autocast + channels-last where the CPU has bf16 and the size
  pays (auto precision).

Speed: images/s of the second of two epochs over the same ``--speed-images`` training images, per
size, with where the time goes. Accuracy: validation accuracy of both after ``--epochs`` epochs on
the whole training split at ``--acc-size``. No Django needed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Subset  # noqa: E402
from torchvision import datasets  # noqa: E402
from torchvision import transforms as T  # noqa: E402

from apps.ml.architectures import architectures  # noqa: E402
from apps.ml.config import TrainConfig  # noqa: E402
from apps.ml.data import Sample  # noqa: E402
from apps.ml.engine import Callbacks, fit  # noqa: E402
from apps.ml.images import resize_size  # noqa: E402

EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"}


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS)


def split_dataset(root: Path, val_share: float = 0.2) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """(class names, {"train": [(path, label)], "val": [...]}) from an export or a plain class-folder tree."""
    if (root / "train").is_dir() and (root / "val").is_dir():
        classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
        index = {c: i for i, c in enumerate(classes)}
        return classes, {split: [(p, index[p.parent.name]) for p in _files(root / split) if p.parent.name in index]
                         for split in ("train", "val")}
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    out = {"train": [], "val": []}
    for label, name in enumerate(classes):
        for path in _files(root / name):
            bucket = int(hashlib.sha256(path.name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
            out["val" if bucket < val_share else "train"].append((path, label))
    return classes, out


def _samples(items):
    return [Sample(str(p), label, (lambda p=p: p.read_bytes())) for p, label in items]


def _seeded_model(arch: str, num_classes: int) -> nn.Module:
    torch.manual_seed(0)
    return architectures.get(arch).build(num_classes, weights="none")


# --- The reference: what a plain torchvision script does ------------------------------------------

class _RGB:
    """ImageFolder's default loader, with transparency over white as Kyara decodes (sprites are RGBA)."""

    def __call__(self, path):
        from PIL import Image

        from apps.ml.images import to_rgb

        return to_rgb(Image.open(path))


def reference_loaders(root_items, classes, size, config, workers, batch_size):
    norm = T.Normalize(architectures.get(config.architecture).mean, architectures.get(config.architecture).std)
    train_tf = T.Compose([T.RandomResizedCrop(size, scale=(config.scale_min, 1.0)), T.RandomHorizontalFlip(config.hflip),
                          T.RandomRotation(config.rotation),
                          T.ColorJitter(config.color_jitter, config.color_jitter, config.color_jitter, config.color_jitter / 2),
                          T.ToTensor(), norm])
    eval_tf = T.Compose([T.Resize(resize_size(size)), T.CenterCrop(size), T.ToTensor(), norm])

    def folder(items, tf):
        ds = datasets.ImageFolder(str(items[0][0].parents[1]), transform=tf, loader=_RGB())
        wanted = {str(p) for p, _ in items}
        keep = [i for i, (p, _) in enumerate(ds.samples) if p in wanted]
        return Subset(ds, keep)

    loaders = {}
    for split, tf, shuffle in (("train", train_tf, True), ("val", eval_tf, False)):
        if root_items.get(split):
            loaders[split] = DataLoader(folder(root_items[split], tf), batch_size=batch_size, shuffle=shuffle,
                                        num_workers=workers, persistent_workers=workers > 0,
                                        generator=torch.Generator().manual_seed(0))
    return loaders


def reference_run(items, classes, size, config, *, epochs, workers):
    """fp32 NCHW; returns per-epoch images/s, val accuracy and the time breakdown of the last epoch."""
    model = _seeded_model(config.architecture, len(classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    criterion = nn.CrossEntropyLoss()
    loaders = reference_loaders(items, classes, size, config, workers, config.batch_size)
    rows = []
    for _epoch in range(epochs):
        model.train()
        timing = dict.fromkeys(("data", "forward", "backward"), 0.0)
        seen = 0
        start = mark = time.perf_counter()
        for x, y in loaders["train"]:
            now = time.perf_counter()
            timing["data"] += now - mark
            mark = now
            loss = criterion(model(x), y)
            now = time.perf_counter()
            timing["forward"] += now - mark
            mark = now
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            now = time.perf_counter()
            timing["backward"] += now - mark
            mark = now
            seen += len(y)
        seconds = time.perf_counter() - start
        rows.append({"images_per_second": seen / seconds, "timing": timing, "seconds": seconds})
    acc = None
    if "val" in loaders:
        model.eval()
        correct = total = 0
        with torch.inference_mode():
            for x, y in loaders["val"]:
                correct += (model(x).argmax(1) == y).sum().item()
                total += len(y)
        acc = correct / total
    return {"epochs": rows, "val_accuracy": acc}


def kyara_run(items, classes, size, config, *, epochs):
    rows = []
    cfg = TrainConfig.from_dict({**config.to_dict(), "image_size": size, "epochs": epochs, "patience": 0,
                                 "scheduler": "none"})
    with tempfile.TemporaryDirectory() as run_dir:
        result = fit(cfg, train=_samples(items["train"]), val=_samples(items["val"]), class_names=classes,
                     run_dir=Path(run_dir), callbacks=Callbacks(on_epoch=rows.append))
    last = rows[-1]
    return {"epochs": [{"images_per_second": r["images_per_second"], "timing": r["timing"], "seconds": r["seconds"]}
                       for r in rows],
            "val_accuracy": last["val_accuracy"], "decode_seconds": result["decode_seconds"],
            "precision": result["precision"], "channels_last": result["channels_last"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("/tmp/data/pokemon32"))
    parser.add_argument("--arch", default="mobilenet_v2")
    parser.add_argument("--sizes", type=int, nargs="*", default=[224, 128], help="speed sizes (none: skip)")
    parser.add_argument("--speed-images", type=int, default=192, help="training images per speed epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the accuracy comparison (0: skip)")
    parser.add_argument("--acc-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ref-workers", type=int, default=2)
    parser.add_argument("--precision", default="auto", help="Kyara's precision: auto (bf16 where the CPU has it "
                        "and the size pays), fp32, bf16")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    classes, items = split_dataset(args.data)
    print(f"dataset {args.data}: {len(classes)} classes, {len(items['train'])} train, {len(items['val'])} val; "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} threads", flush=True)
    config = TrainConfig.from_dict({"architecture": args.arch, "batch_size": args.batch_size, "lr": args.lr,
                                    "workers": 1, "threads": args.threads, "precision": args.precision})
    step = max(len(items["train"]) // args.speed_images, 1)
    speed_items = {"train": items["train"][::step][: args.speed_images], "val": items["val"][:32]}
    report = {"dataset": str(args.data), "classes": len(classes), "speed": {}, "accuracy": {}}
    for size in args.sizes:
        ref = reference_run(speed_items, classes, size, config, epochs=2, workers=args.ref_workers)
        kya = kyara_run(speed_items, classes, size, config, epochs=2)
        ratio = kya["epochs"][-1]["images_per_second"] / ref["epochs"][-1]["images_per_second"]
        report["speed"][size] = {"reference": ref["epochs"][-1], "kyara": kya["epochs"][-1], "ratio": ratio,
                                 "kyara_decode_seconds": kya["decode_seconds"], "kyara_precision": kya["precision"]}
        print(f"{size}px: reference {ref['epochs'][-1]['images_per_second']:.1f} img/s "
              f"{_shares(ref['epochs'][-1]['timing'])}; kyara ({kya['precision']}, channels-last "
              f"{kya['channels_last']}) {kya['epochs'][-1]['images_per_second']:.1f} img/s "
              f"{_shares(kya['epochs'][-1]['timing'])}, cache decode {kya['decode_seconds']:.1f}s once; "
              f"ratio {ratio:.2f}x", flush=True)
    if args.epochs:
        ref = reference_run(items, classes, args.acc_size, config, epochs=args.epochs, workers=args.ref_workers)
        kya = kyara_run(items, classes, args.acc_size, config, epochs=args.epochs)
        report["accuracy"] = {"size": args.acc_size, "epochs": args.epochs, "reference": ref["val_accuracy"],
                              "kyara": kya["val_accuracy"],
                              "reference_seconds": sum(e["seconds"] for e in ref["epochs"]),
                              "kyara_seconds": sum(e["seconds"] for e in kya["epochs"]) + kya["decode_seconds"]}
        print(f"accuracy after {args.epochs} epochs at {args.acc_size}px: reference {ref['val_accuracy']:.3f} "
              f"({report['accuracy']['reference_seconds']:.0f}s), kyara {kya['val_accuracy']:.3f} "
              f"({report['accuracy']['kyara_seconds']:.0f}s incl. decoding)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def _shares(timing: dict) -> str:
    total = sum(timing.values()) or 1.0
    return "[" + ", ".join(f"{k} {v / total:.0%}" for k, v in timing.items()) + "]"


if __name__ == "__main__":
    main()
