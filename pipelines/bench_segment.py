"""Inference time of the knee MR segmentation bundle on a 384 x 384 x 160 DESS-like volume (median of runs).

    nice -n 10 python pipelines/bench_segment.py [--device cpu|cuda|auto] [--threads 2] [--runs 3] [--bundle DIR]

Prints a table and writes pipelines/out/bench_segment.json. The volume is a procedural phantom on the OAI DESS grid
(0.365 x 0.365 x 0.7 mm); timing covers preprocessing, sliding-window inference, return to the native grid and
clean-up, the articular refinement and the bone growth when the bundle has them on (``segment_volume``), not file
reading.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from koaimg.segment import load_bundle, resolve_device, segment_volume
from koaimg.synth import KneeAnatomy, make_knee_phantom

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "pipelines" / "out" / "bench_segment.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.bundle)
    device = resolve_device(args.device)
    image = make_knee_phantom(KneeAnatomy.random(np.random.default_rng(1)), "dess", seed=1).image
    assert image.spatial_shape == (384, 384, 160)
    segment_volume(image, bundle=bundle, device=str(device))  # warm-up (allocator, cuDNN autotune)
    times, parts = [], []
    for _ in range(args.runs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        res = segment_volume(image, bundle=bundle, device=str(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        parts.append(res.info["seconds"])
    result = {"shape": list(image.spatial_shape), "device": str(device), "threads": args.threads,
              "cpu": platform.processor() or platform.machine(), "runs_s": [round(t, 2) for t in times],
              "median_s": round(statistics.median(times), 2), "parts_last_run_s": parts[-1],
              "working_shape": res.info["working_shape"], "test_time_mirrors": res.info["test_time_mirrors"],
              "overlap": bundle.overlap, "articular_refinement": bundle.articular_refinement is not None,
              "bone_growth": bundle.bone_growth is not None,
              "model_sha256": bundle.sha256}
    print(f"{'volume':<16}{'device':<8}{'threads':<9}{'median s':<10}runs")
    print(f"{'x'.join(map(str, image.spatial_shape)):<16}{device!s:<8}{args.threads:<9}{result['median_s']:<10}"
          f"{result['runs_s']}")
    print(f"parts (last run): {parts[-1]}; overlap {bundle.overlap}, test-time mirrors {result['test_time_mirrors']}, "
          f"articular refinement {'on' if result['articular_refinement'] else 'off'}, "
          f"bone growth {'on' if result['bone_growth'] else 'off'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
