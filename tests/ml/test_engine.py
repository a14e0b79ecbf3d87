import csv
import json

import pytest
import torch

from apps.ml.artifacts import load_serving_artifact
from apps.ml.checkpoints import load_checkpoint
from apps.ml.config import TrainConfig
from apps.ml.device import resolve_precision, select_device
from apps.ml.engine import Callbacks, export_best, fit, lr_factor

BASE = {"architecture": "simple", "image_size": 32, "batch_size": 16, "lr": 3e-3, "workers": 0, "threads": 1}


def _fit(splits, run_dir, resume=False, callbacks=None, **overrides):
    config = TrainConfig.from_dict({**BASE, **overrides})
    return fit(config, train=splits["train"], val=splits["val"], test=splits["test"], class_names=["a", "b", "c"],
               run_dir=run_dir, resume=resume, callbacks=callbacks)


def test_training_beats_chance_and_leaves_a_run_folder(tiny_splits, tmp_path):
    epochs = []
    result = _fit(tiny_splits, tmp_path, epochs=4, callbacks=Callbacks(on_epoch=epochs.append))
    assert result["stop_reason"] == "completed" and result["epochs_run"] == 4
    assert result["best_val_accuracy"] >= 0.8  # chance is 1/3
    assert result["test_accuracy"] >= 0.7
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "metrics.csv", "last.pt", "best.pt"}
    with open(tmp_path / "metrics.csv") as handle:
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [1, 2, 3, 4]
    state = load_checkpoint(tmp_path / "last.pt")
    assert {"model", "optimizer", "scheduler", "epoch", "config", "class_names"} <= set(state)
    assert state["epoch"] == 4 and state["class_names"] == ["a", "b", "c"]
    assert json.loads((tmp_path / "config.json").read_text())["config"]["lr"] == 3e-3

    exported = export_best(tmp_path, tmp_path / "model.pt")
    model, meta = load_serving_artifact(tmp_path / "model.pt")
    assert meta.labels == ["a", "b", "c"] and meta.input_size == 32 and exported["parameters"] > 0


def test_a_stopped_run_resumes_to_the_same_weights_as_an_uninterrupted_one(tiny_splits, tmp_path):
    straight = _fit(tiny_splits, tmp_path / "straight", epochs=4, patience=0)
    done = []
    first = _fit(tiny_splits, tmp_path / "split", epochs=4, patience=0,
                 callbacks=Callbacks(on_epoch=done.append, should_stop=lambda: len(done) >= 2))
    assert first["stop_reason"] == "cancelled" and first["epochs_run"] == 2
    seen = []
    second = _fit(tiny_splits, tmp_path / "split", resume=True, epochs=4, patience=0,
                  callbacks=Callbacks(on_start=seen.append))
    assert seen[0]["start_epoch"] == 3 and second["epochs_run"] == 4
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    assert [h["lr"] for h in a["history"]] == [h["lr"] for h in b["history"]]
    for key, tensor in a["model"].items():
        assert torch.allclose(tensor.float(), b["model"][key].float(), atol=1e-5), key
    assert second["best_val_accuracy"] == pytest.approx(straight["best_val_accuracy"])


def test_early_stopping_stops_after_patience_epochs_without_improvement(tiny_splits, tmp_path):
    # A learning rate this small cannot keep improving for 20 epochs (only BatchNorm statistics move).
    result = _fit(tiny_splits, tmp_path, epochs=20, patience=2, lr=1e-12, scheduler="none")
    assert result["stop_reason"] == "early_stopping"
    assert result["epochs_run"] == result["best_epoch"] + 2 < 20


def test_warmup_then_cosine_schedule():
    config = TrainConfig.from_dict({"epochs": 10, "warmup_epochs": 2, "lr": 1.0, "min_lr": 0.1})
    factors = [lr_factor(config, e) for e in range(10)]
    assert factors[0] == pytest.approx(1 / 3) and factors[1] == pytest.approx(2 / 3) and factors[2] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(factors[2:], factors[3:], strict=False))
    assert factors[-1] > 0.1


def test_adamw_label_smoothing_and_bf16_autocast_train(tiny_splits, tmp_path):
    result = _fit(tiny_splits, tmp_path, epochs=2, optimizer="adamw", label_smoothing=0.1, precision="bf16",
                  channels_last="on")
    assert result["precision"] == "bfloat16" and result["channels_last"] is True
    assert result["best_val_accuracy"] > 0.34


def test_device_and_precision_choices():
    assert select_device("auto").type in ("cpu", "cuda", "mps")
    assert select_device("cpu").type == "cpu"
    assert resolve_precision("fp32", torch.device("cpu"), 224) is None
    assert resolve_precision("auto", torch.device("cpu"), 128) is None  # bf16 loses below ~192 px on CPU
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA was asked for"):
            select_device("cuda")
