"""Suspect labels: after a run on val or test, the approved images whose label the model confidently contradicts."""
from __future__ import annotations

import numpy as np
import pytest

from apps.evaluation.label_issues import confident_thresholds, find_label_issues
from apps.evaluation.models import EvaluationRun
from apps.evaluation.selectors import label_issue_image_ids
from apps.evaluation.services import evaluation_run_create, evaluation_run_execute
from tests.evaluation.conftest import make_characters, make_version, store_image


def test_confident_learning_by_hand():
    """Thresholds are the classes' mean self-confidence; a row is suspect when it reaches another class's
    threshold and the model's top answer is not its label; lowest self-confidence first. (cleanlab 2.9's
    find_label_issues(filter_by="confident_learning", return_indices_ranked_by="self_confidence") gives the same
    rows on these examples.)"""
    labels = [0, 0, 0, 1, 1, 1, 1]
    probabilities = [
        [0.90, 0.05, 0.05],
        [0.80, 0.10, 0.10],
        [0.10, 0.85, 0.05],  # labelled 0, confidently 1
        [0.05, 0.90, 0.05],
        [0.10, 0.80, 0.10],
        [0.60, 0.30, 0.10],  # labelled 1, reaches class 0's threshold (0.6) exactly
        [0.05, 0.15, 0.80],  # top answer 2, but no image is labelled 2: nothing to be confident against
    ]
    assert confident_thresholds(np.array(labels), np.array(probabilities)) == pytest.approx([0.6, 0.5375, 2.0])
    issues = find_label_issues(labels, probabilities)
    assert [(issue.index, issue.suspected) for issue in issues] == [(2, 1), (5, 0)]
    assert [(issue.probability, issue.self_confidence) for issue in issues] == [(0.85, 0.10), (0.60, 0.30)]
    # Reaching another class's threshold (0.45 ≥ 0.4) is not enough while the top answer is the label.
    assert find_label_issues([0, 0, 0, 1, 1], [[0.50, 0.45, 0.05], [0.95, 0.03, 0.02], [0.95, 0.03, 0.02],
                                              [0.20, 0.50, 0.30], [0.60, 0.30, 0.10]]) == []
    assert find_label_issues([], np.zeros((0, 3))) == []


@pytest.fixture
def noisy_version(db):
    """Three colour classes, learnable in a few epochs; in the test and the train split, two images of each class
    carry the next class's label (beside 5 and 12 correct ones). Noise in every class is what confident learning
    expects (it lowers the classes' thresholds); the model still learns the colours."""
    characters = make_characters(["red", "green", "blue"])

    def mislabelled(true: int, seed: int, split: str):
        wrong = characters[(true + 1) % 3]
        return store_image(label=true, seed=seed, character=wrong), wrong, split

    wrong_test = [mislabelled(true, 900 + 10 * true + n, "test") for true in range(3) for n in range(2)]
    wrong_train = [mislabelled(true, 950 + 10 * true + n, "train") for true in range(3) for n in range(2)]
    version = make_version("v-noisy", characters, train=12, val=3, test=5, extra=wrong_test + wrong_train)
    version.mislabelled_test = [image.pk for image, _, _ in wrong_test]
    version.mislabelled_train = [image.pk for image, _, _ in wrong_train]
    return version


def _run(model_version, dataset_version, split: str) -> EvaluationRun:
    run = evaluation_run_create(model_version=model_version, dataset_version=dataset_version, split=split, queue=False)
    run = evaluation_run_execute(run_id=run.pk)
    assert run.status == EvaluationRun.Status.SUCCEEDED, run.error
    return run


@pytest.mark.django_db
@pytest.mark.slow
def test_a_trained_model_lists_the_mislabelled_images_and_only_on_unseen_splits(noisy_version, train_then_evaluate,
                                                                                api_client):
    from apps.characters.models import Character
    from apps.characters.services import image_reject, image_relabel

    job = train_then_evaluate(noisy_version, epochs=8)
    run = EvaluationRun.objects.get(training_job_id=job.pk)  # the automatic run, on the test split
    assert run.split == "test" and run.status == EvaluationRun.Status.SUCCEEDED, run.error
    issues = run.label_issues
    # Exactly the six mislabelled images: no correct one is listed.
    assert sorted(issue["image"] for issue in issues) == sorted(noisy_version.mislabelled_test), issues
    slugs = ["red", "green", "blue"]
    for issue in issues:  # each one's given label is the next colour, and the model names the true one
        assert slugs.index(issue["label"]) == (slugs.index(issue["predicted"]) + 1) % 3
        assert issue["probability"] > 0.5 > issue["self_confidence"]
    confidences = [issue["self_confidence"] for issue in issues]
    assert confidences == sorted(confidences)  # most suspect first
    assert any("confidently contradicts" in note for note in run.notes)
    detail = api_client.get(f"/api/v1/evaluations/{run.pk}/").json()
    assert detail["label_issues"] == issues

    # The review queue's filter: still approved and labelled as found; a person's decision settles an image.
    first, second, *rest = (issue["image"] for issue in issues)
    assert label_issue_image_ids(run) == [first, second, *rest]
    image_reject(image_ids=[first], reason="wrong_character")
    image_relabel(image_ids=[second], character=Character.objects.get(slug=issues[1]["predicted"]))
    assert label_issue_image_ids(run) == rest

    # The train split is where the model learned the labels (wrong ones included): nothing is listed there,
    # though it holds a mislabelled image too.
    assert _run(job.model_version, noisy_version, "train").label_issues == []
