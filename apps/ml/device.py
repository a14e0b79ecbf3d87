"""Where training runs and in which precision. No Django here.

torch is imported inside the functions: the choices above are read by settings forms and the training
config at Django start-up, which must not pay for torch.
"""
from __future__ import annotations

import logging
import os
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")


class DeviceError(RuntimeError):
    pass


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; an explicit name that is not available is an error."""
    import torch

    name = (name or "auto").lower()
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError("CUDA was asked for but torch sees no CUDA device; use --device cpu or auto.")
        return torch.device(name)
    if name == "mps":
        if not _mps_available():
            raise DeviceError("MPS was asked for but is not available on this machine; use --device cpu or auto.")
        _enable_mps_fallback()
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    if name != "auto":
        raise DeviceError(f"Unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}.")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        _enable_mps_fallback()
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def _enable_mps_fallback() -> None:
    # Operations MPS lacks then run on the CPU instead of failing; torch warns once per operation, and
    # we log that the fallback is on so a slow epoch has an explanation in the job's log.
    if os.environ.get("PYTORCH_ENABLE_MPS_FALLBACK") != "1":
        os.environ["PYTORCH_ENABLE_MPS_FALLBACK"] = "1"
    logger.warning("MPS: operations it does not implement fall back to the CPU (PYTORCH_ENABLE_MPS_FALLBACK=1)")


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """AVX-512 BF16 or AMX: the CPU computes bf16 natively, so autocast pays off."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def resolve_precision(precision: str, device: torch.device, image_size: int) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32.

    ``auto``: bf16 (fp16 where bf16 is missing) on CUDA; on a CPU with native bf16 only from 192 px up,
    because measured on such a CPU bf16 won 1.46x at 224 px and lost (0.73-0.90x) at 128-160 px, where
    the step is bound by memory traffic rather than arithmetic. fp32 on MPS.
    """
    import torch

    precision = (precision or "auto").lower()
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_bf16() and image_size >= 192:
        return torch.bfloat16
    return None


def set_threads(threads: int | None) -> int:
    """Intra-op threads for this process (None or 0: leave torch's default)."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()
