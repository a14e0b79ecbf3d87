import csv
import json

import pytest
import torch

from apps.ml.artifacts import load_serving_artifact
from apps.ml.calibration import fit_temperature, logits_of, softmax
from apps.ml.checkpoints import load_checkpoint
from apps.ml.config import TrainConfig
from apps.ml.device import resolve_precision, select_device
from apps.ml.engine import Callbacks, class_weights, export_best, fit, lr_factor
from apps.ml.runtime import load_predictor

# The original recipe's shape (no refit, no weight average) unless a test asks for the scratch recipe.
BASE = {"architecture": "simple", "image_size": 32, "batch_size": 16, "lr": 3e-3, "workers": 0, "threads": 1,
        "recipe": "finetune"}


def _fit(splits, run_dir, resume=False, callbacks=None, **overrides):
    config = TrainConfig.from_dict({**BASE, **overrides})
    return fit(config, train=splits["train"], val=splits["val"], class_names=["a", "b", "c"],
               run_dir=run_dir, resume=resume, callbacks=callbacks)


def _served_accuracy(run_dir, samples) -> float:
    """Export the run and measure it the way the server does (the serving predictor on the files)."""
    export_best(run_dir, run_dir / "served.pt")
    predictor = load_predictor(run_dir / "served.pt", backend="torch")
    return predictor.predict_many(sample.read() for sample in samples).accuracy([s.label for s in samples])


def test_training_beats_chance_and_leaves_a_run_folder(tiny_splits, tmp_path):
    epochs = []
    result = _fit(tiny_splits, tmp_path, epochs=4, callbacks=Callbacks(on_epoch=epochs.append))
    assert result["stop_reason"] == "completed" and result["epochs_run"] == 4
    assert result["best_val_accuracy"] >= 0.8  # chance is 1/3
    assert "test_accuracy" not in result  # fit never sees the test split; the caller measures the served model
    assert _served_accuracy(tmp_path, tiny_splits["test"]) >= 0.7
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


def test_the_served_model_scores_on_val_exactly_what_training_reported(tiny_splits, tmp_path):
    """The validation number comes from the cached tensors; the serving predictor decodes the files
    itself. With one eval geometry they are the same number (here with the weight average on)."""
    result = _fit(tiny_splits, tmp_path, epochs=3, patience=0, ema_decay=0.9)
    assert _served_accuracy(tmp_path, tiny_splits["val"]) == pytest.approx(result["best_val_accuracy"])

    # The temperature was fitted on the best epoch's val logits, travels with the artifact, and is what the
    # serving predictor applies; fitted again on the served model's raw val answers it is the same number.
    calibration = result["calibration"]
    assert calibration["split"] == "val" and calibration["images"] == len(tiny_splits["val"])
    assert calibration["nll_after"] <= calibration["nll_before"] + 1e-9
    _, meta = load_serving_artifact(tmp_path / "served.pt")
    assert meta.temperature == pytest.approx(calibration["temperature"]) and meta.temperature != 1.0
    predictor = load_predictor(tmp_path / "served.pt", backend="torch")
    assert predictor.temperature == pytest.approx(calibration["temperature"])
    raw = predictor.predict_many([s.read() for s in tiny_splits["val"]], raw=True)
    labels = [s.label for s in tiny_splits["val"]]
    assert fit_temperature(logits_of(raw.probabilities), labels) == pytest.approx(calibration["temperature"], rel=1e-3)
    served = predictor.predict_many([s.read() for s in tiny_splits["val"]]).probabilities
    assert served == pytest.approx(softmax(logits_of(raw.probabilities), calibration["temperature"]), abs=1e-5)


def test_scratch_recipe_refits_on_train_and_val_and_serves_the_refit(tiny_splits, tmp_path):
    result = _fit(tiny_splits, tmp_path, epochs=3, recipe="scratch", lr=None)
    assert result["recipe"] == "scratch" and result["refit"] is True and result["weights"] == "none"
    assert result["refit_epochs"] == 3 and result["refit_images"] == 48 + 18  # the whole schedule again
    refit = load_checkpoint(tmp_path / "refit.pt")
    assert refit["epoch"] == 3 and refit["ema"] is not None
    assert refit["config"]["lr"] == 2e-3 and refit["config"]["ema_decay"] == 0.998
    model, meta = load_serving_artifact(export_best(tmp_path, tmp_path / "m.pt")["path"])
    # No unseen split is left after a refit: it serves with the selection's temperature, and says so.
    assert meta.calibration["inherited_by_refit"] is True
    assert meta.temperature == pytest.approx(result["calibration"]["temperature"])
    for key, tensor in model.state_dict().items():  # the artifact holds the refit's weight average
        assert torch.equal(tensor, refit["ema"]["module"][key]), key


def test_an_interrupted_refit_resumes_where_it_stopped(tiny_splits, tmp_path):
    straight = _fit(tiny_splits, tmp_path / "straight", epochs=3, recipe="scratch", lr=None, ema_decay=0)
    calls = []

    def stop_in_refit():  # the selection phase polls per step; stop after it has handed over to the refit
        calls.append(1)
        return (tmp_path / "split" / "refit.pt").is_file()

    first = _fit(tiny_splits, tmp_path / "split", epochs=3, recipe="scratch", lr=None, ema_decay=0,
                 callbacks=Callbacks(should_stop=stop_in_refit))
    assert first["stop_reason"] == "cancelled" and first["epochs_run"] == 3
    second = _fit(tiny_splits, tmp_path / "split", resume=True, epochs=3, recipe="scratch", lr=None, ema_decay=0)
    assert second["stop_reason"] == "completed"
    a = load_checkpoint(tmp_path / "straight" / "refit.pt")
    b = load_checkpoint(tmp_path / "split" / "refit.pt")
    assert a["epoch"] == b["epoch"] == straight["refit_epochs"] == 3
    for key, tensor in a["model"].items():
        assert torch.allclose(tensor.float(), b["model"][key].float(), atol=1e-5), key


def test_class_weights_lift_rare_classes_and_keep_the_average_image_at_one():
    labels = [0] * 90 + [1] * 10
    weights = class_weights(labels, 3, 0.5)
    assert weights[1] / weights[0] == pytest.approx(3.0)  # sqrt(90 / 10)
    assert (weights[0] * 90 + weights[1] * 10) / 100 == pytest.approx(1.0)
    assert weights[2] == 0  # a class without images weighs nothing
    assert class_weights(labels, 3, 0.0) is None


def test_a_refit_after_early_stopping_runs_the_epochs_early_stopping_chose(tiny_splits, tmp_path):
    result = _fit(tiny_splits, tmp_path, epochs=20, recipe="scratch", patience=2, lr=1e-12, scheduler="none",
                  ema_decay=0)
    assert result["stop_reason"] == "early_stopping" and result["best_epoch"] < 18
    assert result["refit_epochs"] == result["best_epoch"]
    assert load_checkpoint(tmp_path / "refit.pt")["epoch"] == result["best_epoch"]
