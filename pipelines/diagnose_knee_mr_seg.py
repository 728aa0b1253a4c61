"""Where and why the segmentation's femoral cartilage is wrong, and how often training contrasts hide the plate.

    python pipelines/diagnose_knee_mr_seg.py overlap [--draws 4000]
    python pipelines/diagnose_knee_mr_seg.py false-cartilage [--bundle DIR] [--case woo0_dess_sag_0.37x0.7]
    python pipelines/diagnose_knee_mr_seg.py peel [--bundle DIR] [--case NAME ...]
    python pipelines/diagnose_knee_mr_seg.py seams [--bundle DIR] [--case NAME ...]
    python pipelines/diagnose_knee_mr_seg.py clair-spread --checkpoints A.pt B.pt ... [--bundle DIR]
    python pipelines/diagnose_knee_mr_seg.py refinement [--bundle DIR] [--case NAME ...] [--settings JSON ...]
    python pipelines/diagnose_knee_mr_seg.py bone-growth [--bundle DIR] [--case NAME ...] [--settings JSON ...]

``overlap``: the share of randomised contrast draws (the training renderer's own ``_class_means``, default
``RandomisationSpec``) in which femoral cartilage and fluid means lie within 0.05-0.2 of the brightest mean, per
contrast: samples that hide the articular surface. ``false-cartilage``: one case of ``eval_knee_mr_seg.py``'s synthetic
test set, segmented; the image intensity of false-positive vs true-positive femoral cartilage (fluid or cartilage?),
the drawn class means, what the false voxels lie over, their distance from the true plate, and how much a
distance-to-predicted-femur rule would remove. ``peel``: an experiment, not part of koaimg: the predicted plates'
articular voxels peeled by image intensity (``articular_peel``), per case and over the 22 cases, Dice and femoral
ThCcAB error before and after. ``seams``: on the working grid, the network's error rate by how central the most
central sliding window holding a voxel is (voxels from its faces), with the bundle's overlap and with 0.125, one pass,
no mirror: whether the errors that more overlap removed sat in the seams between windows. ``clair-spread``: the CLAIR
Dice of each training checkpoint given (its float32 weights in the bundle's network, the bundle's inference settings),
then their spread: how far neighbouring snapshots of one run differ on the one real labelled image, i.e. how large a
CLAIR difference between two candidates must be to mean anything. ``refinement``: each synthetic case and CLAIR
segmented once with the bundle's articular refinement and bone growth off, then refined with each setting given (JSON
objects as in ``postprocessing.articular_refinement``; default: the bundle's own, peel only, grow only): Dice of the
three plates, femoral ThCcAB agreement and CLAIR Dice per setting, side by side on the same network output, and per case
the true femoral cartilage the network labelled background (volume, brightness, the network's probability there) and,
per setting, how many femoral cartilage voxels were peeled and grown and the share of each that truly was cartilage.
``bone-growth``: the same, for the bone growth (``postprocessing.bone_growth``; segmented with the bundle's refinement
and the growth off, default settings: the bundle's own): Dice of the three bones, femoral ThCcAB agreement (the femur
sets the measurement's regions) and, per case and setting, the bone volume added and the share of it that truly was that
bone (on the phantoms also how much tibial growth went into their fibula and menisci, background here). Both take
``--seed-set N`` (N > 0: held-out synthetic cases, as ``eval_knee_mr_seg.py``).
Figures quoted in the bundle docs come from here.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_knee_mr_seg as ev  # the evaluation's case generators: the same cases

from koaimg.core import CARTILAGE_ON_BONE, Structure
from koaimg.segment import WorkingGrid, load_bundle, normalise_intensity, segment_volume
from koaimg.segment._bone_growth import BoneGrowth, grow_bones
from koaimg.segment._refine import ArticularRefinement, local_mean_sd, refine_articular_surfaces
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
          f"Dice {ev.dice(pred, true, FC):.3f}")
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


def articular_peel(image: np.ndarray, labels: np.ndarray, spacing: np.ndarray, window_mm: float = 4.0,
                   shell_mm: float = 1.5, contrast_sd: float = 2.0, ref_mm: tuple[float, float] = (0.4, 1.2),
                   layers: int = 10) -> np.ndarray:
    """Peel, layer by layer, each plate's voxels that face background and look more like what lies outside the
    plate than like the plate's deep layer.

    Reference levels, local (``window_mm`` box): the plate's voxels ``ref_mm`` from its bone (the side the network
    seldom gets wrong) and the background within ``shell_mm`` outside it; a voxel is judged only where the two differ
    by more than ``contrast_sd`` SDs of the reference. It assumes the bone side is right."""
    out = labels.copy()
    size = np.maximum(3, np.round(window_mm / np.asarray(spacing)).astype(int) | 1)
    for cartilage, bone in ((2, 1), (4, 3), (6, 5)):
        box = ndimage.find_objects((out == cartilage).astype(np.uint8))
        if not box or box[0] is None:
            continue
        sub = tuple(slice(max(0, s.start - 8), s.stop + 8) for s in box[0])
        o, x = out[sub], image[sub].astype(np.float32)
        for _ in range(layers):
            plate, background = o == cartilage, o == 0
            depth = ndimage.distance_transform_edt(o != bone, sampling=spacing)
            outside = ndimage.distance_transform_edt(~plate, sampling=spacing)
            ref_mean, ref_sd, ref_share = local_mean_sd(x, plate & (depth > ref_mm[0]) & (depth <= ref_mm[1]), size)
            out_mean, _, out_share = local_mean_sd(x, background & (outside > 0) & (outside <= shell_mm), size)
            judged = (ref_share > 0.02) & (out_share > 0.02) & (np.abs(out_mean - ref_mean) > contrast_sd * ref_sd)
            facing = plate & ndimage.binary_dilation(background) & judged
            unlike = np.abs(x - ref_mean) > contrast_sd * ref_sd
            peel = facing & unlike & (np.abs(x - out_mean) < np.abs(x - ref_mean))
            if not peel.any():
                break
            o[peel] = 0
    return out


def peel(bundle_dir: Path | None, cases: list[str]) -> None:
    bundle = load_bundle(bundle_dir or ev.REPO / "models" / "knee_mr_seg")
    rows = []
    for name, image, truth in itertools.chain(ev.phantom_cases(False), ev.woo_cases(False)):  # one at a time
        if cases and name not in cases:
            continue
        pred = segment_volume(image, bundle=bundle, device="cpu").labels.array
        peeled = articular_peel(image.array, pred, image.spacing)
        true_mm = ev.fc_thccab(truth, truth.array)
        row = {"case": name, "true": true_mm}
        for tag, labels in (("before", pred), ("after", peeled)):
            for c, short in ((FC, "fc"), (4, "tc"), (6, "pc")):
                row[f"{short}_{tag}"] = ev.dice(labels, truth.array, c)
            row[f"pred_{tag}"] = ev.fc_thccab(truth, labels)
        rows.append(row)
        print(f"{name}: FC Dice {row['fc_before']:.3f} -> {row['fc_after']:.3f}, PC {row['pc_before']:.3f} -> "
              f"{row['pc_after']:.3f}, ThCcAB error {row['pred_before'] - true_mm:+.3f} -> "
              f"{row['pred_after'] - true_mm:+.3f} mm", flush=True)
    for tag in ("before", "after"):
        t = ev.thickness_agreement([r["true"] for r in rows], [r[f"pred_{tag}"] for r in rows])
        err, fit = t["thccab_abs_error_mm"], t.get("thccab_fit", {})
        print(f"{tag}: Dice FC {np.mean([r[f'fc_{tag}'] for r in rows]):.4f} TC "
              f"{np.mean([r[f'tc_{tag}'] for r in rows]):.4f} PC {np.mean([r[f'pc_{tag}'] for r in rows]):.4f}; "
              f"ThCcAB |error| mean {err['mean']:.3f} median {err['median']:.3f} mm, "
              f"{err['within_0.1mm']}/{err['n']} within 0.1 mm, bias {fit.get('bias_mm', float('nan')):+.3f} mm, "
              f"slope {fit.get('slope', float('nan')):.2f}, r {fit.get('r', float('nan')):.2f}")


def window_centrality(shape: tuple[int, ...], roi: tuple[int, ...], overlap: float) -> np.ndarray:
    """Per voxel, the largest distance (in voxels) to the nearest face of any sliding window holding it, with MONAI's
    own window placement. The windows form a product grid, so this is the minimum over axes of each axis's best."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    interval = _get_scan_interval(shape, roi, len(shape), (overlap,) * len(shape))
    starts = np.array([[s.start for s in sl] for sl in dense_patch_slices(shape, roi, interval)])
    best = []
    for axis, (n, r) in enumerate(zip(shape, roi, strict=True)):
        v = np.arange(n)[:, None]
        s0 = np.unique(starts[:, axis])[None, :]
        inside = (v >= s0) & (v < s0 + r)
        best.append(np.where(inside, np.minimum(v - s0, s0 + r - 1 - v), -1).max(1))
    grids = np.meshgrid(*best, indexing="ij")
    return np.minimum.reduce(grids)


