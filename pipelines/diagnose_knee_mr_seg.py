"""Where and why the segmentation's femoral cartilage is wrong, and how often training contrasts hide the plate.

    python pipelines/diagnose_knee_mr_seg.py overlap [--draws 4000]
    python pipelines/diagnose_knee_mr_seg.py false-cartilage [--bundle DIR] [--case woo0_dess_sag_0.37x0.7]

``overlap``: the share of randomised contrast draws (the training renderer's own ``_class_means``, default
``RandomisationSpec``) in which femoral cartilage and fluid means lie within 0.05-0.2 of the brightest mean, per
contrast: samples that hide the articular surface. ``false-cartilage``: one case of ``eval_knee_mr_seg.py``'s synthetic
test set, segmented; the image intensity of false-positive vs true-positive femoral cartilage (fluid or cartilage?),
the drawn class means, what the false voxels lie over, their distance from the true plate, and how much a
distance-to-predicted-femur rule would remove. Figures quoted in the bundle docs come from here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_knee_mr_seg as ev  # the evaluation's case generators: the same cases

from koaimg.core import Structure
from koaimg.segment import load_bundle, segment_volume
from koaimg.synth import RandomisationSpec
from koaimg.synth._from_labels import _FLUID, _class_means

FC, FEMUR = int(Structure.FEMORAL_CARTILAGE), int(Structure.FEMUR)


def overlap(draws: int) -> None:
    spec, gaps = RandomisationSpec(), (0.05, 0.1, 0.15, 0.2)
    print("contrast | " + " | ".join(f"|FC - fluid| < {g:g} x brightest" for g in gaps))
    for contrast in ("dess", "pdfs", "t1", "random"):
        rng = np.random.default_rng(0)
        d = np.array([abs(m[FC] - m[_FLUID]) / m.max() for m in (_class_means(contrast, spec, rng)
                                                                  for _ in range(draws))])
        print(f"{contrast} | " + " | ".join(f"{(d < g).mean():.3f}" for g in gaps))


def false_cartilage(bundle_dir: Path | None, case: str) -> None:
    found = [(name, image, truth) for name, image, truth in ev.woo_cases(False) if name == case] or [
        (name, image, truth) for name, image, truth in ev.phantom_cases(False) if name == case]
    if not found:
        raise SystemExit(f"no evaluation case {case!r}; see eval_knee_mr_seg.py for the names")
    _, image, truth = found[0]
    result = segment_volume(image, bundle=load_bundle(bundle_dir or ev.REPO / "models" / "knee_mr_seg"), device="cpu")
    pred, true, img, sp = result.labels.array, truth.array, image.array, image.spacing
    fp, tp = (pred == FC) & (true != FC), (pred == FC) & (true == FC)
    means = np.array(image.meta.acquisition["synthesis"]["class_means"])
    print(f"{case}: predicted FC {int((pred == FC).sum())} voxels, true {int((true == FC).sum())}, "
          f"Dice {2 * tp.sum() / ((pred == FC).sum() + (true == FC).sum()):.3f}")
    print(f"drawn class means: FC {means[FC]:.3f}, fluid {means[_FLUID]:.3f}, femur {means[FEMUR]:.3f}")
    print(f"image median: true-positive FC {np.median(img[tp]):.3f}, false-positive FC {np.median(img[fp]):.3f}")
    print("false FC over true label 0..6:", np.bincount(true[fp], minlength=7).tolist(),
          f"({(true[fp] == 0).mean():.0%} over background)")
    to_plate = ndimage.distance_transform_edt(true != FC, sampling=sp)[fp]
    print("false FC distance from the true plate (mm), 10/25/50/75/90th percentiles:",
          np.round(np.percentile(to_plate, [10, 25, 50, 75, 90]), 2).tolist())
    to_femur = ndimage.distance_transform_edt(pred != FEMUR, sampling=sp)
    for mm in (3.0, 4.0, 5.0):
        keep = (pred == FC) & (to_femur <= mm)
        removed = (pred == FC) & ~keep
        dice = 2 * (keep & (true == FC)).sum() / (keep.sum() + (true == FC).sum())
        print(f"dropping FC > {mm:g} mm from the predicted femur: removes {int(removed.sum())} voxels "
              f"({int((removed & (true != FC)).sum())} false), Dice {dice:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["overlap", "false-cartilage"])
    ap.add_argument("--draws", type=int, default=4000)
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--case", default="woo0_dess_sag_0.37x0.7")
    args = ap.parse_args()
    if args.command == "overlap":
        overlap(args.draws)
    else:
        false_cartilage(args.bundle, args.case)


if __name__ == "__main__":
    main()
