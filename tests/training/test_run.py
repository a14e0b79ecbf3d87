import json
import uuid
from io import StringIO

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command

from apps.inference.models import ModelVersion
from apps.inference.services import file_sha256
from apps.ml.artifacts import load_serving_artifact
from apps.training import services
from apps.training.models import TrainingJob
from apps.training.signals import training_job_succeeded
from apps.training.tasks import launch_training_job

from .conftest import make_dataset_version


@pytest.mark.django_db
def test_train_job_trains_registers_a_model_version_and_signals(dataset_version, fast_config,
                                                               django_capture_on_commit_callbacks):
    job = services.training_job_start(dataset_version=dataset_version, config={**fast_config, "epochs": 4}, queue=False)
    heard = []

    def receiver(sender, job, model_version, **kwargs):
        heard.append((sender, job.pk, model_version.pk))

    training_job_succeeded.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            call_command("train_job", job.pk, stdout=StringIO())
    finally:
        training_job_succeeded.disconnect(receiver)
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.SUCCEEDED and job.stop_reason == "completed"
    assert list(job.epochs.values_list("epoch", flat=True)) == [1, 2, 3, 4]
    assert job.best_val_accuracy >= 0.8 and job.epochs_run == 4 and job.device == "cpu"
    assert job.parameters > 0 and job.size_bytes > 0 and job.duration_seconds > 0 and job.progress == 1.0
    mv = job.model_version
    assert heard == [(TrainingJob, job.pk, mv.pk)]
    assert mv.labels == ["char-0", "char-1", "char-2"] and mv.architecture == "simple" and mv.input_size == 32
    assert mv.training_job_id == job.pk and mv.dataset_version_id == dataset_version.pk
    assert mv.artifact_sha256 == file_sha256(mv.artifact_path) and mv.metrics["best_val_accuracy"] == job.best_val_accuracy
    model, meta = load_serving_artifact(mv.artifact_path)
    assert meta.labels == mv.labels and meta.normalization == mv.normalization
    # Registered calibrated: the temperature fitted on val (the artifact carries it too), and the gallery's
    # prototype scale fitted on val against train prototypes, through the weights that never saw val.
    calibration = mv.calibration
    assert calibration["fitted_by"] == "training" and calibration["split"] == "val"
    assert mv.temperature == pytest.approx(meta.temperature) and calibration["nll_after"] <= calibration["nll_before"]
    gallery = calibration["gallery"]
    assert gallery["fitted"] and gallery["scale"] > 0 and len(gallery["mean"]) > 0 and gallery["images"] > 0
    assert gallery["fitted_with"] == ("selection" if job.summary.get("refit") else "served")


@pytest.mark.django_db
def test_a_crash_is_recorded_with_its_traceback(db, fast_config):
    from apps.characters.models import DatasetItem, Image

    version = make_dataset_version("v-broken", train=4, val=2, test=0)
    good = version.items.select_related("image", "character").first()
    name = default_storage.save(f"images/broken/{uuid.uuid4().hex}.png", ContentFile(b"this is not an image"))
    broken = Image.objects.create(sha256=uuid.uuid4().hex * 2, file=name, format="PNG", width=40, height=40, bytes=20,
                                  phash=-1, phash_b0=-1, phash_b1=0, phash_b2=0, phash_b3=0, character=good.character,
                                  status="approved", source_kind="import")
    item = DatasetItem.objects.create(version=version, image=broken, character=good.character, split="train")
    job = services.training_job_start(dataset_version=version, config=fast_config, queue=False)
    with pytest.raises(Exception, match="could not be read or decoded"):
        call_command("train_job", job.pk, stdout=StringIO())
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.FAILED and job.stop_reason == "error"
    assert item.image.file.name in job.error
    assert job.traceback.startswith("Traceback") and "ImageRejected" in job.traceback
    assert job.model_version is None and not ModelVersion.objects.filter(training_job_id=job.pk).exists()


@pytest.mark.django_db
def test_train_job_refuses_a_finished_job(dataset_version, fast_config):
    job = services.training_job_start(dataset_version=dataset_version, config=fast_config, queue=False)
    services.training_job_cancel(job=job)
    with pytest.raises(CommandError, match="cannot be started again"):
        call_command("train_job", job.pk, stdout=StringIO())


@pytest.mark.slow
def test_train_command_sync_json_runs_a_child_process(launcher_env, fast_config):
    version = make_dataset_version("v-cli", train=8, val=3, test=2)
    out = StringIO()
    call_command("train", "--dataset-version", version.name, "--arch", "simple", "--epochs", "2", "--image-size", "32",
                 "--weights", "none", "--set", "workers=0", "--set", "threads=1", "--set", "lr=0.003", "--sync", "--json",
                 stdout=out)
    data = json.loads(out.getvalue())
    assert data["status"] == "succeeded" and data["epochs_run"] == 2
    assert data["parameters"] > 0 and data["size_bytes"] > 0 and data["best_val_accuracy"] is not None
    job = TrainingJob.objects.get(pk=data["id"])
    assert data["model_version"] == job.model_version.name and job.attempts == 1
    assert "launching" in open(job.log_path).read()  # the child's log is kept
    assert (data["weights_used"], data["weights_reason"]) == ("none", "asked for: weights none")
    assert data["recipe"] == "scratch" and data["test_accuracy"] is not None


@pytest.mark.slow
def test_default_weights_find_a_local_imagenet_file_and_fine_tune(launcher_env, settings, monkeypatch, tmp_path):
    """weights: auto with a file in KYARA_WEIGHTS_DIR (no internet): the job starts from it, with the
    original's fine-tuning recipe, and says so; without the file it trains from scratch and says why."""
    import torch

    from apps.ml.architectures import architectures

    version = make_dataset_version("v-weights", train=4, val=2, test=2)
    config = {"image_size": 32, "epochs": 1, "batch_size": 8, "workers": 0, "threads": 1}
    folder = tmp_path / "weights"
    folder.mkdir()
    settings.KYARA_WEIGHTS_DIR = folder
    monkeypatch.setenv("KYARA_WEIGHTS_DIR", str(folder))  # the training child process reads it too
    scratch = services.training_job_start(dataset_version=version, config=config, queue=False)
    torch.save(architectures.get("mobilenet_v2").build(1000, weights="none").state_dict(), folder / "mobilenet_v2.pth")
    pretrained = services.training_job_start(dataset_version=version, config=config, queue=False)
    launch_training_job(pretrained.pk)
    (folder / "mobilenet_v2.pth").unlink()
    launch_training_job(scratch.pk)
    pretrained.refresh_from_db()
    scratch.refresh_from_db()
    assert pretrained.status == scratch.status == TrainingJob.Status.SUCCEEDED, pretrained.error + scratch.error
    assert pretrained.weights_used == "file mobilenet_v2.pth" and pretrained.recipe == "finetune"
    assert "weights folder" in pretrained.weights_reason and pretrained.summary["refit"] is False
    assert scratch.weights_used == "none" and scratch.recipe == "scratch"
    assert "trains from scratch" in scratch.weights_reason and scratch.summary["refit"] is True


@pytest.mark.django_db
def test_train_command_refuses_bad_options(dataset_version):
    with pytest.raises(CommandError, match="unknown architecture 'nope'"):
        call_command("train", "--dataset-version", str(dataset_version.pk), "--arch", "nope", stdout=StringIO())
    with pytest.raises(CommandError, match="No dataset version"):
        call_command("train", "--dataset-version", "missing", stdout=StringIO())