def seams(bundle_dir: Path | None, cases: list[str]) -> None:
    import torch

    bundle = load_bundle(bundle_dir or ev.REPO / "models" / "knee_mr_seg")
    edges = (0, 6, 12, 24, 10_000)
    counts = {ov: np.zeros((len(edges) - 1, 2)) for ov in (0.125, bundle.overlap)}
    for name, image, truth in itertools.chain(ev.phantom_cases(False), ev.woo_cases(False)):
        if cases and name not in cases:
            continue
        grid = WorkingGrid(image.affine, image.spatial_shape, bundle.working_spacing_mm)
        x = torch.from_numpy(np.ascontiguousarray(normalise_intensity(grid.to_working(image.array))))[None, None]
        y = grid.labels_to_working(truth.array)
        line = []
        for ov in counts:
            inferer = bundle.inferer(sw_device=torch.device("cpu"), device=torch.device("cpu"))
            inferer.overlap = ov
            with torch.inference_mode():
                pred = inferer(x, bundle.network).argmax(1)[0].numpy()
            central = window_centrality(y.shape, bundle.roi_size, ov)
            judged = (y > 0) | (pred > 0)  # voxels of any structure, predicted or true
            wrong = pred != y
            for b in range(len(edges) - 1):
                sel = judged & (central >= edges[b]) & (central < edges[b + 1])
                counts[ov][b] += (int(wrong[sel].sum()), int(sel.sum()))
            line.append(f"overlap {ov}: error {wrong[judged].mean():.4f}")
        print(f"{name}: " + ", ".join(line), flush=True)
    for ov, c in counts.items():
        cells = [f"{edges[b]}-{edges[b + 1] if edges[b + 1] < 10_000 else ''}: {c[b, 0] / max(c[b, 1], 1):.4f} "
                 f"({c[b, 1] / c[:, 1].sum():.0%} of voxels)" for b in range(len(edges) - 1)]
        print(f"overlap {ov}: error rate of structure voxels by window centrality (voxels) " + "; ".join(cells)
              + f"; all {c[:, 0].sum() / c[:, 1].sum():.4f}")


