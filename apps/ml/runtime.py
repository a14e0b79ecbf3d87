"""The fast predictor: image bytes in, class probabilities out. No Django here.

What makes it fast on a small CPU (numbers in docs/research performance.md and bench/api.py):

- the eval geometry of ``apps.ml.images.decode_eval_crop`` (JPEG ``draft``, short side to S, integer
  center crop): the very function training's cache is built with, so serving sees what validation saw;
  normalisation in numpy (single-threaded: small torch ops stall on a busy box);
- one batched forward for a batch request, under ``torch.inference_mode`` with channels-last memory;
- ONNX Runtime (fp32, numerically equal to eager PyTorch to ~1e-6) when it measurably wins, which
  ``backend="auto"`` decides by timing both on this machine when the model loads. The exported graph is
  cached on disk by the artifact's sha256, so a second process or restart skips the export.

The eval transform is the classic one: short side to ``round(input_size * 256 / 224)``, center crop
``input_size``, normalisation from the artifact.
"""
from __future__ import annotations

import hashlib
import itertools
import logging
import os
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from .artifacts import ArtifactError, load_serving_artifact
from .images import ImageRejected, decode_eval_crop

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "torch")
# Agreement demanded of a faster backend with eager PyTorch before it is used (probabilities).
AGREEMENT_TOLERANCE = 1e-4


# The predictor's refusals are the shared decoder's; the old name stays for callers.
InputRejected = ImageRejected


class Normalizer:
    """uint8 HWC crops → float32 NCHW batch, ``(x / 255 - mean) / std`` as one multiply-add."""

    def __init__(self, normalization: dict) -> None:
        mean = np.asarray(normalization.get("mean", (0.485, 0.456, 0.406)), dtype=np.float32)
        std = np.asarray(normalization.get("std", (0.229, 0.224, 0.225)), dtype=np.float32)
        self.scale = (1.0 / (255.0 * std)).reshape(3, 1, 1).astype(np.float32)
        self.bias = (-mean / std).reshape(3, 1, 1).astype(np.float32)

    def __call__(self, images: list[Image.Image]) -> np.ndarray:
        first = images[0]
        batch = np.empty((len(images), 3, first.height, first.width), dtype=np.float32)
        for i, img in enumerate(images):
            batch[i] = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
        batch *= self.scale
        batch += self.bias
        return batch


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted, dtype=np.float64)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


# --- Backends: float32 NCHW numpy batch → logits ----------------------------------------------------

class TorchBackend:
    name = "torch"

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval().to(memory_format=torch.channels_last)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
            return self.model(x).float().numpy()


