"""Training as plain functions: ``train_one_epoch`` and ``evaluate`` return dicts, ``fit`` runs a
whole job and leaves a folder (config.json, metrics.csv, last.pt, best.pt). No Django.

The caller (the training app, a script, the bench) turns the dicts into rows and decides what a
cancel means; ``fit`` only asks ``callbacks.should_stop()`` between steps.
"""
from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import distributed
from .architectures import architectures, count_parameters
from .artifacts import save_serving_artifact
from .checkpoints import BEST, LAST, CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import CachedImageDataset, EpochSampler, Sample, build_cache, item_seed, make_loader
from .device import resolve_precision, select_device, set_threads
from .images import resize_size
from .transforms import BatchAugment, BatchNormalizer, EvalCrop, TrainCrop

logger = logging.getLogger(__name__)

METRIC_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds",
                  "images_per_second")


@dataclass
class Callbacks:
    """Hooks the caller gives ``fit``; every one is optional. Only rank 0 calls them under DDP."""

    on_start: Callable[[dict], None] | None = None
    on_epoch: Callable[[dict], None] | None = None
    on_progress: Callable[[float], None] | None = None  # fraction of the whole run done
    should_stop: Callable[[], bool] | None = None


@dataclass
class StepContext:
    device: torch.device
    train_input: BatchAugment | BatchNormalizer  # uint8 batch, step -> model input
    eval_input: BatchNormalizer
    criterion: nn.Module
    amp_dtype: torch.dtype | None = None
    dist: distributed.DistInfo = field(default_factory=distributed.DistInfo)
    should_stop: Callable[[], bool] | None = None
    on_batch: Callable[[int, int], None] | None = None

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def stop_now(self) -> bool:
        local = bool(self.should_stop and self.dist.is_main and self.should_stop())
        return distributed.any_rank(local, self.dist, self.device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, ctx: StepContext) -> dict:
    """One pass over ``loader``; returns loss, accuracy, images, seconds, a time breakdown, ``stopped``."""
    model.train()
    loss_sum = correct = seen = 0.0
    timing = dict.fromkeys(("data", "augment", "forward", "backward"), 0.0)
    stopped = False
    start = mark = time.perf_counter()
    batches = len(loader)
    for index, (images, labels) in enumerate(loader):
        if ctx.stop_now():
            stopped = True
            break
        now = time.perf_counter()
        timing["data"] += now - mark  # waiting for the loader: per-image crops, collation
        mark = now
        x = ctx.train_input(images, index)
        y = labels.to(ctx.device, non_blocking=True)
        _sync(ctx.device)
        now = time.perf_counter()
        timing["augment"] += now - mark
        mark = now
        with ctx.autocast():
            logits = model(x)
            loss = ctx.criterion(logits.float(), y)
        _sync(ctx.device)
        now = time.perf_counter()
        timing["forward"] += now - mark
        mark = now
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(ctx.device)
        now = time.perf_counter()
        timing["backward"] += now - mark
        mark = now
        n = y.shape[0]
        loss_sum += loss.item() * n
        correct += (logits.argmax(1) == y).sum().item()
        seen += n
        if ctx.on_batch:
            ctx.on_batch(index + 1, batches)
    loss_sum, correct, seen = distributed.all_sum([loss_sum, correct, seen], ctx.dist, ctx.device)
    seconds = time.perf_counter() - start
    return {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1), "images": int(seen),
            "seconds": seconds, "images_per_second": seen / seconds if seconds else 0.0,
            "timing": timing, "stopped": stopped}


