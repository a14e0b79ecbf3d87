"""Training as plain functions: ``train_one_epoch`` and ``evaluate`` return dicts, ``fit`` runs a
whole job and leaves a folder (config.json, metrics.csv, last.pt, best.pt). No Django.

The caller (the training app, a script, the bench) turns the dicts into rows and decides what a
cancel means; ``fit`` only asks ``callbacks.should_stop()`` between steps.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
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
from .architectures import WeightsChoice, architectures, choose_weights, count_parameters
from .artifacts import save_serving_artifact
from .calibration import temperature_report
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
def evaluate(model: nn.Module, loader, ctx: StepContext, *, num_classes: int, keep_logits: bool = False) -> dict:
    """Loss, accuracy and per-class (correct, total) over ``loader``, summed over all ranks; with
    ``keep_logits``, this rank's logits and labels too (``logits``, ``targets``: what a temperature is fitted on)."""
    model.eval()
    loss_sum = 0.0
    per_class_correct = torch.zeros(num_classes, dtype=torch.float64)
    per_class_total = torch.zeros(num_classes, dtype=torch.float64)
    stopped = False
    start = time.perf_counter()
    kept_logits, kept_targets = [], []
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
        if keep_logits:
            kept_logits.append(logits.float().cpu().numpy())
            kept_targets.append(labels.numpy())
        hits = (logits.argmax(1) == y).cpu().double()
        per_class_total.index_add_(0, labels, torch.ones_like(hits))
        per_class_correct.index_add_(0, labels, hits)
    totals = distributed.all_sum([loss_sum, *per_class_correct.tolist(), *per_class_total.tolist()], ctx.dist, ctx.device)
    loss_sum = totals[0]
    correct = totals[1:1 + num_classes]
    total = totals[1 + num_classes:]
    seen = sum(total)
    result = {"loss": loss_sum / max(seen, 1), "accuracy": sum(correct) / max(seen, 1), "images": int(seen),
              "per_class_correct": [int(c) for c in correct], "per_class_total": [int(t) for t in total],
              "seconds": time.perf_counter() - start, "stopped": stopped}
    if keep_logits:
        result["logits"] = np.concatenate(kept_logits) if kept_logits else np.zeros((0, num_classes), np.float32)
        result["targets"] = np.concatenate(kept_targets) if kept_targets else np.zeros(0, np.int64)
    return result


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


