"""The CUDA thickness kernel gives the CPU kernel's numbers: under numba's CUDA simulator (always), on a GPU (when
one is present, marker ``gpu``)."""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import numpy as np
    from koaimg.measure._kernels import normal_thickness_cpu
    from koaimg.measure._cuda import normal_thickness_cuda
    from koaimg.measure._fields import smooth_indicator
    spacing = np.array([0.4, 0.4, 0.7])
    # a tilted slab: bone below a plane, 2 mm of cartilage above it
    i, j, k = np.meshgrid(*[np.arange(n) for n in (24, 24, 16)], indexing="ij")
    normal = np.array([0.2, 0.3, 0.93]); normal /= np.linalg.norm(normal)
    height = (i * spacing[0] * normal[0] + j * spacing[1] * normal[1] + k * spacing[2] * normal[2]) - 5.0
    bone = height < 0
    cart = (height >= 0) & (height < 2.0)
    bone_f = smooth_indicator(bone, spacing, 0.55)
    union_f = smooth_indicator(bone | cart, spacing, 0.2)
    normal_f = smooth_indicator(bone, spacing, 1.0)
    jac = np.diag(spacing); jinv = np.linalg.inv(jac)
    interior = (i > 6) & (i < 17) & (j > 6) & (j < 17)
    seeds = np.argwhere(bone & (height > -0.5) & interior)[:40].astype(np.float64)
    cpu = np.zeros((len(seeds), 8))
    normal_thickness_cpu(bone_f, union_f, seeds, jac, jinv, normal_f, 0.02, 7.0, cpu)
    gpu = normal_thickness_cuda(bone_f, union_f, seeds, jinv, normal_f, 0.02, 7.0)
    assert np.allclose(cpu, gpu, atol=1e-9), np.abs(cpu - gpu).max()
    ok = cpu[:, 7] == 1
    assert ok.sum() > 20 and abs(np.median(cpu[ok, 6]) - 2.0) < 0.25, np.median(cpu[ok, 6])
    print("CUDA-OK", len(seeds))
""")


def _run(env_extra: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.cudasim
def test_cuda_kernel_matches_cpu_under_simulator():
    out = _run({"NUMBA_ENABLE_CUDASIM": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "CUDA-OK" in out.stdout


@pytest.mark.gpu
def test_cuda_kernel_matches_cpu_on_gpu():
    from numba import cuda

    if not cuda.is_available():
        pytest.skip("no CUDA device here")
    out = _run({"NUMBA_ENABLE_CUDASIM": "0"})
    assert out.returncode == 0, out.stderr[-3000:]