@torch.inference_mode()
def evaluate(model: nn.Module, loader, ctx: StepContext, *, num_classes: int) -> dict:
    """Loss, accuracy and per-class (correct, total) over ``loader``, summed over all ranks."""
    model.eval()
    loss_sum = 0.0
    per_class_correct = torch.zeros(num_classes, dtype=torch.float64)
    per_class_total = torch.zeros(num_classes, dtype=torch.float64)
    stopped = False
    start = time.perf_counter()
    for images, labels in loader:
        # Ranks hold unequal shards here (no padding), so no per-step collective under DDP.
        if not ctx.dist.enabled and ctx.stop_now():
            stopped = True
            break
        x = ctx.eval_input(images)
        y = labels.to(ctx.device)
        with ctx.autocast():
            logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction="sum").item()
        hits = (logits.argmax(1) == y).cpu().double()
        per_class_total.index_add_(0, labels, torch.ones_like(hits))
        per_class_correct.index_add_(0, labels, hits)
    totals = distributed.all_sum([loss_sum, *per_class_correct.tolist(), *per_class_total.tolist()], ctx.dist, ctx.device)
    loss_sum = totals[0]
    correct = totals[1:1 + num_classes]
    total = totals[1 + num_classes:]
    seen = sum(total)
    return {"loss": loss_sum / max(seen, 1), "accuracy": sum(correct) / max(seen, 1), "images": int(seen),
            "per_class_correct": [int(c) for c in correct], "per_class_total": [int(t) for t in total],
            "seconds": time.perf_counter() - start, "stopped": stopped}


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def lr_factor(config: TrainConfig, epoch_index: int) -> float:
    """Learning-rate multiplier for the 0-based epoch: linear warm-up, then cosine down to min_lr."""
    if epoch_index < config.warmup_epochs:
        return (epoch_index + 1) / (config.warmup_epochs + 1)
    if config.scheduler == "none":
        return 1.0
    span = max(config.epochs - config.warmup_epochs, 1)
    progress = (epoch_index - config.warmup_epochs) / span
    floor = config.min_lr / config.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(config: TrainConfig, optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(config, e))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _improved(config: TrainConfig, val: dict, best: dict | None) -> bool:
    if best is None:
        return True
    if config.monitor == "val_loss":
        return val["loss"] < best["val_loss"]
    return (val["accuracy"], -val["loss"]) > (best["val_accuracy"], -best["val_loss"])


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)
    tmp.replace(path)


def _loaders(config, image_size, samples, images, dist_info):
    train_ds = CachedImageDataset(images["train"], [s.label for s in samples["train"]], TrainCrop(config.hflip),
                                  seed=config.seed)
    train_sampler = EpochSampler(len(train_ds), shuffle=True, seed=config.seed, rank=dist_info.rank,
                                 world_size=dist_info.world_size, pad=True)
    loaders = {"train": make_loader(train_ds, train_sampler, batch_size=config.batch_size, workers=config.workers)}
    for split in ("val", "test"):
        ds = CachedImageDataset(images[split], [s.label for s in samples[split]], EvalCrop(image_size))
        sampler = EpochSampler(len(ds), shuffle=False, rank=dist_info.rank, world_size=dist_info.world_size, pad=False)
        loaders[split] = make_loader(ds, sampler, batch_size=config.batch_size, workers=0)
    return train_sampler, loaders


def _decode_all(samples, short_side, cache_dir, dist_info, should_stop):
    """Rank 0 decodes (and writes the disk cache) first; the other ranks then read that cache."""
    images = {}
    if dist_info.is_main:
        for split, items in samples.items():
            images[split] = build_cache(items, short_side, cache_dir=cache_dir, should_stop=should_stop)
    distributed.barrier(dist_info)
    if not dist_info.is_main:
        for split, items in samples.items():
            images[split] = build_cache(items, short_side, cache_dir=cache_dir)
    return images


def fit(
    config: TrainConfig, *, train: Sequence[Sample], val: Sequence[Sample], test: Sequence[Sample] = (),
    class_names: Sequence[str], run_dir: Path, resume: bool = False, cache_dir: Path | None = None,
    callbacks: Callbacks | None = None,
) -> dict:
    """Train per ``config``; return a summary (stop reason, best epoch and metrics, test metrics, timings).

    With ``resume`` it continues from ``run_dir/last.pt``: same epoch count, same schedule, same
    augmentation for every remaining epoch. Under torchrun every rank calls this; rank 0 writes.
    """
    callbacks = callbacks or Callbacks()
    run_dir = Path(run_dir)
    wall_start = time.perf_counter()
    set_threads(config.threads)
    seed_everything(config.seed)
    device = select_device(config.device)
    dist_info = distributed.setup(device.type)
    try:
        if dist_info.enabled and device.type == "cuda":
            device = torch.device("cuda", dist_info.local_rank)
        return _fit(config, train, val, test, list(class_names), run_dir, resume, cache_dir, callbacks,
                    device, dist_info, wall_start)
    finally:
        distributed.teardown()


