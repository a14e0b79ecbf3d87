"""The fast predictor (apps/ml/runtime.py): input validation, the eval transform, and agreement of the
fp32 fast paths with plain eager PyTorch (same top-1, probabilities within 1e-3)."""
from __future__ import annotations

import importlib.util
import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from apps.ml import runtime_choice
from apps.ml.architectures import architectures
from apps.ml.artifacts import ArtifactError
from apps.ml.images import decode_eval_crop, resize_size
from apps.ml.runtime import InputRejected, Predictor, load_predictor
from tests.conftest import make_image_bytes

from .conftest import LABELS, class_image_bytes


def _decode(data, **kw):
    return decode_eval_crop(data, image_size=kw.pop("input_size", 128), max_pixels=kw.pop("max_pixels", 10**7), **kw)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"this is a text file, not a picture", "not_an_image"),
    (make_image_bytes(1, size=(200, 200), fmt="JPEG")[:600], "truncated"),
    (make_image_bytes(2, size=(64, 64), fmt="TIFF"), "unsupported_format"),
    (make_image_bytes(3, size=(4, 40), fmt="PNG"), "too_small"),
])
def test_bad_inputs_are_rejected_with_a_reason(data, reason):
    with pytest.raises(InputRejected) as caught:
        _decode(data)
    assert caught.value.reason == reason and caught.value.message


def test_corrupt_jpeg_body_is_rejected():
    data = bytearray(make_image_bytes(4, size=(200, 200), fmt="PNG"))
    data[60:400] = bytes(340)  # zlib stream destroyed, header intact
    with pytest.raises(InputRejected) as caught:
        _decode(bytes(data))
    assert caught.value.reason in {"corrupt", "truncated"}


def test_too_many_pixels_is_refused_from_the_header():
    with pytest.raises(InputRejected) as caught:
        _decode(make_image_bytes(5, size=(300, 300), fmt="PNG"), max_pixels=300 * 299)
    assert caught.value.reason == "too_many_pixels"


@pytest.mark.parametrize("mode, fmt", [("RGBA", "PNG"), ("L", "PNG"), ("P", "GIF"), ("I;16", "PNG"), ("CMYK", "JPEG"),
                                       ("RGB", "WEBP"), ("RGB", "BMP")])
def test_any_mode_decodes_to_an_rgb_crop(mode, fmt):
    crop = _decode(make_image_bytes(6, size=(150, 220), fmt=fmt, mode=mode), input_size=128)
    assert crop.mode == "RGB" and crop.size == (128, 128)


def test_draft_path_matches_torchvision_eval_transform_closely():
    """Draft decoding is a different, equally smooth downscale: small mean pixel difference."""
    arch = architectures.get("mobilenet_v2")
    data = make_image_bytes(7, size=(512, 640), fmt="JPEG", quality=90)
    ours = np.asarray(_decode(data, input_size=224), dtype=np.float32)
    naive = T.Compose([T.Resize(resize_size(224)), T.CenterCrop(224)])(Image.open(io.BytesIO(data)).convert("RGB"))
    diff = np.abs(ours - np.asarray(naive, dtype=np.float32))
    assert arch.input_size == 224 and diff.mean() < 6, diff.mean()


def _eager_probabilities(model, batch: np.ndarray, classes: int = len(LABELS)) -> np.ndarray:
    """Eager PyTorch's softmax of the classifier's logits: the first ``classes`` columns of a serving graph's
    output (the rest is the embedding), or all of a plain classifier's."""
    with torch.inference_mode():
        return torch.softmax(model(torch.from_numpy(batch))[:, :classes], dim=1).numpy()


def test_onnx_runtime_agrees_with_eager_pytorch_on_a_trained_model(trained_artifacts, tmp_path):
    predictor = load_predictor(trained_artifacts.v1, backend="onnxruntime", onnx_cache_dir=tmp_path)
    assert predictor.backend_name == "onnxruntime"
    images = [class_image_bytes(label, 40 + i) for i in range(3) for label in LABELS]
    batch = predictor.preprocess(images)
    fast, eager = predictor.probabilities(batch), _eager_probabilities(predictor.model, batch)
    assert np.abs(fast - eager).max() < 1e-3
    assert (fast.argmax(1) == eager.argmax(1)).all()
    # ... and the trained model is meaningful: every picture comes back as its own class.
    assert [LABELS[i] for i in fast.argmax(1)] == [label for _ in range(3) for label in LABELS]