def export_onnx(model: nn.Module, input_size: int, path: Path) -> Path:
    """Export with a dynamic batch axis. The TorchScript exporter takes ~1 s where the dynamo one takes
    ~20 s for MobileNetV2, so it goes first; the dynamo exporter is the fallback."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    example = (torch.zeros(1, 3, input_size, input_size),)
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, example, str(tmp), dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["logits"], dynamic_axes=axes)
        except Exception as exc:  # noqa: BLE001 - the legacy exporter may be gone in a later torch
            logger.info("TorchScript ONNX export failed (%s); trying the dynamo exporter", exc)
            program = torch.onnx.export(model, example, dynamo=True, opset_version=18,
                                        input_names=["input"], output_names=["logits"], dynamic_axes=axes)
            program.save(str(tmp))
    tmp.replace(path)  # atomic: a concurrent process never loads half a graph
    return path


class OnnxBackend:
    name = "onnxruntime"

    def __init__(self, onnx_path: Path, *, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        if threads > 1:  # no busy-waiting workers: on a small shared box they steal the cores they wait for
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        # InferenceSession.run is thread-safe: concurrent requests share one session.
        return self.session.run(None, {self.input_name: batch})[0]


def _median_ms(fn, batch: np.ndarray, rounds: int) -> float:
    fn(batch)  # warm-up (allocations, kernel choice)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn(batch)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


# --- The predictor -------------------------------------------------------------------------------

@dataclass
class ManyPredictions:
    kept: list[int]  # indexes (into the input stream) of the files that were predicted, in order
    probabilities: np.ndarray  # len(kept) × classes
    rejected: list[tuple[int, ImageRejected]]
    seconds: float  # decode + forward

    def accuracy(self, labels: Sequence[int]) -> float | None:
        """Top-1 over every file given (a rejected file counts as wrong); ``None`` for no file."""
        if not labels:
            return None
        hits = sum(int(self.probabilities[row].argmax() == labels[index]) for row, index in enumerate(self.kept))
        return hits / len(labels)


@dataclass
class Predictor:
    """A loaded model with its labels and eval transform; thread-safe (no per-call state)."""

    model: nn.Module
    labels: list[str]
    input_size: int
    normalization: dict
    backend: str = "auto"
    threads: int = 1
    batch_threads: int = 1  # a batch request: decode in parallel, forward with this many threads
    onnx_path: Path | None = None  # where the exported graph is (or will be) cached
    max_pixels: int = 40_000_000
    min_side: int = 8
    info: dict = field(default_factory=dict)  # chosen backend, timings that chose it, load time

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"Unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}.")
        self.normalize = Normalizer(self.normalization)
        self.eager = TorchBackend(self.model)
        self.forward = self._choose_backend()
        self.forward_batch = self.forward
        if self.forward.name == "onnxruntime" and self.batch_threads > self.threads:
            self.forward_batch = OnnxBackend(self._onnx_file, threads=self.batch_threads)
        self._pool = None

    def _choose_backend(self):
        if self.backend == "torch":
            self.info["backend"] = "torch"
            return self.eager
        try:
            onnx = self._onnx_backend()
            try:
                self._check_agreement(onnx)
            except RuntimeError:
                if self._exported_now:
                    raise
                # A cached graph from another model (a reused path): export this one and check again.
                export_onnx(self.model, self.input_size, self._onnx_file)
                onnx = OnnxBackend(self._onnx_file, threads=self.threads)
                self._check_agreement(onnx)
        except Exception as exc:  # noqa: BLE001 - no onnxruntime, an op it lacks, a mismatch: eager still works
            if self.backend == "onnxruntime":
                raise
            logger.warning("ONNX Runtime unavailable for this model (%s); serving with eager PyTorch", exc)
            self.info.update(backend="torch", onnx_error=str(exc))
            return self.eager
        if self.backend == "onnxruntime":
            self.info["backend"] = "onnxruntime"
            return onnx
        # auto: time both on this machine, batch 1, and keep the faster one.
        probe = np.random.default_rng(0).standard_normal((1, 3, self.input_size, self.input_size), dtype=np.float32)
        torch_ms = min(_median_ms(self.eager, probe, 3), _median_ms(self.eager, probe, 3))
        onnx_ms = min(_median_ms(onnx, probe, 3), _median_ms(onnx, probe, 3))
        chosen = onnx if onnx_ms < torch_ms else self.eager
        self.info.update(backend=chosen.name, choice_ms={"torch": round(torch_ms, 3), "onnxruntime": round(onnx_ms, 3)})
        return chosen

    def _onnx_backend(self) -> OnnxBackend:
        path = self.onnx_path
        if path is None:
            import tempfile

            path = Path(tempfile.mkdtemp(prefix="kyara-onnx-")) / "model.onnx"
        self._onnx_file = path
        self._exported_now = not Path(path).is_file()
        if self._exported_now:
            export_onnx(self.model, self.input_size, path)
        try:
            return OnnxBackend(path, threads=self.threads)
        except Exception:  # noqa: BLE001 - a stale or damaged cached graph: export again once
            export_onnx(self.model, self.input_size, path)
            return OnnxBackend(path, threads=self.threads)

    def _check_agreement(self, onnx: OnnxBackend) -> None:
        probe = np.random.default_rng(1).standard_normal((2, 3, self.input_size, self.input_size), dtype=np.float32)
        expected, got = softmax(self.eager(probe)), softmax(onnx(probe))
        diff = float(np.abs(expected - got).max())
        if diff > AGREEMENT_TOLERANCE or not np.array_equal(expected.argmax(1), got.argmax(1)):
            raise RuntimeError(f"ONNX Runtime disagrees with eager PyTorch (max probability difference {diff:.2e})")
        self.info["onnx_max_prob_diff"] = diff

    @property
    def backend_name(self) -> str:
        return self.forward.name

    def decode(self, data: bytes) -> Image.Image:
        return decode_eval_crop(data, image_size=self.input_size, max_pixels=self.max_pixels, min_side=self.min_side)

    def decode_batch(self, images: list[bytes]) -> list[Image.Image]:
        """Decode several uploads on ``batch_threads`` threads (Pillow releases the GIL while decoding).
        The first bad one raises its ``InputRejected`` with ``index`` set."""
        def one(item: tuple[int, bytes]):
            try:
                return self.decode(item[1])
            except InputRejected as exc:
                exc.index = item[0]
                raise

        if len(images) == 1 or self.batch_threads <= 1:
            return [one(item) for item in enumerate(images)]
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.batch_threads, thread_name_prefix="kyara-decode")
        return list(self._pool.map(one, enumerate(images)))

    def preprocess(self, images: list[bytes]) -> np.ndarray:
        return self.normalize(self.decode_batch(images))

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        return softmax((self.forward_batch if len(batch) > 1 else self.forward)(batch))

    def predict(self, images: list[bytes]) -> np.ndarray:
        """Decode every image, then one batched forward; rows of class probabilities."""
        return self.probabilities(self.preprocess(images))

    def predict_many(self, blobs: Iterable[bytes], *, batch_size: int = 32) -> ManyPredictions:
        """Class probabilities for a stream of files, ``batch_size`` at a time, through exactly the path
        ``/predict_batch`` takes (``decode_batch``'s decoder, the normaliser, the batch forward). A file
        that cannot be decoded is listed in ``rejected`` with its index, never raised. ``blobs`` is read
        lazily, so memory stays flat whatever the split's size; ``seconds`` excludes reading."""
        kept, chunks, rejected, seconds = [], [], [], 0.0
        batch_size = max(1, batch_size)
        iterator = iter(enumerate(blobs))
        while chunk := list(itertools.islice(iterator, batch_size)):
            began = time.perf_counter()
            crops = []
            for index, data in chunk:
                try:
                    crops.append(self.decode(data))
                    kept.append(index)
                except InputRejected as exc:
                    rejected.append((index, exc))
            if crops:
                chunks.append(self.probabilities(self.normalize(crops)))
            seconds += time.perf_counter() - began
        probabilities = np.concatenate(chunks) if chunks else np.zeros((0, len(self.labels)), dtype=np.float32)
        return ManyPredictions(kept=kept, probabilities=probabilities, rejected=rejected, seconds=seconds)

    def top_k(self, probabilities: np.ndarray, k: int) -> list[tuple[str, float]]:
        k = max(1, min(k, len(self.labels)))
        order = np.argsort(-probabilities, kind="stable")[:k]
        return [(self.labels[i], float(probabilities[i])) for i in order]

    def warm_up(self) -> None:
        """Run the first batches now, not on the first request after a promotion."""
        self.forward(np.zeros((1, 3, self.input_size, self.input_size), dtype=np.float32))
        self.forward_batch(np.zeros((2, 3, self.input_size, self.input_size), dtype=np.float32))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_predictor(
    path: Path, *, expected_sha256: str | None = None, backend: str = "auto", threads: int = 1, batch_threads: int = 1,
    onnx_cache_dir: Path | None = None, max_pixels: int = 40_000_000, min_side: int = 8,
) -> Predictor:
    """Load a serving artifact into a warmed-up ``Predictor``; ``ArtifactError`` says why it cannot be."""
    started = time.perf_counter()
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"The artifact file {path} is missing.")
    sha = file_sha256(path)
    if expected_sha256 and sha != expected_sha256:
        raise ArtifactError(
            f"The artifact {path.name} is corrupt: its sha256 is {sha[:12]}…, the registry expects "
            f"{expected_sha256[:12]}…. Re-register or restore the file."
        )
    model, meta = load_serving_artifact(path)
    onnx_path = Path(onnx_cache_dir) / f"{sha}.onnx" if onnx_cache_dir else None
    predictor = Predictor(model=model, labels=meta.labels, input_size=meta.input_size,
                          normalization=meta.normalization, backend=backend, threads=threads, batch_threads=batch_threads,
                          onnx_path=onnx_path,
                          max_pixels=max_pixels, min_side=min_side)
    predictor.warm_up()
    predictor.info["load_ms"] = round((time.perf_counter() - started) * 1000, 1)
    predictor.info["sha256"] = sha
    return predictor