def _fit(config, train, val, test, class_names, run_dir, resume, cache_dir, callbacks, device, dist_info, wall_start):
    arch = architectures.get(config.architecture)
    image_size = config.resolved_image_size()
    num_classes = len(class_names)
    amp_dtype = resolve_precision(config.precision, device, image_size)
    channels_last = config.channels_last == "on" or (config.channels_last == "auto" and amp_dtype is not None)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    checkpoint = load_checkpoint(run_dir / LAST) if resume else None
    if checkpoint is not None:
        if list(checkpoint["class_names"]) != class_names or checkpoint["architecture"] != config.architecture:
            raise CheckpointError("The checkpoint was made for other classes or another architecture; "
                                  "it cannot be resumed with this dataset and config.")
    # A resumed run takes every weight from the checkpoint, so it never needs the pretrained file again.
    model = arch.build(num_classes, weights="none" if checkpoint else config.weights)
    if checkpoint:
        model.load_state_dict(checkpoint["model"])
    model = model.to(device, memory_format=memory_format)
    parameters = count_parameters(model)

    samples = {"train": list(train), "val": list(val), "test": list(test)}
    decode_start = time.perf_counter()
    images = _decode_all(samples, resize_size(image_size), cache_dir, dist_info, callbacks.should_stop)
    decode_seconds = time.perf_counter() - decode_start
    train_sampler, loaders = _loaders(config, image_size, samples, images, dist_info)

    optimizer = build_optimizer(config, model)
    scheduler = build_scheduler(config, optimizer)
    start_epoch, best, bad_epochs, history = 1, None, 0, []
    if checkpoint:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        start_epoch = int(checkpoint["epoch"]) + 1
        best, bad_epochs, history = checkpoint.get("best"), int(checkpoint.get("bad_epochs", 0)), list(checkpoint["history"])
    if dist_info.enabled:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    augment = BatchAugment(config, image_size, arch.mean, arch.std, device=device, channels_last=channels_last,
                           rank=dist_info.rank, world_size=dist_info.world_size)
    ctx = StepContext(device=device, train_input=augment,
                      eval_input=BatchNormalizer(arch.mean, arch.std, device=device, channels_last=channels_last),
                      criterion=nn.CrossEntropyLoss(label_smoothing=config.label_smoothing), amp_dtype=amp_dtype,
                      dist=dist_info, should_stop=callbacks.should_stop)
    info = {"device": str(device), "precision": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
            "channels_last": channels_last, "parameters": parameters, "image_size": image_size,
            "num_classes": num_classes, "world_size": dist_info.world_size, "threads": torch.get_num_threads(),
            "start_epoch": start_epoch, "decode_seconds": decode_seconds, "train_images": len(train), "val_images": len(val), "test_images": len(test)}
    if dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(
            {"config": config.to_dict(), "class_names": class_names, "architecture": config.architecture,
             "input_size": image_size, "normalization": arch.normalization, **info}, indent=2), encoding="utf-8")
        logger.info("Training %s on %s (%s), %d parameters, epochs %d-%d", config.architecture, device,
                    info["precision"], parameters, start_epoch, config.epochs)
        if callbacks.on_start:
            callbacks.on_start(info)

    total_steps = max(config.epochs * max(len(loaders["train"]), 1), 1)

    def on_batch(done: int, batches: int) -> None:
        if callbacks.on_progress and dist_info.is_main:
            callbacks.on_progress(((epoch - 1) * batches + done) / total_steps)

    ctx.on_batch = on_batch
    stop_reason = "completed"
    timing_total = dict.fromkeys(("data", "augment", "forward", "backward"), 0.0)
    last_train = history[-1] if history else None
    epoch = start_epoch
    for epoch in range(start_epoch, config.epochs + 1):
        torch.manual_seed(item_seed(config.seed, epoch, -1))  # dropout: the same draw on a resumed run
        train_sampler.set_epoch(epoch)
        augment.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        tr = train_one_epoch(model, loaders["train"], optimizer, ctx)
        if tr["stopped"]:
            stop_reason = "cancelled"
            break
        va = evaluate(_unwrap(model), loaders["val"], ctx, num_classes=num_classes)
        if va["stopped"]:
            stop_reason = "cancelled"
            break
        scheduler.step()
        for key in timing_total:
            timing_total[key] += tr["timing"][key]
        row = {"epoch": epoch, "train_loss": tr["loss"], "train_accuracy": tr["accuracy"], "val_loss": va["loss"],
               "val_accuracy": va["accuracy"], "lr": lr, "seconds": tr["seconds"] + va["seconds"],
               "images_per_second": tr["images_per_second"], "timing": tr["timing"]}
        history.append(row)
        last_train = row
        improved = _improved(config, va, best)
        if improved:
            best = {"epoch": epoch, "val_accuracy": va["accuracy"], "val_loss": va["loss"],
                    "per_class_correct": va["per_class_correct"], "per_class_total": va["per_class_total"]}
            bad_epochs = 0
        else:
            bad_epochs += 1
        if dist_info.is_main:
            state = {"model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "epoch": epoch, "config": config.to_dict(),
                     "class_names": class_names, "architecture": config.architecture, "input_size": image_size,
                     "normalization": arch.normalization, "best": best, "bad_epochs": bad_epochs, "history": history}
            save_checkpoint(run_dir / LAST, state)
            if improved:
                save_checkpoint(run_dir / BEST, state)
            write_metrics_csv(run_dir / "metrics.csv", history)
            if callbacks.on_epoch:
                callbacks.on_epoch({**row, "best_epoch": best["epoch"], "improved": improved})
        if config.patience and bad_epochs >= config.patience:
            stop_reason = "early_stopping"
            break

    result = {**info, "stop_reason": stop_reason, "epochs_run": len(history), "best_epoch": best and best["epoch"],
              "best_val_accuracy": best and best["val_accuracy"], "best_val_loss": best and best["val_loss"],
              "final_train_accuracy": last_train and last_train["train_accuracy"],
              "final_train_loss": last_train and last_train["train_loss"],
              "timing": timing_total, "duration_seconds": time.perf_counter() - wall_start}
    if stop_reason != "cancelled" and best is not None and samples["test"]:
        if dist_info.is_main:
            _unwrap(model).load_state_dict(load_checkpoint(run_dir / BEST)["model"])
        distributed.barrier(dist_info)
        if dist_info.enabled:  # every rank needs the best weights to evaluate its shard
            for tensor in _unwrap(model).state_dict().values():
                torch.distributed.broadcast(tensor, src=0)
        te = evaluate(_unwrap(model), loaders["test"], ctx, num_classes=num_classes)
        result.update(test_accuracy=te["accuracy"], test_loss=te["loss"])
    return result


def export_best(run_dir: Path, path: Path, *, metrics: dict | None = None) -> dict:
    """Write the serving artifact from ``best.pt`` (or ``last.pt``); return what the registry needs."""
    run_dir = Path(run_dir)
    source = run_dir / BEST if (run_dir / BEST).is_file() else run_dir / LAST
    state = load_checkpoint(source)
    arch = architectures.get(state["architecture"])
    model = arch.build(len(state["class_names"]), weights="none")
    model.load_state_dict(state["model"])
    save_serving_artifact(path, model=model, architecture=state["architecture"], labels=list(state["class_names"]),
                          input_size=state["input_size"], normalization=state["normalization"], metrics=metrics)
    return {"architecture": state["architecture"], "labels": list(state["class_names"]),
            "input_size": int(state["input_size"]), "normalization": dict(state["normalization"]),
            "parameters": count_parameters(model), "path": Path(path), "size_bytes": Path(path).stat().st_size}
