"""A training job's traceback (the last lines of its log) is stored redacted, like its error: a crawler URL with an
API key or a database URL with a password that a training process printed never reaches the database or the API."""
import pytest

from apps.core.jobs import job_claim
from apps.core.redaction import REDACTED
from apps.training.models import TrainingJob
from apps.training.services import training_job_fail

pytestmark = pytest.mark.django_db

LOG_TAIL = (
    "Traceback (most recent call last):\n"
    '  File "apps/training/runner.py", line 152, in main\n'
    "psycopg.OperationalError: connection to postgres://kyara:TRAINPW0RD@db.example:5432/kyara failed\n"
    "while fetching https://danbooru.donmai.us/posts.json?tags=hu_tao&login=kyara&api_key=TRAINKEY123\n"
)


def test_a_failed_jobs_traceback_is_stored_redacted(dataset_version, staff_api_client):
    job = TrainingJob.objects.create(dataset_version=dataset_version, config={"architecture": "simple"})
    job = job_claim(TrainingJob, job.pk)
    assert training_job_fail(job=job, error="RuntimeError: boom", traceback=LOG_TAIL)
    job.refresh_from_db()
    assert job.status == "failed" and REDACTED in job.traceback
    assert "TRAINPW0RD" not in job.traceback and "TRAINKEY123" not in job.traceback
    assert "db.example:5432" in job.traceback and "tags=hu_tao" in job.traceback  # the rest is kept to read
    # Staff see the traceback in the API: redacted there too, since the stored text is.
    shown = staff_api_client.get(f"/api/v1/training-jobs/{job.pk}/").json()["traceback"]
    assert shown == job.traceback


def test_every_way_of_writing_it_is_redacted(dataset_version):
    job = TrainingJob.objects.create(dataset_version=dataset_version, traceback=LOG_TAIL)
    assert "TRAINKEY123" not in job.traceback  # save(): the instance shows what was stored
    TrainingJob.objects.filter(pk=job.pk).update(traceback="again: api_key=UPDATEDKEY456")
    job.refresh_from_db()
    assert job.traceback == f"again: api_key={REDACTED}"
    stored = list(TrainingJob.objects.values_list("traceback", flat=True))
    assert not [t for t in stored if "TRAINKEY123" in t or "TRAINPW0RD" in t or "UPDATEDKEY456" in t]