def clair_spread(bundle_dir: Path | None, checkpoints: list[Path]) -> None:
    import torch

    if not checkpoints:
        raise SystemExit("clair-spread: give the training checkpoints with --checkpoints A.pt B.pt ...")
    bundle = load_bundle(bundle_dir or ev.REPO / "models" / "knee_mr_seg")
    image, truth = ev.clair_volume()
    names = ev.NAMES[:4]
    rows = []
    for path in checkpoints:
        bundle.network.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["model"])
        pred = segment_volume(image, bundle=bundle, device="cpu").labels.array
        rows.append([ev.dice(pred, truth.array, int(s)) for s in ev.STRUCTS[:4]])
        print(f"{path.name}: " + " ".join(f"{n}={d:.3f}" for n, d in zip(names, rows[-1], strict=True)), flush=True)
    a = np.array(rows)
    step = np.abs(np.diff(a, axis=0)) if len(a) > 1 else np.zeros((1, a.shape[1]))
    for j, n in enumerate(names):
        print(f"{n}: mean {a[:, j].mean():.3f}, SD {a[:, j].std(ddof=1) if len(a) > 1 else 0.0:.3f}, "
              f"range {a[:, j].min():.3f}-{a[:, j].max():.3f}, median change between neighbours "
              f"{np.median(step[:, j]):.3f}")