class WeightEMA:
    """An exponential moving average of a model's weights (and BatchNorm statistics), updated every step.

    The decay ramps up as ``(1 + n) / (10 + n)`` (timm's warm-up), so a short run still averages over a
    sensible window; the average, not the raw weights, is what gets validated and served.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(_unwrap(model)).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for mine, theirs in zip(self.module.state_dict().values(), _unwrap(model).state_dict().values(), strict=True):
            if mine.dtype.is_floating_point:
                mine.mul_(decay).add_(theirs.detach(), alpha=1 - decay)
            else:
                mine.copy_(theirs)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


def class_weights(labels: Sequence[int], num_classes: int, power: float) -> torch.Tensor | None:
    """Loss weights ∝ count^-power, scaled so the average image still weighs 1; ``None`` when off."""
    if not power:
        return None
    counts = torch.bincount(torch.as_tensor(list(labels), dtype=torch.long), minlength=num_classes).double()
    weights = torch.where(counts > 0, counts.clamp(min=1) ** -power, torch.zeros_like(counts))
    weights *= counts.sum() / (weights * counts).sum()
    return weights.float()


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


@dataclass
class _Run:
    """Everything one ``fit`` call holds: its resolved config, where it runs, its decoded images."""

    config: TrainConfig  # resolved: every recipe value filled in
    weights: WeightsChoice
    class_names: list[str]
    run_dir: Path
    device: torch.device
    dist: distributed.DistInfo
    callbacks: Callbacks
    wall_start: float
    images: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    labels: dict[str, list[int]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.arch = architectures.get(self.config.architecture)
        self.image_size = self.config.resolved_image_size()
        self.num_classes = len(self.class_names)
        self.amp_dtype = resolve_precision(self.config.precision, self.device, self.image_size)
        self.channels_last = self.config.channels_last == "on" or (
            self.config.channels_last == "auto" and self.amp_dtype is not None)
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format

    # --- pieces ---------------------------------------------------------------------------------------

    def new_model(self, state: dict | None = None) -> nn.Module:
        # A resumed run takes every weight from its checkpoint, so it never needs the pretrained file again.
        model = self.arch.build(self.num_classes, weights="none" if state else self.weights.spec)
        if state:
            model.load_state_dict(state)
        return model.to(self.device, memory_format=self.memory_format)

    def train_loader(self, splits: Sequence[str], config: TrainConfig) -> tuple[EpochSampler, object]:
        images = [img for split in splits for img in self.images[split]]
        labels = [label for split in splits for label in self.labels[split]]
        dataset = CachedImageDataset(images, labels, TrainCrop(config.hflip), seed=config.seed)
        sampler = EpochSampler(len(dataset), shuffle=True, seed=config.seed, rank=self.dist.rank,
                               world_size=self.dist.world_size, pad=True)
        return sampler, make_loader(dataset, sampler, batch_size=config.batch_size, workers=config.workers)

    def eval_loader(self, split: str):
        dataset = CachedImageDataset(self.images[split], self.labels[split], EvalCrop(self.image_size))
        sampler = EpochSampler(len(dataset), shuffle=False, rank=self.dist.rank, world_size=self.dist.world_size,
                               pad=False)
        return make_loader(dataset, sampler, batch_size=self.config.batch_size, workers=0)

    def step_context(self, config: TrainConfig, splits: Sequence[str]) -> tuple[StepContext, BatchAugment]:
        labels = [label for split in splits for label in self.labels[split]]
        weight = class_weights(labels, self.num_classes, config.class_weighting)
        augment = BatchAugment(config, self.image_size, self.arch.mean, self.arch.std, device=self.device,
                               channels_last=self.channels_last, rank=self.dist.rank, world_size=self.dist.world_size)
        ctx = StepContext(
            device=self.device, train_input=augment,
            eval_input=BatchNormalizer(self.arch.mean, self.arch.std, device=self.device,
                                       channels_last=self.channels_last),
            criterion=nn.CrossEntropyLoss(weight=None if weight is None else weight.to(self.device),
                                          label_smoothing=config.label_smoothing),
            amp_dtype=self.amp_dtype, dist=self.dist, should_stop=self.callbacks.should_stop)
        return ctx, augment

    def state(self, model, ema, optimizer, scheduler, epoch: int, config: TrainConfig, **extra) -> dict:
        return {"model": _unwrap(model).state_dict(), "ema": ema.state_dict() if ema else None,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch,
                "config": config.to_dict(), "class_names": self.class_names, "architecture": config.architecture,
                "input_size": self.image_size, "normalization": self.arch.normalization,
                "weights": dataclasses.asdict(self.weights), **extra}

    def progress(self, fraction: float) -> None:
        if self.callbacks.on_progress and self.dist.is_main:
            self.callbacks.on_progress(min(fraction, 1.0))

    # --- phases ---------------------------------------------------------------------------------------

    def phase(self, name: str, config: TrainConfig, splits: Sequence[str], *, checkpoint: dict | None,
              validate: bool, progress: tuple[float, float]) -> dict:
        """Train ``config.epochs`` epochs on ``splits``; with ``validate``, evaluate val after each, keep
        ``best.pt`` and stop early per ``patience``. Every epoch leaves ``<name>.pt`` to resume from."""
        model = self.new_model(checkpoint["model"] if checkpoint else None)
        ema = WeightEMA(model, config.ema_decay) if config.ema_decay else None
        optimizer = build_optimizer(config, model)
        scheduler = build_scheduler(config, optimizer)
        start_epoch, best, bad_epochs, history = 1, None, 0, []
        if checkpoint:
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            if ema and checkpoint.get("ema"):
                ema.load_state_dict(checkpoint["ema"])
            start_epoch = int(checkpoint["epoch"]) + 1
            best, bad_epochs = checkpoint.get("best"), int(checkpoint.get("bad_epochs", 0))
            history = list(checkpoint.get("history", []))
        if self.dist.enabled:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        sampler, loader = self.train_loader(splits, config)
        val_loader = self.eval_loader("val") if validate else None
        ctx, augment = self.step_context(config, splits)
        steps = max(config.epochs * max(len(loader), 1), 1)
        low, high = progress
        timing_total = dict.fromkeys(("data", "augment", "forward", "backward"), 0.0)
        stop_reason, epoch = "completed", start_epoch

        def on_batch(done: int, batches: int) -> None:
            self.progress(low + (high - low) * ((epoch - 1) * batches + done) / steps)
            if ema:
                ema.update(model)

        ctx.on_batch = on_batch
        for epoch in range(start_epoch, config.epochs + 1):
            if validate and config.patience and bad_epochs >= config.patience:
                stop_reason = "early_stopping"  # a resumed run that had already stopped trains no further
                break
            torch.manual_seed(item_seed(config.seed, epoch, -1))  # dropout: the same draw on a resumed run
            sampler.set_epoch(epoch)
            augment.set_epoch(epoch)
            lr = optimizer.param_groups[0]["lr"]
            tr = train_one_epoch(model, loader, optimizer, ctx)
            if tr["stopped"]:
                stop_reason = "cancelled"
                break
            served = ema.module if ema else _unwrap(model)
            row = {"epoch": epoch, "train_loss": tr["loss"], "train_accuracy": tr["accuracy"], "lr": lr,
                   "seconds": tr["seconds"], "images_per_second": tr["images_per_second"], "timing": tr["timing"]}
            if validate:
                va = evaluate(served, val_loader, ctx, num_classes=self.num_classes, keep_logits=True)
                if va["stopped"]:
                    stop_reason = "cancelled"
                    break
                row.update(val_loss=va["loss"], val_accuracy=va["accuracy"], seconds=tr["seconds"] + va["seconds"])
            scheduler.step()
            for key in timing_total:
                timing_total[key] += tr["timing"][key]
            history.append(row)
            improved = validate and _improved(config, va, best)
            if improved:
                best = {"epoch": epoch, "val_accuracy": va["accuracy"], "val_loss": va["loss"],
                        "per_class_correct": va["per_class_correct"], "per_class_total": va["per_class_total"],
                        # What the served weights' confidence means: a temperature fitted on this epoch's val
                        # logits, images these weights never trained on (the refit inherits it: see _fit).
                        "calibration": temperature_report(va["logits"], va["targets"], split="val")}
                bad_epochs = 0
            elif validate:
                bad_epochs += 1
            if self.dist.is_main:
                state = self.state(model, ema, optimizer, scheduler, epoch, config, best=best, bad_epochs=bad_epochs,
                                   history=history, phase=name)
                save_checkpoint(self.run_dir / f"{name}.pt", state)
                if improved:
                    save_checkpoint(self.run_dir / BEST, state)
                if validate:
                    write_metrics_csv(self.run_dir / "metrics.csv", history)
                    if self.callbacks.on_epoch:
                        self.callbacks.on_epoch({**row, "best_epoch": best["epoch"], "improved": improved})
                else:
                    logger.info("%s epoch %d/%d: train loss %.4f acc %.3f, lr %.2e", name, epoch, config.epochs,
                                tr["loss"], tr["accuracy"], lr)
        else:
            if validate and config.patience and bad_epochs >= config.patience:
                stop_reason = "early_stopping"
        return {"stop_reason": stop_reason, "history": history, "best": best, "timing": timing_total}


def fit(
    config: TrainConfig, *, train: Sequence[Sample], val: Sequence[Sample], class_names: Sequence[str], run_dir: Path,
    resume: bool = False, cache_dir: Path | None = None, callbacks: Callbacks | None = None,
    weights_dir: Path | None = None, download_weights: bool = False,
) -> dict:
    """Train per ``config``; return a summary (stop reason, best epoch and val metrics, weights, timings).

    The run starts from the weights ``choose_weights`` picks (``weights: auto`` says why in
    ``weights_reason``) and takes every unset hyperparameter from the recipe that fits them. It trains on
    ``train``, picks the epoch on ``val`` (``best.pt``), and with ``refit`` trains once more on train + val
    for that many epochs (``refit.pt``); ``export_best`` serves the last of these. Test images are never
    seen here: the caller measures the exported model through the serving predictor.

    With ``resume`` it continues from the last checkpoint: same epochs, schedule and augmentation. Under
    torchrun every rank calls this; rank 0 writes.
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
        checkpoints = _resume_points(run_dir, class_names, config.architecture) if resume else {}
        first = checkpoints.get(REFIT) or checkpoints.get(LAST)
        if first and first.get("weights"):
            weights = WeightsChoice(**first["weights"])  # the decision the run started with, not a new one
        else:
            weights = choose_weights(config.architecture, config.weights, weights_dir=weights_dir,
                                     download=download_weights)
        run = _Run(config=config.resolved(weights.source), weights=weights, class_names=list(class_names),
                   run_dir=run_dir, device=device, dist=dist_info, callbacks=callbacks, wall_start=wall_start)
        return _fit(run, {"train": list(train), "val": list(val)}, checkpoints, cache_dir)
    finally:
        distributed.teardown()


