"""The runtimes a served model can run on, each optional, and what this machine is.

A backend is a callable: float32 NCHW numpy batch → logits (numpy). Candidates, by name:

- ``torch``: eager PyTorch fp32, channels-last, ``inference_mode``; the reference every other one is
  judged against, always available;
- ``onnxruntime``: ONNX Runtime fp32 (CPU);
- ``openvino-fp32`` / ``openvino-bf16``: OpenVINO's CPU plugin at that inference precision; bf16 only where
  the CPU computes it natively (AMX or AVX-512 BF16), elsewhere it would be emulated and lose;
- ``onnxruntime-int8`` / ``openvino-int8``: one statically quantised QDQ graph (per-channel int8 weights,
  uint8 activations, ranges from calibration images), run by either runtime;
- ``cuda-fp16``: PyTorch on a CUDA GPU in fp16, channels-last.

A missing package or device is an ``Unavailable`` with the reason, never an error: the candidate is skipped.
Which one serves is decided by ``apps.ml.runtime_choice`` (accuracy on real images, then speed).

Exported and quantised graphs are cached on disk and stamped (ONNX metadata) with the digest of the
weights they were made from (and of the calibration images for int8), so a cached file made from other
weights is never used: it is made again.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import os
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .machine import native_bf16

logger = logging.getLogger(__name__)

REFERENCE = "torch"
CANDIDATES = ("torch", "onnxruntime", "openvino-fp32", "openvino-bf16", "onnxruntime-int8", "openvino-int8",
              "cuda-fp16")
PRECISION = {"torch": "fp32", "onnxruntime": "fp32", "openvino-fp32": "fp32", "openvino-bf16": "bf16",
             "onnxruntime-int8": "int8", "openvino-int8": "int8", "cuda-fp16": "fp16"}
STAMP_KEY = "kyara_stamp"


class Unavailable(Exception):
    """This candidate cannot run here; ``str(exc)`` says why (shown on the models page)."""


# --- Backends ---------------------------------------------------------------------------------------

class TorchBackend:
    name = "torch"

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval().to(memory_format=torch.channels_last)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
            return self.model(x).float().numpy()


class CudaFp16Backend:
    """fp16 on a CUDA GPU; the batch travels to the device and the logits back as float32."""

    name = "cuda-fp16"

    def __init__(self, model: nn.Module) -> None:
        if not torch.cuda.is_available():
            raise Unavailable("no CUDA device")
        self.device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
        self.model = copy.deepcopy(model).eval().to(self.device, dtype=torch.float16,
                                                   memory_format=torch.channels_last)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device).half().contiguous(memory_format=torch.channels_last)
            return self.model(x).float().cpu().numpy()


class OnnxBackend:
    name = "onnxruntime"

    def __init__(self, onnx_path: Path, *, threads: int = 1, name: str = "onnxruntime") -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise Unavailable(f"onnxruntime is not installed ({exc})") from None
        self.name = name
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        if threads > 1:  # no busy-waiting workers: on a small shared box they steal the cores they wait for
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: not one line per unused constant of the exported graph
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        # InferenceSession.run is thread-safe: concurrent requests share one session.
        return self.session.run(None, {self.input_name: batch})[0]


_ov_core = None
_ov_lock = threading.Lock()


def _openvino_core():
    global _ov_core
    with _ov_lock:
        if _ov_core is None:
            try:
                import openvino as ov
            except ImportError as exc:
                raise Unavailable(f"openvino is not installed ({exc})") from None
            _ov_core = ov.Core()
        return _ov_core


class OpenVinoBackend:
    """OpenVINO's CPU plugin. A graph compiled for each batch size met (static shapes run faster than a
    dynamic batch axis), lazily; one infer request per thread and size, so concurrent requests never share
    one. ``streams`` parallel requests run at once, each on ``threads`` threads."""

    def __init__(self, onnx_path: Path, *, precision: str, threads: int = 1, streams: int = 1, name: str,
                 cache_dir: Path | None = None) -> None:
        self.core = _openvino_core()
        if precision not in ("f32", "bf16"):
            raise ValueError(precision)
        self.name = name
        self.config = {"INFERENCE_PRECISION_HINT": precision, "NUM_STREAMS": max(1, streams),
                       "INFERENCE_NUM_THREADS": max(1, streams) * max(1, threads), "ENABLE_CPU_PINNING": False}
        if cache_dir is not None:  # compiled blobs: a second process compiles in a fraction of the time
            self.config["CACHE_DIR"] = str(cache_dir)
        self.model = self.core.read_model(str(onnx_path))
        self._compiled: dict[int, object] = {}
        self._compile_lock = threading.Lock()
        self._local = threading.local()
        self.compiled(1)  # fails here, at load, if the plugin cannot run this graph at this precision

    def compiled(self, size: int):
        compiled = self._compiled.get(size)
        if compiled is None:
            with self._compile_lock:
                compiled = self._compiled.get(size)
                if compiled is None:
                    import openvino as ov

                    model = self.model.clone()
                    shape = list(model.inputs[0].get_partial_shape())
                    shape[0] = size
                    model.reshape({model.inputs[0]: ov.PartialShape(shape)})
                    compiled = self._compiled[size] = self.core.compile_model(model, "CPU", self.config)
        return compiled

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        size = len(batch)
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = {}
        request = requests.get(size)
        if request is None:
            request = requests[size] = self.compiled(size).create_infer_request()
        request.infer({0: np.ascontiguousarray(batch)})
        return request.get_output_tensor(0).data.copy()


# --- Graph files ------------------------------------------------------------------------------------

def onnx_stamp(path: Path) -> str | None:
    """The stamp an exported or quantised graph carries (``None``: no file, unreadable, or unstamped)."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - a missing or damaged file is a graph to make again
        return None
    return next((p.value for p in model.metadata_props if p.key == STAMP_KEY), None)