def _missed_cartilage(name: str, image, true: np.ndarray, pred: np.ndarray, p_fc: np.ndarray) -> None:
    """Femoral cartilage the network labelled background: how much, how bright, how sure it was."""
    fc = int(Structure.FEMORAL_CARTILAGE)
    ml = image.voxel_volume_mm3 / 1000.0
    missed, found = (true == fc) & (pred == 0), (true == fc) & (pred == fc)
    x = np.asarray(image.array, np.float32)
    counts = np.histogram(p_fc[missed], bins=[0, 0.1, 0.3, 0.5, 1.0])[0]
    print(f"{name}: femoral cartilage true {(true == fc).sum() * ml:.2f} mL, predicted {(pred == fc).sum() * ml:.2f}, "
          f"true labelled background {missed.sum() * ml:.2f} mL (image mean {x[missed].mean():.3g} vs "
          f"{x[found].mean():.3g} where found; network p < 0.1 / 0.1-0.3 / 0.3-0.5 / > 0.5: "
          f"{' / '.join(str(int(c)) for c in counts)} voxels)", flush=True)


def _share(flags: np.ndarray) -> str:
    return f"{100 * flags.mean():.0f} %" if flags.size else "-"


def _settings_variants(shipped, variants: list[str]) -> list[tuple[str, object | None]]:
    """("none", None) then each JSON variant parsed by the shipped settings' class, tagged by what it changes."""
    import json
    from dataclasses import asdict

    settings: list[tuple[str, object | None]] = [("none", None)]
    for v in variants:
        chosen = type(shipped).from_config(json.loads(v))
        changed = {k: x for k, x in asdict(chosen).items() if x != asdict(shipped)[k]}
        settings.append(("bundle's" if not changed else json.dumps(changed), chosen))
    return settings


def _cases_and_clair(seed_set: int):
    """The evaluation's synthetic cases of ``seed_set``, then CLAIR: (name, image, truth, full phantom label map with
    fibula and menisci, or None where there is none)."""
    clair_image, clair_truth = ev.clair_volume()
    synthetic = itertools.chain(ev.phantom_cases(False, seed_set, context=True),
                                ((*case, None) for case in ev.woo_cases(False, seed_set)))
    return itertools.chain(synthetic, [("clair", clair_image, clair_truth, None)])


def _thickness_line(syn: list[dict]) -> str:
    """Femoral ThCcAB agreement over the synthetic rows ("true" / "pred" in each)."""
    t = ev.thickness_agreement([r["true"] for r in syn], [r["pred"] for r in syn])
    err, fit = t["thccab_abs_error_mm"], t.get("thccab_fit", {})
    return (f"ThCcAB |error| mean {err['mean']:.3f} median {err['median']:.3f} mm, {err['within_0.1mm']}/{err['n']} "
            f"within 0.1 mm, bias {fit.get('bias_mm', float('nan')):+.3f} mm, slope "
            f"{fit.get('slope', float('nan')):.2f}, r {fit.get('r', float('nan')):.2f}.")


def _group_lines(syn: list[dict]) -> list[str]:
    """The synthetic rows' means by contrast and slice class (the evaluation's grouping), so a setting that helps
    the DESS cases and costs the T1 ones shows as such."""
    records = [{"case": r["case"], "spacing_mm": r["spacing_mm"], "thccab_true_mm": r["true"],
                "thccab_pred_mm": r["pred"], "dice": {n: r[i] for i, n in enumerate(ev.NAMES, start=1)}}
               for r in syn]
    lines = []
    for group, v in ev.by_group(records).items():
        d, t = v["dice"], v["thccab_abs_error_mm"]
        lines.append(f"    {group} ({v['n']}): FC {d['femoral_cartilage']:.3f} TC {d['tibial_cartilage']:.3f} femur "
                     f"{d['femur']:.3f} tibia {d['tibia']:.3f} patella {d['patella']:.3f}; ThCcAB within 0.1 mm "
                     f"{t['within_0.1mm']}/{t['n']}")
    return lines