def test_fast_path_agrees_with_naive_torchvision_pipeline_on_top1(trained_artifacts, tmp_path):
    predictor = load_predictor(trained_artifacts.v1, onnx_cache_dir=tmp_path)
    arch = architectures.get("simple")
    naive = T.Compose([T.Resize(resize_size(arch.input_size)), T.CenterCrop(arch.input_size), T.ToTensor(),
                       T.Normalize(**arch.normalization)])
    images = [class_image_bytes(label, 60 + i) for i in range(2) for label in LABELS]
    reference = torch.stack([naive(Image.open(io.BytesIO(d)).convert("RGB")) for d in images]).numpy()
    assert (predictor.predict(images).argmax(1) == _eager_probabilities(predictor.model, reference).argmax(1)).all()


def test_mobilenet_v2_onnx_agrees_with_eager(tmp_path):
    torch.manual_seed(0)
    model = architectures.get("mobilenet_v2").build(32, weights="none").eval()
    predictor = Predictor(model=model, labels=[f"c{i}" for i in range(32)], input_size=224,
                          normalization=architectures.get("mobilenet_v2").normalization, backend="onnxruntime",
                          onnx_path=tmp_path / "m.onnx")
    batch = predictor.preprocess([make_image_bytes(s, size=(300, 260), fmt="JPEG") for s in range(3)])
    fast, eager = predictor.probabilities(batch), _eager_probabilities(model, batch, 32)
    assert np.abs(fast - eager).max() < 1e-3 and (fast.argmax(1) == eager.argmax(1)).all()


@pytest.mark.parametrize("batch_threads", [1, 2])
def test_one_batched_forward_equals_single_forwards(batch_threads, trained_artifacts, tmp_path):
    predictor = load_predictor(trained_artifacts.v1, backend="onnxruntime", onnx_cache_dir=tmp_path,
                               batch_threads=batch_threads)
    images = [class_image_bytes(label, 80 + i) for i in range(2) for label in LABELS]
    together = predictor.predict(images)
    alone = np.concatenate([predictor.predict([data]) for data in images])
    assert np.abs(together - alone).max() < 1e-5
    with pytest.raises(InputRejected) as caught:  # the first bad upload is named, decoded in parallel or not
        predictor.predict([images[0], images[1], b"junk", b""])
    assert caught.value.index == 2 and caught.value.reason == "not_an_image"


def test_auto_backend_is_fp32_without_a_runtime_choice(trained_artifacts, tmp_path):
    """Without a recorded choice ``auto`` is ONNX Runtime fp32: the model's own answers; no candidate is judged
    or timed (``apps.ml.runtime_choice`` does not run)."""
    before = runtime_choice.measurements
    predictor = load_predictor(trained_artifacts.v1, backend="auto", onnx_cache_dir=tmp_path)
    assert predictor.backend_name == "onnxruntime" and runtime_choice.measurements == before
    images = [class_image_bytes(label, 30) for label in LABELS]
    batch = predictor.preprocess(images)
    assert np.abs(predictor.probabilities(batch) - _eager_probabilities(predictor.model, batch)).max() < 1e-4


@pytest.mark.parametrize("backend", ["openvino-fp32", "onnxruntime", "torch"])
def test_every_fp32_runtime_serves_the_same_answers(backend, trained_artifacts, tmp_path):
    pytest.importorskip("openvino") if backend.startswith("openvino") else None
    predictor = load_predictor(trained_artifacts.v1, backend=backend, onnx_cache_dir=tmp_path, batch_threads=2)
    images = [class_image_bytes(label, 70 + i) for i in range(4) for label in LABELS]
    batch = predictor.preprocess(images)
    eager = _eager_probabilities(predictor.model, batch)
    for rows in (batch[:1], batch[:2], batch[:5], batch):  # a graph per batch size where the runtime has them
        assert np.abs(predictor.probabilities(rows) - eager[:len(rows)]).max() < 1e-4
    assert predictor.backend_name == backend


