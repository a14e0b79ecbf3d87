"""Real processes: a qcluster worker, the training child, SIGKILL and resume, cancel, a 2-process DDP run."""
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from apps.core.jobs import process_alive
from apps.ml.artifacts import load_serving_artifact
from apps.training import services
from apps.training.models import TrainingJob
from apps.training.tasks import launch_training_job
from tests.conftest import ROOT, child_env, wait_for

from .conftest import make_dataset_version

pytestmark = [pytest.mark.slow, pytest.mark.queue]


def _status(job):
    job.refresh_from_db()
    return job.status


@pytest.mark.backend
def test_a_real_worker_trains_a_job_end_to_end(qcluster, fast_config):
    version = make_dataset_version("v-worker", train=8, val=3, test=2)
    job = services.training_job_start(dataset_version=version, config={**fast_config, "epochs": 3})
    wait_for(lambda: _status(job) not in TrainingJob.ACTIVE, timeout=150, message="the job to finish in the worker")
    assert job.status == TrainingJob.Status.SUCCEEDED, job.error + job.traceback
    assert job.epochs.count() == 3 and job.attempts == 1 and job.pid != os.getpid()
    assert job.model_version.training_job_id == job.pk
    assert load_serving_artifact(job.model_version.artifact_path)[1].labels == ["char-0", "char-1", "char-2"]


@pytest.mark.backend
def test_cancel_through_the_api_stops_a_running_job_within_seconds(qcluster, fast_config, staff_api_client):
    version = make_dataset_version("v-cancel", train=8, val=3, test=0)
    job = services.training_job_start(dataset_version=version, config={**fast_config, "epochs": 500, "patience": 0})
    wait_for(lambda: job.epochs.exists(), timeout=150, message="the first epoch")
    pid = TrainingJob.objects.get(pk=job.pk).pid
    asked = time.monotonic()
    response = staff_api_client.post(f"/api/v1/training-jobs/{job.pk}/cancel/")
    assert response.status_code == 200 and response.json()["cancel_requested"] is True
    wait_for(lambda: _status(job) == TrainingJob.Status.CANCELLED, timeout=30, interval=0.1, message="the cancel")
    assert time.monotonic() - asked < 8
    assert job.stop_reason == "cancelled" and job.epochs_run < 500 and job.model_version is None
    wait_for(lambda: not process_alive(pid), timeout=10, message="the training process to exit")


@pytest.mark.backend
def test_a_killed_training_process_is_detected_and_resumes_from_its_last_checkpoint(launcher_env, fast_config):
    version = make_dataset_version("v-kill", train=8, val=3, test=2)
    config = {**fast_config, "epochs": 40, "patience": 0, "warmup_epochs": 0}
    job = services.training_job_start(dataset_version=version, config=config, queue=False)
    outcome = {}
    launcher = threading.Thread(target=lambda: outcome.update(launch_training_job(job.pk)))
    launcher.start()
    wait_for(lambda: job.epochs.count() >= 2, timeout=120, interval=0.05, message="two epochs")
    pid = TrainingJob.objects.get(pk=job.pk).pid
    os.kill(pid, signal.SIGKILL)
    launcher.join(timeout=30)
    job.refresh_from_db()
    assert outcome["returncode"] == -signal.SIGKILL
    assert job.status == TrainingJob.Status.FAILED and job.stop_reason == "lost"
    assert "killed by signal 9" in job.error
    killed_at = job.epochs.count()
    assert 2 <= killed_at < 40

    services.training_job_resume(job=job, queue=False)
    assert launch_training_job(job.pk)["returncode"] == 0
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.SUCCEEDED, job.error + job.traceback
    assert job.attempts == 2 and job.epochs_run == 40
    assert list(job.epochs.values_list("epoch", flat=True)) == list(range(1, 41))
    log = open(job.log_path).read()
    starts = [int(n) for n in re.findall(r"epochs (\d+)-40", log)]
    assert "--resume" in log and starts[0] == 1 and killed_at + 1 <= starts[-1] <= killed_at + 2
    lrs = list(job.epochs.values_list("lr", flat=True))
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))  # one cosine schedule across both processes


def test_two_process_gloo_ddp_run_produces_a_normal_artifact(transactional_db, fast_config):
    version = make_dataset_version("v-ddp", train=8, val=3, test=2)
    job = services.training_job_start(dataset_version=version, config={**fast_config, "epochs": 2}, queue=False)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "manage.py",
         "train_job", str(job.pk)],
        cwd=ROOT, env=child_env(KYARA_TRAINING_THREADS="1", OMP_NUM_THREADS="1"), capture_output=True, text=True,
        timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.SUCCEEDED and job.world_size == 2 and job.epochs_run == 2
    model, meta = load_serving_artifact(job.model_version.artifact_path)
    assert meta.labels == ["char-0", "char-1", "char-2"] and job.model_version.parameters == job.parameters
    assert job.summary["train_images"] == 24 and job.best_val_accuracy is not None


@pytest.mark.backend
def test_sigterm_without_a_cancel_stops_cleanly_and_leaves_the_job_resumable(transactional_db, fast_config):
    version = make_dataset_version("v-term", train=8, val=3, test=0)
    job = services.training_job_start(dataset_version=version, config={**fast_config, "epochs": 500, "patience": 0},
                                      queue=False)
    proc = subprocess.Popen([sys.executable, "manage.py", "train_job", str(job.pk)], cwd=ROOT,
                            env=child_env(KYARA_TRAINING_THREADS="1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_for(lambda: job.epochs.exists(), timeout=120, message="the first epoch")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.FAILED and job.stop_reason == "interrupted"
    assert "signal 15" in job.error and job.has_checkpoint
    assert services.training_job_resume(job=job, queue=False).status == TrainingJob.Status.QUEUED