def _stamp_file(path: Path, stamp: str) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    model.metadata_props.add(key=STAMP_KEY, value=stamp)
    onnx.save(model, str(path))


def _tmp_name(path: Path) -> Path:
    return path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def export_onnx(model: nn.Module, input_size: int, path: Path, *, stamp: str = "") -> Path:
    """Export with a dynamic batch axis. The TorchScript exporter takes ~1 s where the dynamo one takes
    ~20 s for MobileNetV2, so it goes first; the dynamo exporter is the fallback."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    example = (torch.zeros(1, 3, input_size, input_size),)
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}}
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, example, str(tmp), dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["outputs"], dynamic_axes=axes)
        except Exception as exc:  # noqa: BLE001 - the legacy exporter may be gone in a later torch
            logger.info("TorchScript ONNX export failed (%s); trying the dynamo exporter", exc)
            program = torch.onnx.export(model, example, dynamo=True, opset_version=18,
                                        input_names=["input"], output_names=["outputs"], dynamic_axes=axes)
            program.save(str(tmp))
    if stamp:
        _stamp_file(tmp, stamp)
    tmp.replace(path)  # atomic: a concurrent process never loads half a graph
    return path


def ensure_onnx(model: nn.Module, input_size: int, path: Path, *, stamp: str) -> Path:
    """The fp32 graph of exactly these weights at ``path``: the cached file when its stamp says so, else
    exported now (a stale or damaged file is replaced, never served)."""
    path = Path(path)
    if onnx_stamp(path) != stamp:
        export_onnx(model, input_size, path, stamp=stamp)
    return path


def calibration_stamp(weights_stamp: str, batches_digest: str) -> str:
    return hashlib.sha256(f"{weights_stamp}:{batches_digest}:int8-qdq-v1".encode()).hexdigest()


def batches_digest(batches: Iterable[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for batch in batches:
        digest.update(np.ascontiguousarray(batch, dtype=np.float32).tobytes())
    return digest.hexdigest()


class _QuietQuantiser(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage()


def quantize_int8(onnx_path: Path, path: Path, batches: list[np.ndarray], *, stamp: str) -> Path:
    """Static post-training quantisation to a QDQ graph: int8 weights per output channel, uint8 activations
    with min/max ranges over ``batches`` (the version's own training images, through the eval geometry)."""
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
    except ImportError as exc:
        raise Unavailable(f"onnxruntime's quantisation tools are not installed ({exc})") from None
    if not batches:
        raise Unavailable("no calibration images (the version has no training images to calibrate int8 with)")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.queue = iter(batches)

        def get_next(self):
            batch = next(self.queue, None)
            return None if batch is None else {"input": batch}

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # the calibrator's own sessions: errors only
    quiet = _QuietQuantiser()
    logging.getLogger().addFilter(quiet)  # it advises pre-processing on the root logger, every time
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The calibrator keeps only each batch's min/max (reduced inside its graph), so memory stays small
            # without CalibMaxIntermediateOutputs, which (onnxruntime 1.32) drops what it has collected each
            # time the count is reached: the ranges would come from the last few batches only.
            quantize_static(str(onnx_path), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
    finally:
        logging.getLogger().removeFilter(quiet)
    _stamp_file(tmp, stamp)
    tmp.replace(path)
    for leftover in path.parent.glob("augmented_model*.onnx"):  # the calibrator's scratch graph
        leftover.unlink(missing_ok=True)
    return path


# --- One candidate, built ----------------------------------------------------------------------------

def build(name: str, *, model: nn.Module, onnx_path: Path | None = None, int8_path: Path | None = None,
          threads: int = 1, streams: int = 1, cache_dir: Path | None = None):
    """The backend ``name`` running with ``threads`` intra-op threads (``streams`` concurrent requests where
    the runtime has streams); ``Unavailable`` when this machine cannot run it."""
    if name == "torch":
        return TorchBackend(model)
    if name == "cuda-fp16":
        return CudaFp16Backend(model)
    if name in ("onnxruntime", "openvino-fp32", "openvino-bf16"):
        graph = onnx_path
    elif name in ("onnxruntime-int8", "openvino-int8"):
        graph = int8_path
    else:
        raise ValueError(f"Unknown runtime {name!r}; choose one of {', '.join(CANDIDATES)}.")
    if graph is None or not Path(graph).is_file():
        raise Unavailable(f"no {PRECISION[name]} graph for {name}")
    if name.startswith("onnxruntime"):
        return OnnxBackend(graph, threads=threads, name=name)
    if name == "openvino-bf16":
        ok, why = native_bf16()
        if not ok:
            raise Unavailable(why)
    precision = "bf16" if name == "openvino-bf16" else "f32"
    return OpenVinoBackend(graph, precision=precision, threads=threads, streams=streams, name=name,
                           cache_dir=cache_dir)
