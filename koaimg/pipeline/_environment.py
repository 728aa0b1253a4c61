"""What this installation can do: versions, DICOM codecs, CUDA / numba-cuda status, numba cache. For `koaimg doctor`."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import sys

from .. import __version__, _numba

_PACKAGES = ("numpy", "scipy", "pydicom", "highdicom", "nibabel", "SimpleITK", "scikit-image", "numba", "llvmlite",
             "torch", "monai", "typer", "rich", "pillow", "python-gdcm", "pylibjpeg", "pylibjpeg-openjpeg",
             "pylibjpeg-rle", "pyjpegls", "numba-cuda", "dask", "fastapi", "statsmodels", "matplotlib")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch_cuda() -> dict[str, object]:
    if importlib.util.find_spec("torch") is None:
        return {"available": False, "reason": "torch not installed"}
    import torch

    info: dict[str, object] = {"available": bool(torch.cuda.is_available()), "torch_cuda_build": torch.version.cuda}
    if info["available"]:
        info["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    else:
        info["reason"] = "CPU-only torch build" if torch.version.cuda is None else "no CUDA device or driver visible"
    return info


def _numba_cuda() -> dict[str, object]:
    simulator = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"
    info: dict[str, object] = {"package": _version("numba-cuda"), "simulator": simulator}
    try:
        from numba import cuda

        info["implementation"] = getattr(cuda, "implementation", "built-in")
        info["available"] = bool(cuda.is_available()) and not simulator
    except Exception as exc:  # a broken CUDA install must not break doctor
        info["available"] = False
        info["reason"] = f"{type(exc).__name__}: {str(exc)[:100]}"
    if not info.get("available") and "reason" not in info:
        info["reason"] = "simulator enabled" if simulator else "no CUDA driver/device (install koaimg[gpu] on a GPU)"
    return info


def environment_report() -> dict[str, object]:
    """A JSON-ready description of the installation."""
    from ..io import codec_status

    try:
        import numba

        threading_layer = numba.config.THREADING_LAYER
        threads = numba.config.NUMBA_NUM_THREADS
    except Exception:  # pragma: no cover - numba is a hard dependency
        threading_layer, threads = "unknown", None
    return {
        "koaimg": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "packages": {name: _version(name) for name in _PACKAGES},
        "dicom_codecs": codec_status(),
        "cuda_torch": _torch_cuda(),
        "cuda_numba": _numba_cuda(),
        "numba": {"cache_dir": _numba.cache_dir(), "threading_layer": threading_layer, "threads": threads,
                  "fastmath": _numba.FASTMATH},
    }
