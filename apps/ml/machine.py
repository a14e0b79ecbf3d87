"""What this machine is, as far as serving speed goes: CPU model and flags, cores, GPUs, runtime package
versions. No torch (a page render or ``manage.py check`` may ask), no Django."""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import platform
from pathlib import Path

# CPU flags that change which runtime wins (and so belong to the machine's fingerprint).
RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
                  "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "bf16", "i8mm")


@functools.cache
def cpu_info() -> dict:
    """CPU model name, vendor and the flags that matter here, from /proc/cpuinfo (empty elsewhere)."""
    name, vendor, flags = "", "", set()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and not name:
            name = value
        elif key == "vendor_id" and not vendor:
            vendor = value
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        if name and vendor and flags:
            break
    return {"model": name or platform.processor() or platform.machine(), "vendor": vendor,
            "flags": sorted(f for f in RELEVANT_FLAGS if f in flags)}


def native_bf16(cpu: dict | None = None) -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively, and the reason either way."""
    flags = set((cpu or cpu_info())["flags"])
    if "amx_bf16" in flags:
        return True, "AMX-BF16"
    if "avx512_bf16" in flags:
        return True, "AVX-512 BF16"
    return False, "this CPU has neither AMX-BF16 nor AVX-512 BF16: bf16 would be emulated"


def gpu_names() -> list[str]:
    """NVIDIA GPUs the driver lists, without importing torch (a page render must stay light)."""
    names = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            for line in info.read_text(errors="replace").splitlines():
                if line.startswith("Model:"):
                    names.append(line.split(":", 1)[1].strip())
        except OSError:
            continue
    return names


@functools.cache
def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_fingerprint(*, threads: int, batch_threads: int) -> tuple[str, dict]:
    """``(key, description)`` of this kind of machine as far as serving speed goes: CPU model and flags,
    cores, GPUs, the runtime packages' versions and the serving thread settings. Cheap, no torch."""
    cpu = cpu_info()
    description = {
        "cpu": cpu["model"], "vendor": cpu["vendor"], "flags": cpu["flags"], "cores": cpu_count(),
        "gpus": gpu_names(), "threads": threads, "batch_threads": batch_threads,
        "packages": {name: _version(name) for name in ("torch", "onnxruntime", "openvino")},
    }
    key = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]
    return key, description
