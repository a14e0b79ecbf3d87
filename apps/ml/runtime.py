"""The fast predictor: image bytes in, class probabilities out. No Django here.

What makes it fast on a small CPU (numbers in docs/research performance.md and bench/api.py):

- the eval geometry of ``apps.ml.images.decode_eval_crop`` (JPEG ``draft``, short side to S, integer
  center crop): the very function training's cache is built with, so serving sees what validation saw;
  normalisation in numpy (single-threaded: small torch ops stall on a busy box);
- one batched forward for a batch request, at the batch's size, on ``batch_threads`` threads; optionally
  concurrent single requests gathered into one forward (``MicroBatcher``);
- the idle lane: a lone single-image request (nothing else in flight in this process) runs on the batch
  runtime's threads, where ``warm_up`` measured that to be faster on this machine; under load each request
  keeps its own thread, so concurrent requests still use every core;
- the runtime this machine runs fastest among those that keep the model's answers (``apps.ml.backends``
  lists them; ``apps.ml.runtime_choice`` measures and guards them on real images). A ``Predictor`` is told
  which one to use; ``backend="auto"`` (no measurement at hand) is ONNX Runtime fp32 where it loads, else
  eager PyTorch: both fp32, the same function.

The eval transform is the classic one: short side to ``round(input_size * 256 / 224)``, center crop
``input_size``, normalisation from the artifact.
"""
from __future__ import annotations

import itertools
import logging
import queue
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from torch import nn

from . import backends
from .artifacts import ArtifactError, load_serving_artifact
from .backends import CANDIDATES, TorchBackend
from .calibration import softmax as calibrated_softmax
from .digests import file_sha256, weights_digest
from .heads import with_embedding
from .images import ImageRejected, decode_eval_crop
from .machine import cpu_count

logger = logging.getLogger(__name__)

BACKENDS = ("auto", *CANDIDATES)


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


class MicroBatcher:
    """Concurrent single-image forwards gathered into one batch forward, as Triton's dynamic batching does,
    in this process. One thread runs the forwards: it takes the first waiting request, then whatever else
    arrives within ``window_s`` (0: only what is already waiting, so a lone request never waits), up to
    ``max_batch``, and runs them as one forward. Off unless a setting turns it on (see bench/api.py)."""

    def __init__(self, single, batch, *, window_s: float = 0.0, max_batch: int = 8) -> None:
        self.single, self.batch = single, batch
        self.window_s, self.max_batch = max(0.0, window_s), max(2, max_batch)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0  # forwards run, and images in them: a test and the bench read them
        self.images = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="kyara-microbatch", daemon=True)
                    self._thread.start()
        slot = {"input": batch, "done": threading.Event()}
        self._queue.put(slot)
        slot["done"].wait()
        if "error" in slot:
            raise slot["error"]
        return slot["output"]

    def _gather(self, first: dict) -> list[dict]:
        slots, count = [first], len(first["input"])
        deadline = time.perf_counter() + self.window_s
        while count < self.max_batch:
            try:
                remaining = deadline - time.perf_counter()
                slot = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            slots.append(slot)
            count += len(slot["input"])
        return slots

    def _run(self) -> None:
        while True:
            slots = self._gather(self._queue.get())
            try:
                inputs = np.concatenate([slot["input"] for slot in slots]) if len(slots) > 1 else slots[0]["input"]
                logits = (self.batch if len(inputs) > 1 else self.single)(inputs)
                self.batches += 1
                self.images += len(inputs)
                offset = 0
                for slot in slots:
                    slot["output"] = logits[offset:offset + len(slot["input"])]
                    offset += len(slot["input"])
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request, never kills the thread
                for slot in slots:
                    slot["error"] = exc
            for slot in slots:
                slot["done"].set()


# --- The predictor -------------------------------------------------------------------------------

