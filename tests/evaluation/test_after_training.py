"""Every successful training job leaves an evaluation: a real tiny training job, then its automatic run."""
import os

import pytest

from apps.evaluation import services
from apps.evaluation.models import EvaluationRun
from apps.training import services as training
from apps.training.models import TrainingJob
from tests.conftest import wait_for
from tests.evaluation.conftest import register_rigged, scatter_phashes
from tests.training.conftest import FAST, make_dataset_version


def _check_automatic_run(job: TrainingJob) -> EvaluationRun:
    run = EvaluationRun.objects.get(training_job_id=job.pk)
    assert (run.origin, run.split, run.model_version_id) == ("training", "test", job.model_version_id)
    assert run.status == EvaluationRun.Status.SUCCEEDED, run.error
    assert run.dataset_version_id == job.dataset_version_id and run.images == 3 * 3
    rows = list(run.characters.all())
    assert sorted(r.label for r in rows) == ["char-0", "char-1", "char-2"]
    rules = services.tier_rules()
    for row in rows:  # tiered by the default rules, and only those
        assert row.support == 3 and row.in_model and not row.low_support
        expected = services.tier_for(row.accuracy, rules)
        assert row.tier == (expected.priority if expected else None)
    assert run.leak_report["leaked_images"] == 0 and run.latency_p50_ms > 0
    # The open-set threshold chosen on val is the version's now.
    job.model_version.refresh_from_db()
    assert run.suggested_threshold is not None
    assert job.model_version.confidence_threshold == pytest.approx(run.suggested_threshold)
    return run


@pytest.mark.django_db
@pytest.mark.slow
def test_a_finished_training_job_is_evaluated_on_its_test_split(train_then_evaluate):
    version = make_dataset_version("v-auto", train=8, val=3, test=3)
    scatter_phashes(version)
    job = train_then_evaluate(version, epochs=3)
    assert job.status == TrainingJob.Status.SUCCEEDED, job.error
    run = _check_automatic_run(job)
    # One number per question: the job's test accuracy is what the serving path makes of the test split.
    assert job.test_accuracy is not None and job.summary["test_images"] == run.images
    assert job.test_accuracy == pytest.approx(run.top1, abs=1e-9)


def _receiver_said(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "apps.evaluation.receivers")


@pytest.mark.django_db
def test_no_evaluation_when_switched_off_or_without_test_images(settings, caplog):
    from apps.evaluation.receivers import evaluate_after_training

    def announce(version, model_name: str) -> EvaluationRun | None:
        """A training job of ``version`` succeeded with a model: the run the receiver made, if any."""
        model = register_rigged(model_name, ["char-0", "char-1"], [1.0, 0.0], dataset_version=version)
        job = training.training_job_start(dataset_version=version, config=FAST, queue=False)
        evaluate_after_training(sender=TrainingJob, job=job, model_version=model)
        return EvaluationRun.objects.filter(training_job_id=job.pk).first()

    with_test = make_dataset_version("v-with-test", classes=2, train=2, val=1, test=1)
    settings.KYARA_EVAL_AFTER_TRAINING_SPLIT = ""  # switched off: a version with test images gets no run,
    with caplog.at_level("INFO", logger="apps.evaluation.receivers"):
        assert announce(with_test, "r-off") is None
    assert not _receiver_said(caplog)  # and nothing is reported: it is a choice, not a problem
    settings.KYARA_EVAL_AFTER_TRAINING_SPLIT = "test"  # switched on: the same kind of job gets one
    assert announce(with_test, "r-on").split == "test"
    without_test = make_dataset_version("v-no-test", classes=2, train=2, val=1, test=0)
    with caplog.at_level("WARNING", logger="apps.evaluation.receivers"):
        assert announce(without_test, "r-no-test") is None  # no test split: logged, no run
    assert "has no test images" in _receiver_said(caplog) and EvaluationRun.objects.count() == 1


@pytest.mark.backend
@pytest.mark.slow
@pytest.mark.queue
def test_a_real_worker_trains_then_evaluates(qcluster):
    """Worker → training child process → training_job_succeeded (in the child) → queued → worker evaluates."""
    version = make_dataset_version("v-worker-eval", train=8, val=3, test=3)
    scatter_phashes(version)
    job = training.training_job_start(dataset_version=version, config={**FAST, "epochs": 2})
    wait_for(lambda: EvaluationRun.objects.filter(training_job_id=job.pk, status__in=["succeeded", "failed"]).exists(),
             timeout=300, message="the automatic evaluation")
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.SUCCEEDED, job.error
    run = _check_automatic_run(job)  # origin training, on the job's model, succeeded, with per-character rows
    # Both ran in other processes (the worker's training child, the worker), not in this one.
    assert job.pid not in (None, os.getpid()) and run.pid not in (None, os.getpid(), job.pid)
    assert None not in (run.top1, run.top5, run.macro_f1, run.ece, run.images_per_second)
    job.model_version.refresh_from_db()  # the run's headline numbers are the model version's now
    assert job.model_version.metrics["evaluation_run"] == run.pk
    assert job.model_version.metrics["accuracy"] == pytest.approx(run.top1)
    # The evaluation ran on the runtime recorded for the worker's machine (measured once, at registration or at
    # its first load there): the one every process of that machine serves the version with.
    chosen = {record["chosen"] for record in job.model_version.runtime_choices.values()}
    assert run.backend in chosen
