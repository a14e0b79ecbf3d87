"""Suspect labels: the approved images (training images included) whose label their nearest neighbours by the
model's embedding contradict; found among labels flipped on purpose, and not raised on a clean set."""
from __future__ import annotations

import numpy as np
import pytest

from apps.evaluation.models import EvaluationRun
from apps.evaluation.selectors import label_issue_image_ids
from apps.evaluation.services import evaluation_run_create, evaluation_run_execute
from apps.ml.neighbours import neighbour_votes, suspects
from tests.evaluation.conftest import make_characters, make_version, store_image


def test_neighbour_votes_by_hand():
    """Each row's neighbours (itself and its near-duplicate group left out) vote with weight exp(scale·(cos − 1));
    a row is suspect when another label has the majority; least supported first."""
    vectors = np.array([[1.0, 0.0], [0.99, 0.14], [0.98, 0.2], [0.0, 1.0], [0.14, 0.99], [0.9, 0.44]])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = [0, 0, 0, 1, 1, 1]  # the last one sits among the zeros
    votes = neighbour_votes(vectors, labels, k=2, scale=10.0)
    assert suspects(votes, labels) == [5]
    assert votes.top[5] == 0 and votes.own_share[5] == 0 and votes.top_share[5] == 1
    assert votes.agreement == pytest.approx(5 / 6)
    # Its near-duplicate, mislabelled the same way, cannot vouch for it: groups vote for nobody in them.
    copy = np.vstack([vectors, vectors[5]])
    alone = neighbour_votes(copy, [*labels, 1], k=2, scale=10.0)
    assert set(suspects(alone, [*labels, 1])) == set()  # the copy's vote keeps row 5's label afloat...
    grouped = neighbour_votes(copy, [*labels, 1], groups=[0, 1, 2, 3, 4, 5, 5], k=2, scale=10.0)
    assert set(suspects(grouped, [*labels, 1])) == {5, 6}  # ...unless they are known to be one picture
    assert suspects(neighbour_votes(np.zeros((0, 2)), []), []) == []


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
def test_a_trained_model_lists_the_mislabelled_images_of_every_split(noisy_version, train_then_evaluate, api_client):
    from apps.characters.models import Character, DatasetItem, Image
    from apps.characters.services import image_reject, image_relabel

    job = train_then_evaluate(noisy_version, epochs=8)
    run = EvaluationRun.objects.get(training_job_id=job.pk)  # the automatic run, on the test split
    assert run.split == "test" and run.status == EvaluationRun.Status.SUCCEEDED, run.error
    issues = run.label_issues
    flipped = set(noisy_version.mislabelled_test) | set(noisy_version.mislabelled_train)
    found = {issue["image"] for issue in issues}
    # Out-of-sample evidence over the whole approved set: the training images the model learned wrong labels
    # from are found too, and (nearly) nothing else is.
    assert len(found & flipped) >= 10 and len(found - flipped) <= 1, (sorted(found), sorted(flipped))
    assert found & set(noisy_version.mislabelled_train)
    slugs = ["red", "green", "blue"]
    for issue in issues:
        if issue["image"] in flipped:  # the given label is the next colour; the neighbours name the true one
            assert slugs.index(issue["label"]) == (slugs.index(issue["predicted"]) + 1) % 3
        assert issue["probability"] >= 0.5 > issue["self_confidence"]
    confidences = [issue["self_confidence"] for issue in issues]
    assert confidences == sorted(confidences)  # most suspect first
    assert any("neighbours contradict" in note for note in run.notes)
    detail = api_client.get(f"/api/v1/evaluations/{run.pk}/").json()
    assert detail["label_issues"] == issues

    # The review queue's filter: still approved and labelled as found; a person's decision settles an image.
    first, second, *rest = (issue["image"] for issue in issues)
    assert label_issue_image_ids(run) == [first, second, *rest]
    image_reject(image_ids=[first], reason="wrong_character")
    image_relabel(image_ids=[second], character=Character.objects.get(slug=issues[1]["predicted"]))
    assert label_issue_image_ids(run) == rest

    # The same model on the same images with every label right raises nothing.
    for image_id in flipped - {first, second}:
        item = DatasetItem.objects.filter(image_id=image_id).select_related("image").get()
        true = Character.objects.get(slug=slugs[(slugs.index(item.character.slug) - 1) % 3])
        Image.objects.filter(pk=image_id).update(character=true)
    clean = _run(job.model_version, noisy_version, "val")
    assert clean.label_issues == [], clean.label_issues


@pytest.mark.django_db
def test_labels_the_embedding_cannot_see_are_not_judged_and_the_run_says_why():
    """Characters whose pictures look alike to the model (each character's images in every colour): its
    neighbours agree with far fewer than 80% of the labels, so a contradiction would be the model's confusion,
    not a wrong label; nothing is listed and a note says why."""
    from .conftest import register_rigged

    characters = make_characters(["one", "two", "three"])
    version = make_version("v-mixed", [], train=0, val=0, test=0, extra=[
        (store_image(label=seed % 3, seed=seed, character=characters[(seed // 3) % 3]), characters[(seed // 3) % 3],
         "test") for seed in range(2000, 2036)])
    rigged = register_rigged("colour-blind", ["one", "two", "three"], [1.0, 0.0, 0.0], dataset_version=version)
    run = _run(rigged, version, "test")
    assert run.label_issues == []
    assert any("Suspect labels are not listed" in note and "agree with their label" in note for note in run.notes)