@dataclass
class ManyPredictions:
    kept: list[int]  # indexes (into the input stream) of the files that were predicted, in order
    probabilities: np.ndarray  # len(kept) × classes
    rejected: list[tuple[int, ImageRejected]]
    seconds: float  # decode + forward
    embeddings: np.ndarray | None = None  # len(kept) × embedding_dim, L2-normalised (when asked for)

    def accuracy(self, labels: Sequence[int]) -> float | None:
        """Top-1 over every file given (a rejected file counts as wrong); ``None`` for no file."""
        if not labels:
            return None
        hits = sum(int(self.probabilities[row].argmax() == labels[index]) for row, index in enumerate(self.kept))
        return hits / len(labels)


@dataclass
class Predictor:
    """A loaded model with its labels and eval transform; thread-safe (no per-call state).

    ``backend`` names the runtime (``apps.ml.backends.CANDIDATES``) or ``auto``; graphs it needs are
    exported to ``onnx_path`` (stamped with the weights' digest, so a cached graph of other weights is
    replaced) or read from ``int8_path`` (made by ``apps.ml.runtime_choice``). An explicitly named runtime
    that cannot run here raises (``Unavailable`` says why); ``auto`` falls back to eager PyTorch.
    """

    model: nn.Module
    labels: list[str]
    input_size: int
    normalization: dict
    backend: str = "auto"
    threads: int = 1
    batch_threads: int = 1  # a batch request: decode in parallel, forward with this many threads
    onnx_path: Path | None = None  # where the exported fp32 graph is (or will be) cached
    int8_path: Path | None = None  # the quantised graph, for the int8 runtimes
    cache_dir: Path | None = None  # OpenVINO's compiled-graph cache
    max_pixels: int = 40_000_000
    min_side: int = 8
    microbatch: bool = False  # gather concurrent single-image forwards into one (MicroBatcher)
    microbatch_window_ms: float = 0.0
    microbatch_max: int = 8
    # Calibration: probabilities are softmax(logits / temperature) (apps.ml.calibration); 1.0 is uncalibrated.
    temperature: float = 1.0
    info: dict = field(default_factory=dict)  # the runtime, how it was chosen, load time

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"Unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}.")
        if not self.temperature or self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature!r}")
        # Every runtime runs the serving graph: [logits | L2-normalised embedding] from one forward (heads.py).
        self.model = with_embedding(self.model, copied=True)
        self.embedding_dim: int | None = None  # known after the first forward (0: the graph has none)
        self.normalize = Normalizer(self.normalization)
        self.eager = TorchBackend(self.model)
        self._stamp: str | None = None
        self.forward, self.forward_batch = self._build(self.backend)
        self.info["backend"] = self.forward.name
        self._single = self.forward
        if self.microbatch:
            self._single = MicroBatcher(self.forward, self.forward_batch, window_s=self.microbatch_window_ms / 1000,
                                        max_batch=self.microbatch_max)
            self.info["microbatch"] = {"window_ms": self.microbatch_window_ms, "max": self.microbatch_max}
        self._pool = None
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self.idle_lane = False  # decided by warm_up, from timings on this machine

    @property
    def weights_stamp(self) -> str:
        """The digest of the model's weights: what an exported graph must carry to be used for them."""
        if self._stamp is None:
            self._stamp = weights_digest(self.model.state_dict())
        return self._stamp

    def fp32_graph(self) -> Path:
        """The exported fp32 ONNX graph of these weights (exported now unless the cached one is theirs)."""
        if self.onnx_path is None:
            self.onnx_path = Path(tempfile.mkdtemp(prefix="kyara-onnx-")) / "model.onnx"
        return backends.ensure_onnx(self.model, self.input_size, self.onnx_path, stamp=self.weights_stamp)

    def build_backend(self, name: str, *, threads: int, streams: int = 1):
        """One runtime for this model (``Unavailable`` when this machine cannot run it)."""
        if name == "torch":
            return self.eager
        graph = self.fp32_graph() if name in ("onnxruntime", "openvino-fp32", "openvino-bf16") else None
        return backends.build(name, model=self.model, onnx_path=graph, int8_path=self.int8_path, threads=threads,
                              streams=streams, cache_dir=self.cache_dir)

    def runtime_pair(self, name: str):
        """(single-image backend, batch backend) of the runtime ``name``, built as serving runs it: the batch one
        on ``batch_threads`` (the single one itself when those are its threads, or for eager runtimes).
        ``Unavailable`` when this machine cannot run it. ``apps.ml.runtime_choice`` times exactly these."""
        # Single requests: 1 thread each (concurrent requests use the other cores); OpenVINO needs as many
        # streams as requests may run at once, ONNX Runtime and PyTorch run on the caller's thread.
        single = self.build_backend(name, threads=self.threads,
                                    streams=max(1, cpu_count() // max(1, self.threads)))
        batch = single
        if self.batch_threads != self.threads and name not in ("torch", "cuda-fp16"):
            batch = self.build_backend(name, threads=self.batch_threads, streams=1)
        return single, batch

    def _build(self, name: str):
        """The runtime pair to serve with; ``auto`` is ONNX Runtime fp32, else eager PyTorch."""
        if name != "auto":
            return self.runtime_pair(name)
        try:
            return self.runtime_pair("onnxruntime")
        except Exception as exc:  # noqa: BLE001 - no onnxruntime, an op it lacks: eager still works
            logger.warning("ONNX Runtime unavailable for this model (%s); serving with eager PyTorch", exc)
            self.info["onnx_error"] = str(exc)
            return self.eager, self.eager

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

    def split(self, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The serving graph's one output as (logits, embeddings); embeddings are ``N × 0`` when the
        architecture gives none."""
        classes = len(self.labels)
        self.embedding_dim = outputs.shape[1] - classes
        return outputs[:, :classes], outputs[:, classes:]

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.split(self.outputs(batch))[0]

    def outputs(self, batch: np.ndarray) -> np.ndarray:
        """One forward at the batch's size: the batch runtime for several images; for one, the single
        runtime (or the micro-batcher, when on), or the batch runtime's threads when the idle lane is on and
        nothing else is in flight."""
        with self._in_flight_lock:
            alone = self._in_flight == 0
            self._in_flight += 1
        try:
            if len(batch) > 1 or (alone and self.idle_lane):
                return self.forward_batch(batch)
            return self._single(batch)
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1

    def calibrated(self, logits: np.ndarray, *, raw: bool = False) -> np.ndarray:
        """Class probabilities of logits: ``softmax(logits / temperature)``, or plain softmax with ``raw``."""
        if raw or self.temperature == 1.0:
            return softmax(logits)
        return calibrated_softmax(logits, self.temperature).astype(np.float32)

    def probabilities(self, batch: np.ndarray, *, raw: bool = False) -> np.ndarray:
        return self.calibrated(self.logits(batch), raw=raw)

    def infer(self, batch: np.ndarray, *, raw: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated probabilities, L2-normalised embeddings) of a normalised batch, from one forward."""
        logits, embeddings = self.split(self.outputs(batch))
        return self.calibrated(logits, raw=raw), np.ascontiguousarray(embeddings, dtype=np.float32)

    def predict(self, images: list[bytes]) -> np.ndarray:
        """Decode every image, then one batched forward; rows of class probabilities."""
        return self.probabilities(self.preprocess(images))

    def predict_many(self, blobs: Iterable[bytes], *, batch_size: int = 32, raw: bool = False,
                     embeddings: bool = False) -> ManyPredictions:
        """Class probabilities for a stream of files, ``batch_size`` at a time, through exactly the path
        ``/predict_batch`` takes (``decode_batch``'s decoder, the normaliser, the batch forward). A file
        that cannot be decoded is listed in ``rejected`` with its index, never raised. ``blobs`` is read
        lazily, so memory stays flat whatever the split's size; ``seconds`` excludes reading. ``raw``:
        uncalibrated probabilities (to fit a temperature on); ``embeddings``: keep them too (same forward)."""
        kept, chunks, vectors, rejected, seconds = [], [], [], [], 0.0
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
                probabilities, vector = self.infer(self.normalize(crops), raw=raw)
                chunks.append(probabilities)
                if embeddings:
                    vectors.append(vector)
            seconds += time.perf_counter() - began
        probabilities = np.concatenate(chunks) if chunks else np.zeros((0, len(self.labels)), dtype=np.float32)
        kept_vectors = None
        if embeddings:
            kept_vectors = np.concatenate(vectors) if vectors else np.zeros((0, self.embedding_dim or 0), np.float32)
        return ManyPredictions(kept=kept, probabilities=probabilities, rejected=rejected, seconds=seconds,
                               embeddings=kept_vectors)

    def top_k(self, probabilities: np.ndarray, k: int) -> list[tuple[str, float]]:
        k = max(1, min(k, len(self.labels)))
        order = np.argsort(-probabilities, kind="stable")[:k]
        return [(self.labels[i], float(probabilities[i])) for i in order]

    def warm_up(self, sizes: Iterable[int] = ()) -> None:
        """Run the first batches now (OpenVINO compiles a graph per batch size), not on the first request
        after a promotion."""
        for size in sorted({1, 2, *sizes}):
            (self.forward if size == 1 else self.forward_batch)(
                np.zeros((size, 3, self.input_size, self.input_size), dtype=np.float32))
        self.choose_idle_lane()

    def choose_idle_lane(self, *, rounds: int = 7, margin: float = 0.9) -> None:
        """Turn the idle lane on only where one image on the batch runtime's threads measured at least
        ``1 - margin`` faster than on the single runtime, here and now (a core that is an SMT sibling, or a
        busy box, makes the extra thread worthless); the timings are kept in ``info["idle_lane"]``."""
        self.idle_lane = False
        if self.forward_batch is self.forward or self.microbatch:
            self.info["idle_lane"] = {"on": False, "why": "no wider runtime" if not self.microbatch
                                      else "micro-batching gathers single requests instead"}
            return
        probe = np.zeros((1, 3, self.input_size, self.input_size), dtype=np.float32)
        timings = {"single": [], "wide": []}
        for backend in (self.forward, self.forward_batch) * 2:
            backend(probe)  # the first call of a runtime at a size may compile
        for _ in range(max(1, rounds)):
            for backend, into in ((self.forward, "single"), (self.forward_batch, "wide")):
                began = time.perf_counter()
                backend(probe)
                timings[into].append((time.perf_counter() - began) * 1000)
        single, wide = (float(np.median(timings[k])) for k in ("single", "wide"))
        self.idle_lane = wide <= margin * single
        self.info["idle_lane"] = {"on": self.idle_lane, "single_ms": round(single, 3), "wide_ms": round(wide, 3),
                                  "threads": [self.threads, self.batch_threads]}


def load_model(path: Path, *, expected_sha256: str | None = None):
    """``(model, meta, sha256)`` of a serving artifact whose bytes are what the registry expects;
    ``ArtifactError`` says why not."""
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
    return model, meta, sha


def load_predictor(
    path: Path, *, expected_sha256: str | None = None, backend: str = "auto", threads: int = 1, batch_threads: int = 1,
    onnx_cache_dir: Path | None = None, int8_path: Path | None = None, max_pixels: int = 40_000_000,
    min_side: int = 8, microbatch: bool = False, microbatch_window_ms: float = 0.0, microbatch_max: int = 8,
    warm_sizes: Iterable[int] = (), warm: bool = True, temperature: float | None = None,
) -> Predictor:
    """Load a serving artifact into a warmed-up ``Predictor``; ``ArtifactError`` says why it cannot be.
    ``temperature``: the registry's (a version calibrated after training); else the artifact's own."""
    started = time.perf_counter()
    model, meta, sha = load_model(path, expected_sha256=expected_sha256)
    cache = Path(onnx_cache_dir) if onnx_cache_dir else None
    predictor = Predictor(model=model, labels=meta.labels, input_size=meta.input_size,
                          normalization=meta.normalization, backend=backend, threads=threads,
                          batch_threads=batch_threads, onnx_path=cache / f"{sha}.onnx" if cache else None,
                          int8_path=int8_path, cache_dir=cache / "openvino" if cache else None,
                          max_pixels=max_pixels, min_side=min_side, microbatch=microbatch,
                          microbatch_window_ms=microbatch_window_ms, microbatch_max=microbatch_max,
                          temperature=temperature or meta.temperature)
    if warm:
        predictor.warm_up(warm_sizes)
    predictor.info["load_ms"] = round((time.perf_counter() - started) * 1000, 1)
    predictor.info["sha256"] = sha
    return predictor
