"""What the training-job API shows to whom: a log tail and server paths are for staff only."""
import pytest

from apps.training.models import TrainingJob

pytestmark = pytest.mark.django_db

STAFF_ONLY = ("traceback", "log_path", "run_dir")


@pytest.fixture
def failed_job(dataset_version):
    return TrainingJob.objects.create(
        dataset_version=dataset_version, config={}, status=TrainingJob.Status.FAILED, error="RuntimeError: boom",
        traceback='Traceback (most recent call last):\n  File "/srv/kyara/apps/ml/engine.py", line 1\nRuntimeError: boom',
        log_path="/srv/kyara/var/artifacts/training/job-1/train.log", run_dir="/srv/kyara/var/artifacts/training/job-1",
    )


def test_anonymous_and_signed_in_users_do_not_see_the_log_tail_or_paths(api_client, failed_job, django_user_model):
    body = api_client.get(f"/api/v1/training-jobs/{failed_job.pk}/").json()
    assert {name: body[name] for name in STAFF_ONLY} == dict.fromkeys(STAFF_ONLY)
    assert body["error"] == "RuntimeError: boom"  # what went wrong is public; where on the server is not
    assert "/srv/kyara" not in str(body)
    api_client.force_authenticate(django_user_model.objects.create_user("viewer", password="pw-viewer-123"))
    assert api_client.get(f"/api/v1/training-jobs/{failed_job.pk}/").json()["traceback"] is None


def test_staff_see_them(staff_api_client, failed_job):
    body = staff_api_client.get(f"/api/v1/training-jobs/{failed_job.pk}/").json()
    assert body["traceback"].endswith("RuntimeError: boom") and body["log_path"].endswith("train.log")
    assert body["run_dir"] == failed_job.run_dir
