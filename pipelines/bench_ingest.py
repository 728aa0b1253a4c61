"""Benchmark: discover and load a 160-slice 384 x 384 sagittal DICOM series (the OAI DESS grid).

Each measurement runs in a fresh child process so peak memory (ru_maxrss) belongs to that step alone. SimpleITK's
ImageSeriesReader (the common peer) loads the same files side by side. Prints a table of medians and writes JSON.

    .venv/bin/python pipelines/bench_ingest.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"


def _write_series(folder: Path) -> None:
    from koaimg.core import KneeSide, Volume
    from koaimg.io import MRSeriesTags, write_dicom_series

    affine = np.array([[0, 0, -0.7, 60.0], [0.3646, 0, 0, -70.0], [0, -0.3646, 0, 70.0], [0, 0, 0, 1]])
    rng = np.random.default_rng(0)
    volume = Volume(rng.integers(0, 1200, (384, 384, 160), dtype=np.uint16), affine)
    write_dicom_series(volume, folder, MRSeriesTags(side=KneeSide.RIGHT, series_description="SAG 3D DESS WE"))


def _koaimg_discover(folder: str) -> None:
    from koaimg.io import discover

    report = discover(folder)
    assert len(report.good) == 1


def _koaimg_discover_and_load(folder: str) -> None:
    from koaimg.io import discover, load_series

    vol = load_series(discover(folder).good[0])
    assert vol.spatial_shape == (384, 384, 160)


def _sitk_load(folder: str) -> None:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder))
    image = reader.Execute()
    assert image.GetSize() == (384, 384, 160)


def _child(target: str, folder: str, queue: mp.Queue) -> None:
    import koaimg.io  # noqa: F401  (import cost is not what is measured)

    start = time.perf_counter()
    globals()[target](folder)
    elapsed = time.perf_counter() - start
    queue.put((elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0))


def _measure(target: str, folder: Path, repeats: int) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    times, peaks = [], []
    for _ in range(repeats):
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(target, str(folder), queue))
        proc.start()
        elapsed, peak = queue.get()
        proc.join()
        times.append(elapsed)
        peaks.append(peak)
    return {"median_s": statistics.median(times), "min_s": min(times), "peak_rss_mib": statistics.median(peaks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "dess"
        start = time.perf_counter()
        _write_series(folder)
        write_s = time.perf_counter() - start
        size_mib = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
        rows = {
            "koaimg discover (headers, geometry checks)": _measure("_koaimg_discover", folder, args.repeats),
            "koaimg discover + load (RAS Volume)": _measure("_koaimg_discover_and_load", folder, args.repeats),
            "SimpleITK ImageSeriesReader (peer)": _measure("_sitk_load", folder, args.repeats),
        }
    print(f"160-slice 384x384 sagittal series, {size_mib:.1f} MiB on disk (written in {write_s:.1f} s); "
          f"median of {args.repeats} runs, each in a fresh process on {platform.processor() or platform.machine()}")
    print(f"{'step':<46} {'median s':>9} {'min s':>8} {'peak RSS MiB':>13}")
    for name, row in rows.items():
        print(f"{name:<46} {row['median_s']:>9.2f} {row['min_s']:>8.2f} {row['peak_rss_mib']:>13.0f}")
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_ingest.json").write_text(json.dumps({"repeats": args.repeats, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
