"""The gallery's math on embeddings whose answer is known: prototypes, the fitted scale, one distribution."""
import numpy as np
import pytest

from apps.ml import gallery
from apps.ml.calibration import softmax
from apps.ml.metrics import auroc


def _world(classes=12, per_class=30, dim=32, noise=1.4, seed=0):
    """Class centres on the unit sphere, images scattered around them (a positive offset on every dimension, as
    after a ReLU), and a classifier whose logits are a scaled cosine to the centres of the classes it knows."""
    rng = np.random.default_rng(seed)
    centres = gallery.normalise(rng.normal(size=(classes, dim)))
    labels = np.repeat(np.arange(classes), per_class)
    vectors = gallery.normalise(3 + centres[labels] + noise * rng.normal(size=(len(labels), dim)) / np.sqrt(dim))
    return centres, labels, vectors


def test_prototypes_are_normalised_means_in_first_seen_order():
    names, p = gallery.class_prototypes(np.array([[1.0, 0], [0, 1.0], [3.0, 0]]), ["b", "a", "b"])
    assert names == ["b", "a"] and np.allclose(p, [[1, 0], [0, 1]])
    _, centred = gallery.class_prototypes(np.array([[2.0, 1.0], [1.0, 2.0]]), ["x", "y"], mean=np.array([1.5, 1.5]))
    assert np.allclose(centred, [[np.sqrt(0.5), -np.sqrt(0.5)], [-np.sqrt(0.5), np.sqrt(0.5)]])


def test_the_mixture_is_the_classifier_without_a_gallery_and_one_distribution_with_one():
    probabilities = np.array([[0.7, 0.2, 0.1]])
    classes = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # the third class has no approved image
    near_gallery = gallery.normalise(np.array([[-1.0, -0.1]]))
    mapping = {"scale": 5.0}
    alone, stranger = gallery.combine(probabilities, near_gallery, gallery.Prototypes.of(np.zeros((3, 2)), np.zeros((0, 2))), mapping)
    assert alone == pytest.approx(probabilities) and stranger == pytest.approx([0])  # no prototype: the classifier
    out, stranger = gallery.combine(probabilities, near_gallery, gallery.Prototypes.of(classes, [[-1.0, 0.0]]), mapping)
    assert stranger == pytest.approx([0])  # no background fitted: nobody is a stranger
    q = softmax(5.0 * np.array([[near_gallery[0] @ [1, 0], near_gallery[0] @ [0, 1], near_gallery[0] @ [-1, 0]]]))[0]
    expected = [*(q[0] + q[1]) * probabilities[0], q[2]]
    assert out.shape == (1, 4) and out[0] == pytest.approx(expected, rel=1e-5) and out.sum() == pytest.approx(1.0)
    assert out[0].argmax() == 3  # closer to the gallery character than to any class
    near_class = gallery.normalise(np.array([[1.0, 0.05]]))
    kept, _ = gallery.combine(probabilities, near_class, gallery.Prototypes.of(classes, [[-1.0, 0.0]]), mapping)
    assert kept[0].argmax() == 0 and kept[0, :3] / kept[0, :3].sum() == pytest.approx(probabilities[0], rel=1e-5)


def test_the_fitted_scale_answers_new_characters_and_keeps_known_ones():
    centres, labels, vectors = _world()
    known = 9  # the classifier knows classes 0-8; 9-11 arrive later with 5 approved images each
    train, val = np.arange(len(labels)) % 3 == 0, np.arange(len(labels)) % 3 == 1
    test = ~(train | val)
    probabilities = softmax(12 * vectors @ centres[:known].T)
    base_train, base_val = train & (labels < known), val & (labels < known)
    mapping = gallery.fit_scale(vectors[base_val], labels[base_val], vectors[base_train], labels[base_train])
    assert mapping["fitted"] and mapping["scale"] > 0 and mapping["prototype_accuracy"] > 0.8
    mean = np.asarray(mapping["mean"])
    _, classes = gallery.class_prototypes(vectors[base_train], list(labels[base_train]), mean)
    shots = np.concatenate([np.flatnonzero(train & (labels == c))[:5] for c in range(known, 12)])
    _, novel = gallery.class_prototypes(vectors[shots], list(labels[shots]), mean)
    answers = gallery.combine(probabilities[test], vectors[test], gallery.Prototypes.of(classes, novel), mapping, mean)[0].argmax(1)
    new, base = labels[test] >= known, labels[test] < known
    assert (answers[new] == labels[test][new]).mean() >= 0.8
    classifier_alone = (probabilities[test][base].argmax(1) == labels[test][base]).mean()
    assert (answers[base] == labels[test][base]).mean() >= classifier_alone - 0.03
    uncentred = gallery.combine(probabilities[test], vectors[test], gallery.Prototypes.of(classes, novel), mapping, None)[0].argmax(1)
    assert (uncentred[new] == labels[test][new]).mean() < (answers[new] == labels[test][new]).mean()


def test_too_little_to_fit_on_gives_the_default_and_says_so():
    fitted = gallery.fit_scale(np.zeros((2, 4)), [0, 0], np.zeros((2, 4)), [0, 1])
    assert not fitted["fitted"] and fitted["scale"] == gallery.DEFAULT_MAPPING["scale"]


def test_a_stranger_far_from_every_prototype_gets_the_background_and_known_answers_keep_their_calibration():
    centres, labels, vectors = _world()
    known = 9
    train, val = np.arange(len(labels)) % 3 == 0, np.arange(len(labels)) % 3 == 1
    test = ~(train | val)
    probabilities = softmax(12 * vectors @ centres[:known].T)
    base_train, base_val = train & (labels < known), val & (labels < known)
    mapping = gallery.fit_scale(vectors[base_val], labels[base_val], vectors[base_train], labels[base_train])
    assert -1 < mapping["background"] < 1
    mean = np.asarray(mapping["mean"])
    _, classes = gallery.class_prototypes(vectors[base_train], list(labels[base_train]), mean)
    answers, stranger = gallery.combine(probabilities[test], vectors[test], gallery.Prototypes.of(classes, np.zeros((0, 32))), mapping, mean)
    new = labels[test] >= known  # classes 9-11: nobody has a prototype of them
    assert auroc(stranger[new], stranger[~new]) >= 0.9 and stranger[~new].mean() < 0.1
    assert answers.sum(1) == pytest.approx(np.ones(len(answers)), abs=1e-5)  # renormalised over the answers
    without = {key: value for key, value in mapping.items() if key != "background"}
    plain, _ = gallery.combine(probabilities[test], vectors[test], gallery.Prototypes.of(classes, np.zeros((0, 32))), without, mean)
    assert answers == pytest.approx(plain, abs=1e-5)  # the background changes who is a stranger, not the answers