def _print_summaries(rows: dict[str, list[dict]], synthetic_means) -> None:
    """One summary per setting: ``synthetic_means(rows)`` (the study's own Dice figures), the thickness agreement and
    CLAIR on one line, then the grouped means."""
    for tag, tagged in rows.items():
        syn = [r for r in tagged if r["case"] != "clair"]
        line = f"[{tag}]"
        if syn:
            line += f" {len(syn)} synthetic: {synthetic_means(syn)}; {_thickness_line(syn)}"
        for r in tagged:
            if r["case"] == "clair":
                line += f" CLAIR femur {r[1]:.3f} FC {r[2]:.3f} tibia {r[3]:.3f} TC {r[4]:.3f}"
        print("\n".join([line, *_group_lines(syn)]), flush=True)


def refinement(bundle_dir: Path | None, cases: list[str], variants: list[str], seed_set: int = 0) -> None:
    import json
    from dataclasses import asdict, replace

    bundle = load_bundle(bundle_dir or ev.REPO / "models" / "knee_mr_seg")
    shipped = bundle.articular_refinement or ArticularRefinement()
    if not variants:
        variants = [json.dumps(asdict(shipped)), json.dumps({**asdict(shipped), "grow": False}),
                    json.dumps({**asdict(shipped), "peel": False})]
    settings = _settings_variants(shipped, variants)
    plain = replace(bundle, articular_refinement=None, bone_growth=None)  # bones as the network gave them
    rows: dict[str, list[dict]] = {tag: [] for tag, _ in settings}
    for name, image, truth, _ in _cases_and_clair(seed_set):
        if cases and name not in cases:
            continue
        res = segment_volume(image, bundle=plain, device="cpu", probabilities=True)
        cart_p = {int(c): res.probabilities[c] for c in CARTILAGE_ON_BONE}
        true_mm = ev.fc_thccab(truth, truth.array) if name != "clair" else float("nan")
        _missed_cartilage(name, image, truth.array, res.labels.array, cart_p[int(Structure.FEMORAL_CARTILAGE)])
        for tag, s in settings:
            labels = res.labels.array if s is None else refine_articular_surfaces(
                np.asarray(image.array, np.float32), res.labels.array, cart_p, image.spacing, s)
            row = {"case": name, "true": true_mm, "spacing_mm": [float(v) for v in image.spacing],
                   **{c: ev.dice(labels, truth.array, c) for c in range(1, 7)}}
            row["pred"] = ev.fc_thccab(truth, labels) if name != "clair" else float("nan")
            rows[tag].append(row)
            removed = (res.labels.array == FC) & (labels != FC)
            added = (res.labels.array != FC) & (labels == FC)
            moved = (f"; femoral cartilage peeled {int(removed.sum())} voxels "
                     f"({_share(truth.array[removed] == FC)} true cartilage), grown {int(added.sum())} "
                     f"({_share(truth.array[added] == FC)} true)" if s else "")
            print(f"{name} [{tag}]: FC {row[2]:.3f} TC {row[4]:.3f} PC {row[6]:.3f} ThCcAB error "
                  f"{row['pred'] - true_mm:+.3f} mm{moved}", flush=True)
    _print_summaries(rows, lambda syn: (f"Dice FC {np.mean([r[2] for r in syn]):.4f} TC "
                                        f"{np.mean([r[4] for r in syn]):.4f} PC {np.mean([r[6] for r in syn]):.4f}"))


