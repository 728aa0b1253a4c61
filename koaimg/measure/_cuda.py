"""CUDA versions of the thickness kernels: the same scalar maths as ``_kernels.py``, compiled for the GPU.

The scalar functions are re-bound to a namespace where their callees are CUDA device functions (the function
objects share their code with the CPU build, so the maths cannot drift apart). One thread per seed voxel.
Imported lazily: numba's CUDA target only loads when asked for, and tests run it under NUMBA_ENABLE_CUDASIM=1.
"""

from __future__ import annotations

import math
import types

import numpy as np
from numba import cuda

from . import _kernels


def _device(fn, namespace: dict):
    clone = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__)
    return cuda.jit(device=True)(clone)


_ns: dict = {"math": math}
_ns["trilinear"] = _device(_kernels.trilinear_py, _ns)
_ns["world_gradient"] = _device(_kernels.world_gradient_py, _ns)
_ns["project_to_level"] = _device(_kernels.project_to_level_py, _ns)
_ns["march"] = _device(_kernels.march_py, _ns)
world_gradient_d = _ns["world_gradient"]
project_to_level_d = _ns["project_to_level"]
march_d = _ns["march"]


@cuda.jit
def _normal_thickness_kernel(bone, union, seeds, jinv, normal_field, step_mm, max_mm, out):
    s = cuda.grid(1)
    if s >= seeds.shape[0]:
        return
    grad = cuda.local.array(3, dtype=np.float64)
    proj = cuda.local.array(4, dtype=np.float64)
    project_to_level_d(bone, 0.5, normal_field, seeds[s, 0], seeds[s, 1], seeds[s, 2], jinv, grad, 2.0, step_mm,
                       proj)
    world_gradient_d(normal_field, proj[0], proj[1], proj[2], jinv, grad)
    norm = math.sqrt(grad[0] * grad[0] + grad[1] * grad[1] + grad[2] * grad[2])
    out[s, 0] = proj[0]
    out[s, 1] = proj[1]
    out[s, 2] = proj[2]
    if norm < 1e-12 or proj[3] == 0.0:
        out[s, 3] = 0.0
        out[s, 4] = 0.0
        out[s, 5] = 0.0
        out[s, 6] = -1.0
        out[s, 7] = 0.0
        return
    nx = -grad[0] / norm
    ny = -grad[1] / norm
    nz = -grad[2] / norm
    out[s, 3] = nx
    out[s, 4] = ny
    out[s, 5] = nz
    out[s, 6] = march_d(union, 0.5, proj[0], proj[1], proj[2], nx, ny, nz, jinv, step_mm, max_mm)
    out[s, 7] = 1.0


def normal_thickness_cuda(bone: np.ndarray, union: np.ndarray, seeds: np.ndarray, jinv: np.ndarray,
                          normal_field: np.ndarray, step_mm: float, max_mm: float) -> np.ndarray:
    """GPU counterpart of ``_kernels.normal_thickness_cpu``; returns the (N, 8) rows."""
    out = np.zeros((seeds.shape[0], 8))
    if seeds.shape[0] == 0:
        return out
    d_out = cuda.to_device(out)
    threads = 128
    blocks = (seeds.shape[0] + threads - 1) // threads
    _normal_thickness_kernel[blocks, threads](cuda.to_device(np.ascontiguousarray(bone)),
                                              cuda.to_device(np.ascontiguousarray(union)),
                                              cuda.to_device(np.ascontiguousarray(seeds)),
                                              cuda.to_device(np.ascontiguousarray(jinv)),
                                              cuda.to_device(np.ascontiguousarray(normal_field)),
                                              float(step_mm), float(max_mm), d_out)
    return d_out.copy_to_host()


def cuda_usable() -> bool:
    """A real GPU is present (the simulator does not count)."""
    from numba import config

    return bool(not config.ENABLE_CUDASIM and cuda.is_available())