REFIT = "refit.pt"


def _resume_points(run_dir: Path, class_names, architecture: str) -> dict:
    found = {}
    for name in (LAST, REFIT):
        if (run_dir / name).is_file():
            state = load_checkpoint(run_dir / name)
            if list(state["class_names"]) != list(class_names) or state["architecture"] != architecture:
                raise CheckpointError("The checkpoint was made for other classes or another architecture; "
                                      "it cannot be resumed with this dataset and config.")
            found[name] = state
    if LAST not in found:
        load_checkpoint(run_dir / LAST)  # raises: nothing to resume from
    return found


def _mean_class_accuracy(best: dict) -> float | None:
    rates = [c / t for c, t in zip(best["per_class_correct"], best["per_class_total"], strict=True) if t]
    return sum(rates) / len(rates) if rates else None


def _fit(run: _Run, samples: dict[str, list[Sample]], checkpoints: dict, cache_dir: Path | None) -> dict:
    config = run.config
    decode_start = time.perf_counter()
    run.images = _decode_all(samples, resize_size(run.image_size), cache_dir, run.dist, run.callbacks.should_stop)
    run.labels = {split: [s.label for s in items] for split, items in samples.items()}
    refit = bool(config.refit and samples["val"])
    info = {"device": str(run.device), "precision": str(run.amp_dtype).replace("torch.", "") if run.amp_dtype else "fp32",
            "channels_last": run.channels_last, "parameters": count_parameters(run.arch.build(run.num_classes)),
            "image_size": run.image_size, "num_classes": run.num_classes, "world_size": run.dist.world_size,
            "threads": torch.get_num_threads(), "decode_seconds": time.perf_counter() - decode_start,
            "train_images": len(samples["train"]), "val_images": len(samples["val"]),
            "weights": run.weights.source, "weights_reason": run.weights.reason, "recipe": config.recipe,
            "refit": refit, "start_epoch": int(checkpoints[LAST]["epoch"]) + 1 if LAST in checkpoints else 1}
    if run.dist.is_main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        (run.run_dir / "config.json").write_text(json.dumps(
            {"config": config.to_dict(), "class_names": run.class_names, "architecture": config.architecture,
             "input_size": run.image_size, "normalization": run.arch.normalization, **info}, indent=2), encoding="utf-8")
        logger.info("Training %s on %s (%s), recipe %s, epochs %d-%d; %s", config.architecture, run.device,
                    info["precision"], config.recipe, info["start_epoch"], config.epochs, run.weights.reason)
        if run.callbacks.on_start:
            run.callbacks.on_start(info)

    split_at = 0.5 if refit else 1.0
    if REFIT in checkpoints:  # the selection phase finished before the refit began
        selected = {"stop_reason": "completed", "history": list(checkpoints[LAST].get("history", [])),
                    "best": checkpoints[LAST].get("best"), "timing": {}}
    else:
        selected = run.phase("last", config, ["train"], checkpoint=checkpoints.get(LAST), validate=True,
                             progress=(0.0, split_at))
    best, history = selected["best"], selected["history"]
    last_row = history[-1] if history else None
    result = {**info, "config": config.to_dict(), "stop_reason": selected["stop_reason"], "epochs_run": len(history),
              "best_epoch": best and best["epoch"], "best_val_accuracy": best and best["val_accuracy"],
              "best_val_loss": best and best["val_loss"],
              "best_val_mean_class_accuracy": best and _mean_class_accuracy(best),
              "calibration": best and best.get("calibration"),
              "final_train_accuracy": last_row and last_row["train_accuracy"],
              "final_train_loss": last_row and last_row["train_loss"], "timing": selected["timing"]}
    if refit and selected["stop_reason"] != "cancelled" and best is not None:
        # The epoch count the selection chose: where early stopping stopped it, else the whole schedule (a
        # shorter cosine is another schedule, not the first epochs of this one).
        epochs = int(best["epoch"]) if selected["stop_reason"] == "early_stopping" else config.epochs
        if REFIT in checkpoints:  # resuming the refit: its own checkpoint knows how long it is
            epochs = int(checkpoints[REFIT]["config"]["epochs"])
        refit_config = dataclasses.replace(config, epochs=epochs, warmup_epochs=min(config.warmup_epochs, epochs - 1))
        done = run.phase("refit", refit_config, ["train", "val"], checkpoint=checkpoints.get(REFIT),
                         validate=False, progress=(split_at, 1.0))
        if done["stop_reason"] == "cancelled":
            result["stop_reason"] = "cancelled"
        result.update(refit_epochs=refit_config.epochs, refit_images=len(samples["train"]) + len(samples["val"]))
    result["duration_seconds"] = time.perf_counter() - run.wall_start
    return result