def test_exported_graph_is_cached_by_artifact_sha(trained_artifacts, tmp_path):
    first = load_predictor(trained_artifacts.v1, backend="onnxruntime", onnx_cache_dir=tmp_path)
    cached = tmp_path / f"{first.info['sha256']}.onnx"
    stamp = cached.stat().st_mtime_ns
    load_predictor(trained_artifacts.v1, backend="onnxruntime", onnx_cache_dir=tmp_path)
    assert cached.stat().st_mtime_ns == stamp


def test_torch_backend_serves_too(trained_artifacts):
    predictor = load_predictor(trained_artifacts.v1, backend="torch")
    probs = predictor.predict([class_image_bytes(LABELS[1], 90)])
    assert predictor.backend_name == "torch" and LABELS[int(probs.argmax())] == LABELS[1]
    assert predictor.top_k(probs[0], 99)[0][0] == LABELS[1] and len(predictor.top_k(probs[0], 99)) == 3


def test_sha_mismatch_and_missing_file_are_artifact_errors(trained_artifacts, tmp_path):
    with pytest.raises(ArtifactError, match="corrupt"):
        load_predictor(trained_artifacts.v1, expected_sha256="0" * 64)
    with pytest.raises(ArtifactError, match="missing"):
        load_predictor(tmp_path / "nope.pt")


def test_a_stale_cached_graph_is_replaced_not_served(trained_artifacts, tmp_path):
    """An exported graph carries the digest of the weights it came from: a cached file made from other
    weights (a reused path) is exported again, never served."""
    from apps.ml.backends import onnx_stamp

    stale = tmp_path / "model.onnx"
    other = architectures.get("simple").build(len(LABELS), weights="none").eval()
    first = Predictor(model=other, labels=LABELS, input_size=128, normalization=architectures.get("simple").normalization,
                      backend="onnxruntime", onnx_path=stale)
    other_stamp = onnx_stamp(stale)
    assert other_stamp == first.weights_stamp
    predictor = load_predictor(trained_artifacts.v1, backend="torch")
    reused = Predictor(model=predictor.model, labels=LABELS, input_size=128, normalization=predictor.normalization,
                       backend="onnxruntime", onnx_path=stale)
    assert onnx_stamp(stale) == reused.weights_stamp != other_stamp
    assert LABELS[int(reused.predict([class_image_bytes(LABELS[2], 5)]).argmax())] == LABELS[2]


class _Gate:
    """A runtime stand-in that records its calls and, when told to, holds a call until released: how a
    test puts a forward "in flight" while another request arrives."""

    def __init__(self, inner, name: str, delay_s: float = 0.0) -> None:
        import threading

        self.inner, self.name, self.delay_s, self.calls = inner, name, delay_s, 0
        self.entered, self.release = threading.Event(), threading.Event()
        self.release.set()

    def __call__(self, batch):
        import time

        self.calls += 1
        self.entered.set()
        self.release.wait(10)
        time.sleep(self.delay_s)
        return self.inner(batch)


def test_a_lone_request_takes_the_idle_lane_and_a_concurrent_one_its_own_thread(trained_artifacts, tmp_path):
    import threading

    predictor = load_predictor(trained_artifacts.v1, backend="onnxruntime", onnx_cache_dir=tmp_path, batch_threads=2)
    assert predictor.forward_batch is not predictor.forward  # the wider runtime exists
    single, wide = _Gate(predictor.forward, "single"), _Gate(predictor.forward_batch, "wide")
    predictor.forward = predictor._single = single
    predictor.forward_batch = wide
    batch = predictor.preprocess([class_image_bytes(LABELS[0], 3)])
    expected = predictor.eager(batch)

    predictor.idle_lane = False
    predictor.logits(batch)
    assert (single.calls, wide.calls) == (1, 0)  # lane off: the single runtime, as before

    predictor.idle_lane = True
    assert np.abs(predictor.outputs(batch) - expected).max() < 1e-4  # alone: the wide runtime, same answer
    assert (single.calls, wide.calls) == (1, 1)

    wide.release.clear()
    wide.entered.clear()
    holder = threading.Thread(target=predictor.logits, args=(batch,))
    holder.start()
    assert wide.entered.wait(10)  # one forward is in flight on the wide runtime...
    predictor.logits(batch)  # ...so this one keeps its own thread
    wide.release.set()
    holder.join(10)
    assert (single.calls, wide.calls) == (2, 2)
    predictor.logits(batch)  # nothing in flight any more: the idle lane again
    assert wide.calls == 3


