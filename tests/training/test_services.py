import os
import subprocess
import sys

import pytest

from apps.core.api import ServiceError
from apps.core.jobs import jobs_mark_lost
from apps.training import services
from apps.training.models import TrainingJob
from apps.training.tasks import launch_training_job

from .conftest import make_dataset_version

pytestmark = pytest.mark.django_db


@pytest.mark.backend
def test_start_stores_the_full_config_and_queues_one_launch(dataset_version, fast_config, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        job = services.training_job_start(dataset_version=dataset_version, config={**fast_config, "epochs": 3})
    assert job.status == TrainingJob.Status.QUEUED and len(callbacks) == 1
    # What was asked, in full; a recipe value left unset (None) is filled in when the run knows its weights.
    assert job.config["epochs"] == 3 and job.config["weights"] == "auto" and job.config["recipe"] == "auto"
    assert job.config["weight_decay"] is None and job.config["patience"] is None and job.config["lr"] == 3e-3
    assert f"/job-{job.pk}-" in job.run_dir and "simple" in job.name


def test_a_bad_config_is_refused_with_a_clear_message(dataset_version):
    with pytest.raises(ServiceError) as info:
        services.training_job_start(dataset_version=dataset_version, config={"architecture": "vgg", "epochs": -2})
    assert info.value.code == "invalid_config"
    assert "unknown architecture 'vgg'" in info.value.message and "epochs must be at least 1" in info.value.message
    assert not TrainingJob.objects.exists()


def test_a_dataset_with_one_character_is_refused(db, fast_config):
    version = make_dataset_version("one-class", classes=1, train=3, val=1, test=0)
    with pytest.raises(ServiceError, match="at least 2") as info:
        services.training_job_start(dataset_version=version, config=fast_config)
    assert info.value.code == "dataset_unusable"


def test_cancel_a_queued_job_at_once_and_refuse_finished_ones(dataset_version, fast_config):
    job = services.training_job_start(dataset_version=dataset_version, config=fast_config, queue=False)
    job = services.training_job_cancel(job=job)
    assert job.status == TrainingJob.Status.CANCELLED and job.stop_reason == "cancelled"
    with pytest.raises(ServiceError) as info:
        services.training_job_cancel(job=job)
    assert info.value.code == "not_cancellable" and info.value.status_code == 409
    # The launch task that was queued before the cancel does nothing now.
    assert launch_training_job(job.pk)["launched"] is False


def test_resume_needs_a_failed_or_cancelled_job_with_a_checkpoint(dataset_version, fast_config):
    job = services.training_job_start(dataset_version=dataset_version, config=fast_config, queue=False)
    with pytest.raises(ServiceError, match="only failed or cancelled"):
        services.training_job_resume(job=job)
    services.training_job_cancel(job=job)
    with pytest.raises(ServiceError) as info:
        services.training_job_resume(job=job)
    assert info.value.code == "no_checkpoint"


@pytest.mark.backend
def test_a_job_is_launched_at_most_once(dataset_version, fast_config):
    job = services.training_job_start(dataset_version=dataset_version, config=fast_config, queue=False)
    assert services.training_job_mark_launched(job_id=job.pk)
    assert services.training_job_mark_launched(job_id=job.pk) is None


@pytest.mark.backend
def test_a_running_job_whose_process_is_gone_is_marked_lost_and_resumable(dataset_version, fast_config):
    job = services.training_job_start(dataset_version=dataset_version, config=fast_config, queue=False)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    claimed = services.training_job_claim(job_id=job.pk)
    TrainingJob.objects.filter(pk=job.pk).update(pid=dead.pid)
    assert claimed.pid == os.getpid() and claimed.attempts == 1
    assert jobs_mark_lost() == {"training.TrainingJob": [job.pk]}
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.FAILED and job.stop_reason == "lost"
    assert "Resume the job" in job.error


@pytest.mark.backend
def test_a_live_running_job_is_not_lost_and_cannot_be_claimed_twice(dataset_version, fast_config):
    job = services.training_job_start(dataset_version=dataset_version, config=fast_config, queue=False)
    services.training_job_claim(job_id=job.pk)
    assert jobs_mark_lost() == {}
    with pytest.raises(ServiceError) as info:
        services.training_job_claim(job_id=job.pk)
    assert info.value.code == "not_claimable"
