"""The gallery's math on embeddings whose answer is known: prototypes, the fitted map, one softmax."""
import numpy as np
import pytest

from apps.ml import gallery


def _world(classes=12, per_class=30, dim=32, noise=0.35, seed=0):
    """Class centres on the unit sphere, images around them; a classifier whose logits are a scaled cosine to
    the centres of the classes it knows (a well-trained head), with its probabilities as the model would give."""
    rng = np.random.default_rng(seed)
    centres = gallery.normalise(rng.normal(size=(classes, dim)))
    labels = np.repeat(np.arange(classes), per_class)
    vectors = gallery.normalise(centres[labels] + noise * rng.normal(size=(len(labels), dim)) / np.sqrt(dim) * 4)
    return centres, labels, vectors


def test_prototypes_are_normalised_means_in_first_seen_order():
    names, p = gallery.class_prototypes(np.array([[1.0, 0], [0, 1.0], [3.0, 0]]), ["b", "a", "b"])
    assert names == ["b", "a"] and np.allclose(p, [[1, 0], [0, 1]])


def test_combine_appends_the_gallery_on_one_softmax_and_keeps_the_classifier_ranking():
    probabilities = np.array([[0.7, 0.2, 0.1]])
    embedding = gallery.normalise(np.array([[1.0, 0.0]]))
    prototypes = gallery.normalise(np.array([[1.0, 0.0], [0.0, 1.0]]))
    mapping = {"alpha": 10.0, "beta": -5.0}
    out = gallery.combine(probabilities, embedding, prototypes, mapping)
    assert out.shape == (1, 5) and out.sum() == pytest.approx(1.0, abs=1e-6)
    logits = np.log([0.7, 0.2, 0.1, np.exp(5.0), np.exp(-5.0)])  # cos 1 → logit 5, cos 0 → −5
    assert out[0] == pytest.approx(np.exp(logits) / np.exp(logits).sum(), rel=1e-5)
    assert out[0, 0] > out[0, 1] > out[0, 2]  # the classifier's own order is untouched
    assert gallery.combine(probabilities, embedding, np.zeros((0, 2)), mapping) == pytest.approx(probabilities)


def test_the_fitted_map_answers_held_out_characters_and_keeps_known_ones():
    centres, labels, vectors = _world()
    known = 9  # the classifier knows classes 0-8; 9-11 arrive later with 5 approved images each
    train, val = np.arange(len(labels)) % 3 == 0, np.arange(len(labels)) % 3 == 1
    test = ~(train | val)
    logits = 12 * vectors @ centres[:known].T
    log_probs = gallery.log_softmax(logits)
    base_train = train & (labels < known)
    mapping = gallery.fit_mapping(log_probs[val & (labels < known)], vectors[val & (labels < known)],
                                  labels[val & (labels < known)], vectors[base_train], labels[base_train])
    assert mapping["fitted"] and mapping["alpha"] > 0 and mapping["nll"] <= mapping["nll_at_default"]
    shots = np.concatenate([np.flatnonzero(train & (labels == c))[:5] for c in range(known, 12)])
    _, novel_protos = gallery.class_prototypes(vectors[shots], list(labels[shots]))
    answers = gallery.combine(np.exp(log_probs[test]), vectors[test], novel_protos, mapping).argmax(1)
    novel, base = labels[test] >= known, labels[test] < known
    assert (answers[novel] == labels[test][novel]).mean() >= 0.8
    assert (answers[base] == labels[test][base]).mean() >= (np.exp(log_probs[test][base]).argmax(1)
                                                             == labels[test][base]).mean() - 0.02


def test_too_little_to_fit_on_gives_the_default_and_says_so():
    fitted = gallery.fit_mapping(np.zeros((2, 2)), np.zeros((2, 4)), [0, 1], np.zeros((2, 4)), [0, 1])
    assert not fitted["fitted"] and fitted["alpha"] == gallery.DEFAULT_MAPPING["alpha"]
