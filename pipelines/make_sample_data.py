"""Build sample_data/: one subject, baseline + 6-month MR DICOM (reduced DESS-like grid) and US DICOM, with truth.

Deterministic: running it again reproduces every file byte for byte (``make sample-data``).

    .venv/bin/python pipelines/make_sample_data.py sample_data
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from koaimg.synth import ACQUISITIONS, KneeAnatomy
from koaimg.synth._cohort import SubjectPlan, make_subject

PLAN = SubjectPlan(subject="SAMPLE-01", arm="demo", side="right", seed=20240601, us_delta_mm=0.25,
                   mri_delta_mm=0.10, defect_factor=1.25, defects=(("FMC", 4.0, 1.0), ("FLT", 3.5, 0.6)))

README = """# sample_data

A small, deterministic digital knee made by `make sample-data` (`pipelines/make_sample_data.py`, koaimg's phantom
generator): one subject, right knee, baseline and 6-month visits.

- `SAMPLE-01/<visit>/MR/`: DICOM MR series, DESS-like contrast, 144 x 128 x 50 voxels of 0.65 x 0.65 x 1.5 mm
  (sagittal), Laterality R, pseudonymous ids and synthetic dates only.
- `SAMPLE-01/<visit>/US/us.dcm`: transverse suprapatellar ultrasound cine (3 frames), calibrated through its
  Sequence of Ultrasound Regions.
- `ground_truth/`: what the scans should measure: the true label maps, thickness at every bone-interface voxel,
  regional values (ThCtAB, VC, tAB, dAB%, MOAKS-style grades) and, for ultrasound, the site thicknesses.

Designed change: femoral/tibial/patellar cartilage +0.10 mm everywhere, the full-thickness defect in the medial
central femur (FMC, radius 4 mm) grows to 5 mm, a 60 %-depth lesion in the lateral trochlea (FLT) grows likewise;
ultrasound thickness +0.25 mm at LC, IN and MC.
"""


def build(out: Path) -> None:
    """Write the sample to ``out`` (replaced atomically)."""
    tmp = Path(tempfile.mkdtemp(prefix=".sample.", dir=out.parent if out.parent.exists() else None))
    try:
        make_subject(PLAN, tmp, acquisition=ACQUISITIONS["sample"], anatomy=KneeAnatomy(),
                     truth_formats=("labels",), us_frames=3)
        (tmp / "README.md").write_text(README)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="?", default=Path("sample_data"))
    build(parser.parse_args().out)


if __name__ == "__main__":
    main()