def export_best(run_dir: Path, path: Path, *, metrics: dict | None = None, selection: bool = False) -> dict:
    """Write the serving artifact from ``refit.pt``, else ``best.pt``, else ``last.pt`` (their weight average
    when the run kept one: what validation measured); return what the registry needs. ``selection``: skip the
    refit (the weights val judged, for what must be fitted on images the model did not train on)."""
    run_dir = Path(run_dir)
    names = (BEST, LAST) if selection else (REFIT, BEST, LAST)
    source = next(run_dir / name for name in names if (run_dir / name).is_file() or name == LAST)
    state = load_checkpoint(source)
    arch = architectures.get(state["architecture"])
    model = arch.build(len(state["class_names"]), weights="none")
    model.load_state_dict(state["ema"]["module"] if state.get("ema") else state["model"])
    calibration = selection_calibration(run_dir, state)
    save_serving_artifact(path, model=model, architecture=state["architecture"], labels=list(state["class_names"]),
                          input_size=state["input_size"], normalization=state["normalization"], metrics=metrics,
                          calibration=calibration)
    return {"architecture": state["architecture"], "labels": list(state["class_names"]), "calibration": calibration,
            "input_size": int(state["input_size"]), "normalization": dict(state["normalization"]),
            "parameters": count_parameters(model), "path": Path(path), "size_bytes": Path(path).stat().st_size}


def selection_calibration(run_dir: Path, state: dict | None = None) -> dict | None:
    """The temperature the served weights get: fitted on the best selection epoch's val logits. A refit has
    trained on val, so no unseen split is left for it; it inherits the selection's temperature (same recipe,
    same schedule, a few more images), and ``evaluate`` on test shows the ECE that gives."""
    best = (state or {}).get("best")
    if not (best and best.get("calibration")) and (Path(run_dir) / BEST).is_file():
        best = load_checkpoint(Path(run_dir) / BEST).get("best")
    calibration = dict(best["calibration"]) if best and best.get("calibration") else None
    if calibration and (Path(run_dir) / REFIT).is_file():
        calibration["inherited_by_refit"] = True
    return calibration