@pytest.mark.parametrize("wide_delay, on", [(0.0, True), (0.15, False)])
def test_the_idle_lane_is_on_only_where_it_measured_faster(wide_delay, on, trained_artifacts, tmp_path):
    predictor = load_predictor(trained_artifacts.v1, backend="onnxruntime", onnx_cache_dir=tmp_path, batch_threads=2)
    predictor.forward = predictor._single = _Gate(predictor.forward, "single", delay_s=0.08)
    predictor.forward_batch = _Gate(predictor.forward_batch, "wide", delay_s=wide_delay)
    predictor.choose_idle_lane(rounds=3)
    record = predictor.info["idle_lane"]
    assert predictor.idle_lane is on and record["on"] is on
    assert (record["wide_ms"] < record["single_ms"]) is on


def test_no_idle_lane_without_a_wider_runtime(trained_artifacts, tmp_path):
    predictor = load_predictor(trained_artifacts.v1, backend="onnxruntime", onnx_cache_dir=tmp_path, batch_threads=1)
    assert predictor.idle_lane is False and predictor.info["idle_lane"] == {"on": False, "why": "no wider runtime"}


def test_embeddings_come_from_the_same_forward_and_are_equal_across_runtimes(trained_artifacts, tmp_path):
    """The serving graph returns [logits | embedding]: every runtime gives the same L2-normalised embedding
    (the classifier's pooled input) with its logits, and pictures of one character lie closer together than
    pictures of two."""
    images = [class_image_bytes(label, 110 + i) for i in range(3) for label in LABELS]
    found = {}
    for backend in ("torch", "onnxruntime", "openvino-fp32"):
        if backend.startswith("openvino") and importlib.util.find_spec("openvino") is None:
            continue
        predictor = load_predictor(trained_artifacts.v1, backend=backend, onnx_cache_dir=tmp_path)
        probabilities, embeddings = predictor.infer(predictor.preprocess(images))
        assert predictor.embedding_dim == embeddings.shape[1] > 0
        assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
        assert np.abs(probabilities - predictor.predict(images)).max() < 1e-6  # one forward, both answers
        found[backend] = embeddings
    assert len(found) >= 2
    for backend, embeddings in found.items():
        assert np.abs(embeddings - found["torch"]).max() < 1e-4, backend
    e = found["torch"]
    same = [float(e[i] @ e[j]) for i in range(len(e)) for j in range(len(e)) if i < j and i % 3 == j % 3]
    other = [float(e[i] @ e[j]) for i in range(len(e)) for j in range(len(e)) if i % 3 != j % 3]
    assert np.mean(same) > np.mean(other)
    many = load_predictor(trained_artifacts.v1, backend="torch").predict_many(images, embeddings=True)
    assert np.abs(many.embeddings - found["torch"]).max() < 1e-5


def test_the_temperature_divides_the_logits_and_keeps_the_ranking(trained_artifacts, tmp_path):
    plain = load_predictor(trained_artifacts.v1, backend="torch")
    hot = load_predictor(trained_artifacts.v1, backend="torch", temperature=3.0)
    batch = plain.preprocess([class_image_bytes(label, 120) for label in LABELS])
    logits = plain.logits(batch)
    assert plain.temperature == 1.0 and hot.temperature == 3.0
    expected = np.exp(logits / 3.0) / np.exp(logits / 3.0).sum(1, keepdims=True)
    assert np.abs(hot.probabilities(batch) - expected).max() < 1e-5
    assert (hot.probabilities(batch).argmax(1) == plain.probabilities(batch).argmax(1)).all()
    assert hot.probabilities(batch).max() < plain.probabilities(batch).max()  # less sure, same answer
    assert np.abs(hot.probabilities(batch, raw=True) - plain.probabilities(batch)).max() < 1e-6
    with pytest.raises(ValueError, match="temperature"):
        Predictor(model=plain.model, labels=LABELS, input_size=128, normalization=plain.normalization, temperature=0)
