import pytest

from apps.training import services
from apps.training.models import TrainingEpoch, TrainingJob

pytestmark = pytest.mark.django_db

URL = "/api/v1/training-jobs/"


def test_staff_starts_a_job_with_its_config(staff_api_client, dataset_version, fast_config,
                                            django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = staff_api_client.post(URL, {"dataset_version": dataset_version.pk, "config": {**fast_config, "epochs": 2}},
                                         format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "queued" and body["config"]["epochs"] == 2 and body["epochs"] == []
    assert len(callbacks) == 1 and TrainingJob.objects.get(pk=body["id"]).created_by is not None


def test_a_bad_config_is_a_400_with_code_and_message(staff_api_client, dataset_version):
    response = staff_api_client.post(URL, {"dataset_version": dataset_version.pk, "config": {"lr": 0, "arch": "x"}},
                                     format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_config" and "lr must be a positive" in error["message"]
    assert "unknown setting 'arch'" in error["message"]


def test_anonymous_users_read_but_cannot_start_or_cancel(api_client, dataset_version, fast_config):
    job = services.training_job_start(dataset_version=dataset_version, config=fast_config, queue=False)
    assert api_client.get(URL).status_code == 200
    assert api_client.post(URL, {"dataset_version": dataset_version.pk}, format="json").status_code in (401, 403)
    assert api_client.post(f"{URL}{job.pk}/cancel/").status_code in (401, 403)
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.QUEUED


def test_detail_shows_epochs_and_cancel_resume_answer_with_conflicts(staff_api_client, dataset_version, fast_config):
    job = services.training_job_start(dataset_version=dataset_version, config=fast_config, queue=False)
    TrainingEpoch.objects.create(job=job, epoch=1, train_loss=1.0, train_accuracy=0.5, val_loss=0.9, val_accuracy=0.6,
                                 lr=1e-3, seconds=2.0)
    detail = staff_api_client.get(f"{URL}{job.pk}/").json()
    assert [e["epoch"] for e in detail["epochs"]] == [1] and detail["epochs"][0]["val_accuracy"] == 0.6
    assert staff_api_client.post(f"{URL}{job.pk}/cancel/").json()["status"] == "cancelled"
    again = staff_api_client.post(f"{URL}{job.pk}/cancel/")
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_cancellable"
    resume = staff_api_client.post(f"{URL}{job.pk}/resume/")
    assert resume.status_code == 409 and resume.json()["error"]["code"] == "no_checkpoint"


def test_list_filters_by_status(staff_api_client, dataset_version, fast_config):
    a = services.training_job_start(dataset_version=dataset_version, config=fast_config, queue=False)
    services.training_job_start(dataset_version=dataset_version, config=fast_config, queue=False)
    services.training_job_cancel(job=a)
    results = staff_api_client.get(URL, {"status": "cancelled"}).json()["results"]
    assert [r["id"] for r in results] == [a.pk]


def test_admin_action_cancels_selected_jobs(admin_client, dataset_version, fast_config):
    job = services.training_job_start(dataset_version=dataset_version, config=fast_config, queue=False)
    response = admin_client.post("/admin/training/trainingjob/", {"action": "cancel_jobs", "_selected_action": [job.pk]})
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.CANCELLED