def bone_growth(bundle_dir: Path | None, cases: list[str], variants: list[str], seed_set: int = 0) -> None:
    import json
    from dataclasses import asdict, replace

    bundle = load_bundle(bundle_dir or ev.REPO / "models" / "knee_mr_seg")
    shipped = bundle.bone_growth or BoneGrowth()
    settings = _settings_variants(shipped, variants or [json.dumps(asdict(shipped))])
    plain = replace(bundle, bone_growth=None)
    rows: dict[str, list[dict]] = {tag: [] for tag, _ in settings}
    bones = (1, 3, 5)
    for name, image, truth, context in _cases_and_clair(seed_set):
        if cases and name not in cases:
            continue
        res = segment_volume(image, bundle=plain, device="cpu", probabilities=True)
        bone_p = {b: res.probabilities[Structure(b)] for b in bones}
        true_mm = ev.fc_thccab(truth, truth.array) if name != "clair" else float("nan")
        ml = image.voxel_volume_mm3 / 1000.0
        for tag, s in settings:
            labels = res.labels.array if s is None else grow_bones(
                np.asarray(image.array, np.float32), res.labels.array, bone_p, image.spacing, s)
            row = {"case": name, "true": true_mm, "spacing_mm": [float(v) for v in image.spacing],
                   **{c: ev.dice(labels, truth.array, c) for c in range(1, 7)}}
            row["pred"] = ev.fc_thccab(truth, labels) if name != "clair" else float("nan")
            rows[tag].append(row)
            added = labels != res.labels.array
            moved = "".join(f"; {Structure(b).name.lower()} +{(added & (labels == b)).sum() * ml:.2f} mL "
                            f"({_share(truth.array[added & (labels == b)] == b)} true)" for b in bones) if s else ""
            if s and context is not None:  # what the wrong part took: the phantom's fibula and menisci
                took = added & (labels == int(Structure.TIBIA))
                moved += (f"; tibia growth into fibula {(took & (context == Structure.FIBULA)).sum() * ml:.2f} mL, "
                          f"menisci {(took & (context == Structure.MENISCUS)).sum() * ml:.2f} mL")
            print(f"{name} [{tag}]: femur {row[1]:.3f} tibia {row[3]:.3f} patella {row[5]:.3f} ThCcAB error "
                  f"{row['pred'] - true_mm:+.3f} mm{moved}", flush=True)
    _print_summaries(rows, lambda syn: (
        f"Dice femur {np.mean([r[1] for r in syn]):.4f} tibia {np.mean([r[3] for r in syn]):.4f} patella "
        f"{np.mean([r[5] for r in syn]):.4f} (lowest {min(r[1] for r in syn):.3f} / {min(r[3] for r in syn):.3f} / "
        f"{min(r[5] for r in syn):.3f}); FC {np.mean([r[2] for r in syn]):.4f}"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["overlap", "false-cartilage", "peel", "seams", "clair-spread", "refinement",
                                        "bone-growth"])
    ap.add_argument("--draws", type=int, default=4000)
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--case", nargs="+", default=None,
                    help="false-cartilage: one case (default woo0_dess_sag_0.37x0.7); peel, seams, refinement: "
                         "these cases (default all; refinement: 'clair' too)")
    ap.add_argument("--checkpoints", type=Path, nargs="+", default=None,
                    help="clair-spread: training checkpoints (OUT/validated/step_*.pt), in step order")
    ap.add_argument("--settings", nargs="+", default=None,
                    help="refinement: JSON settings to compare (default: the bundle's, peel only, grow only); "
                         "bone-growth: likewise (default: the bundle's)")
    ap.add_argument("--seed-set", type=int, default=0,
                    help="refinement, bone-growth: 0 the evaluation's synthetic cases, N > 0 held-out ones "
                         "(eval_knee_mr_seg.py)")
    args = ap.parse_args()
    if args.command == "overlap":
        overlap(args.draws)
    elif args.command == "peel":
        peel(args.bundle, args.case or [])
    elif args.command == "seams":
        seams(args.bundle, args.case or [])
    elif args.command == "refinement":
        refinement(args.bundle, args.case or [], args.settings or [], args.seed_set)
    elif args.command == "bone-growth":
        bone_growth(args.bundle, args.case or [], args.settings or [], args.seed_set)
    elif args.command == "clair-spread":
        clair_spread(args.bundle, args.checkpoints or [])
    else:
        false_cartilage(args.bundle, (args.case or ["woo0_dess_sag_0.37x0.7"])[0])


if __name__ == "__main__":
    main()
