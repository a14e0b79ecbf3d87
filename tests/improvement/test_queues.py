"""Training has a queue (a django-q cluster) of its own: a crawl queued after a long training run started
finishes while the training still runs, with one worker on the default queue."""
from __future__ import annotations

import pytest
from django.conf import settings

from apps.core.queue import enqueue, queue_cluster
from apps.crawling.models import CrawlJob
from apps.crawling.services import crawl_job_create
from apps.training import services as training
from apps.training.models import TrainingJob
from tests.conftest import wait_for
from tests.training.conftest import make_dataset_version

from .conftest import TRAINING, queued


@pytest.mark.django_db
def test_each_queue_is_its_clusters_list_and_an_unknown_one_is_refused():
    queued("default"), queued("training")
    enqueue("apps.core.tasks.heartbeat", "a")
    enqueue("apps.core.tasks.heartbeat", "b", queue="training")
    assert [task["args"] for task in queued("default")] == [("a",)]
    assert [task["args"] for task in queued("training")] == [("b",)]
    assert (queue_cluster("default"), queue_cluster("training")) == (settings.Q_CLUSTER["name"],
                                                                     settings.KYARA_TRAINING_QUEUE_NAME)
    assert settings.Q_CLUSTER["ALT_CLUSTERS"][queue_cluster("training")]["workers"] >= 1
    with pytest.raises(ValueError, match="Unknown queue 'gpu'; the queues are default, training"):
        enqueue("apps.core.tasks.heartbeat", "c", queue="gpu")


@pytest.mark.django_db
def test_a_training_launch_goes_to_the_training_queue(django_capture_on_commit_callbacks):
    version = make_dataset_version("v-queue", classes=2, train=2, val=1, test=0)
    queued("default"), queued("training")
    with django_capture_on_commit_callbacks(execute=True):
        job = training.training_job_start(dataset_version=version, config=TRAINING)
    assert [(task["func"], task["args"]) for task in queued("training")] == [(training.LAUNCH_TASK, (job.pk,))]
    assert queued("default") == []


@pytest.mark.backend
@pytest.mark.queue
@pytest.mark.slow
def test_a_crawl_queued_after_a_long_training_run_finishes_while_it_trains(cycle_qcluster, settings):
    from tests.crawling.conftest import TAG
    from tests.evaluation.conftest import make_characters

    assert settings.Q_CLUSTER["workers"] == 1  # one worker on the default queue: a shared queue would block
    version = make_dataset_version("v-long", classes=2, train=8, val=2, test=0)
    job = training.training_job_start(dataset_version=version,
                                      config={**TRAINING, "epochs": 500, "patience": 0, "warmup_epochs": 0})
    wait_for(lambda: job.epochs.exists(), timeout=120, message="the training run's first epoch")
    (character,) = make_characters(["hu-tao"])
    character.booru_tags = {"danbooru": TAG}
    character.save()
    crawl = crawl_job_create(source="danbooru", character=character, quota=5)
    wait_for(lambda: CrawlJob.objects.filter(pk=crawl.pk, status__in=CrawlJob.FINISHED).exists(), timeout=60,
             message="the crawl to finish while the training runs")
    crawl.refresh_from_db()
    job.refresh_from_db()
    assert crawl.status == "succeeded" and crawl.accepted == 5, crawl.error
    assert job.status == TrainingJob.Status.RUNNING and job.epochs_run < 500
    assert job.pid != crawl.pid  # the training process, not the worker that crawled
    training.training_job_cancel(job=job)
    wait_for(lambda: TrainingJob.objects.get(pk=job.pk).status == TrainingJob.Status.CANCELLED, timeout=40,
             message="the training run to stop")
