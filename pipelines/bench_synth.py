"""Benchmark and picture the phantom generator: a full-size OAI DESS knee (384 x 384 x 160) on this machine.

Prints the median of N generations (after one warm-up that compiles the numba kernels and meshes the truth), the
truth-computation time for a new anatomy, and writes mid-sagittal / coronal / axial PNGs of the DESS phantom with
and without the label overlay to pipelines/out/.

    .venv/bin/python pipelines/bench_synth.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from koaimg.core import Structure
from koaimg.synth import ACQUISITIONS, Defect, KneeAnatomy, knee_truth, make_knee_phantom

OUT = Path(__file__).resolve().parent / "out"
OVERLAY = {Structure.FEMUR: (241, 214, 145), Structure.FEMORAL_CARTILAGE: (30, 144, 255),
           Structure.TIBIA: (177, 122, 101), Structure.TIBIAL_CARTILAGE: (50, 205, 50),
           Structure.PATELLA: (216, 101, 79), Structure.PATELLAR_CARTILAGE: (255, 215, 0),
           Structure.FIBULA: (128, 174, 128), Structure.MENISCUS: (186, 85, 211)}


def _grey(plane: np.ndarray, hi: float) -> np.ndarray:
    return (np.clip(plane / hi, 0, 1) * 255).astype(np.uint8)


def _rgb(grey: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
    if labels is not None:
        for structure, colour in OVERLAY.items():
            m = labels == structure
            rgb[m] = 0.55 * rgb[m] + 0.45 * np.array(colour)
    return rgb.astype(np.uint8)


def _resize(img: np.ndarray, row_mm: float, col_mm: float, mm_per_px: float = 0.3646) -> Image.Image:
    h, w = img.shape[:2]
    return Image.fromarray(img).resize((round(w * col_mm / mm_per_px), round(h * row_mm / mm_per_px)),
                                       Image.Resampling.BILINEAR)


def views(image: np.ndarray, labels: np.ndarray, spacing: np.ndarray, *, overlay: bool) -> Image.Image:
    """Sagittal (through the medial condyle and the notch), coronal and axial views of a PIR volume."""
    hi = float(np.percentile(image, 99.7))
    ni, nj, nk = image.shape
    k_medial = nk // 2 - round(20 / spacing[2])
    panels = []
    for k in (k_medial, nk // 2):
        sl = (slice(None), slice(None), k)
        panels.append(_resize(_rgb(_grey(image[sl].T, hi), labels[sl].T if overlay else None), spacing[1], spacing[0]))
    sl = (ni // 2 + 8, slice(None), slice(None))  # coronal: rows S->I, cols L->R
    panels.append(_resize(_rgb(_grey(image[sl], hi), labels[sl] if overlay else None), spacing[1], spacing[2]))
    sl = (slice(None), nj // 2 + 20, slice(None))  # axial: rows A->P, cols L->R
    panels.append(_resize(_rgb(_grey(image[sl], hi), labels[sl] if overlay else None), spacing[0], spacing[2]))
    width = sum(p.width for p in panels) + 10 * (len(panels) - 1)
    canvas = Image.new("RGB", (width, max(p.height for p in panels)))
    x = 0
    for p in panels:
        canvas.paste(p, (x, 0))
        x += p.width + 10
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    anatomy = KneeAnatomy().with_defects(Defect("FMC", 5.0, 1.0), Defect("FLT", 4.0, 0.6))
    start = time.perf_counter()
    make_knee_phantom(anatomy, ACQUISITIONS["dess"].scaled(4), seed=0)
    warm = time.perf_counter() - start
    times = []
    for r in range(args.repeats):
        start = time.perf_counter()
        phantom = make_knee_phantom(anatomy, "dess", seed=r)
        times.append(time.perf_counter() - start)
    fresh = KneeAnatomy.random(np.random.default_rng(5))
    start = time.perf_counter()
    knee_truth(fresh)
    truth_s = time.perf_counter() - start
    start = time.perf_counter()
    make_knee_phantom(fresh, "dess", seed=0)
    fresh_s = time.perf_counter() - start
    print("procedural DESS knee phantom, 384 x 384 x 160 at 0.365 x 0.365 x 0.7 mm")
    print(f"{'step':<58} {'seconds':>8}")
    print(f"{'first call (numba compile / cache load, truth meshes)':<58} {warm:>8.2f}")
    print(f"{f'phantom, same anatomy (median of {args.repeats})':<58} {statistics.median(times):>8.2f}")
    print(f"{'truth meshes + regional truth, new anatomy':<58} {truth_s:>8.2f}")
    print(f"{'phantom, new anatomy (truth included)':<58} {fresh_s:>8.2f}")
    OUT.mkdir(exist_ok=True)
    image, labels, spacing = phantom.image.array, phantom.labels.array, phantom.image.spacing
    views(image, labels, spacing, overlay=False).save(OUT / "phantom_dess_views.png")
    views(image, labels, spacing, overlay=True).save(OUT / "phantom_dess_views_labels.png")
    (OUT / "bench_synth.json").write_text(json.dumps({"median_s": statistics.median(times), "first_call_s": warm,
                                                      "truth_new_anatomy_s": truth_s,
                                                      "phantom_new_anatomy_s": fresh_s}, indent=2))
    print(f"views written to {OUT}/phantom_dess_views*.png")


if __name__ == "__main__":
    main()
