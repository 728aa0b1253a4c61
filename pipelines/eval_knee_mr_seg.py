"""Evaluate the knee MR segmentation bundle honestly: unseen anatomy, several contrasts and resolutions, real images.

    nice -n 10 python pipelines/eval_knee_mr_seg.py [--bundle DIR] [--out DIR] [--quick]

Synthetic test set (never used in training; the training script reads only pymskt_dess_labels and its own seeded
phantoms): the two ``woo_oai_labels`` knees rendered by ``synthesize_from_labels`` with five fixed acquisition
settings each (DESS-, TSE-, FLASH-like, random contrast, left mirror) and twelve fresh procedural knees from
``make_knee_phantom`` (seeds outside the training streams) on the DESS, FLASH, TSE and sample grids with dess/pdfs/t1
contrast. Per image: Dice and mean symmetric surface distance (mm) per structure, and the femoral ThCcAB.Me from
predicted vs true labels (``koaimg.measure.measure_knee``). Real images: the pymskt multi-echo T2 knee (DICOM, no
labels: plausibility and overlays) and the CLAIR template (Dice against its label; header orientation checked
against the data, see ``clair_volume``). ``--parts floor`` needs no network: it sends each synthetic case's true
labels to the working grid and back (as the probabilities travel) and measures the ThCcAB error that geometry alone
leaves. ``--seed-set N`` (N > 0) draws held-out synthetic cases instead (other procedural knees, other renders of the
woo_oai knees), to check settings that were chosen on the reported set. Writes results.json, results.md and overlay
PNGs into --out.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from koaimg.core import STRUCTURE_COLOURS, KneeSide, LabelVolume, Structure, Volume
from koaimg.io import discover, load_series, read_image, read_labels
from koaimg.measure import measure_knee
from koaimg.segment import WorkingGrid, load_bundle, segment_volume
from koaimg.segment._geometry import ras_affine, ras_transform, to_ras_array
from koaimg.synth import ACQUISITIONS, KneeAnatomy, RandomisationSpec, make_knee_phantom, synthesize_from_labels

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "realdata"
STRUCTS = [Structure(i) for i in range(1, 7)]
NAMES = [s.name.lower() for s in STRUCTS]

# name, contrast, in-plane mm, slice mm, slice axis (input axes of the woo maps: R, A, S), mirrored
WOO_VARIANTS = [
    ("dess_sag_0.37x0.7", "dess", 0.365, 0.7, 0, False),
    ("pdfs_sag_0.4x3.0", "pdfs", 0.4, 3.0, 0, False),
    ("t1_cor_0.31x1.5", "t1", 0.3125, 1.5, 1, False),
    ("random_sag_0.5x1.0", "random", 0.5, 1.0, 0, False),
    ("pdfs_sag_0.45x2.0_left", "pdfs", 0.45, 2.0, 0, True),
]
# acquisition, contrast
PHANTOM_VARIANTS = [("dess", "dess"), ("flash", "t1"), ("tse", "pdfs"), ("sample", "dess"), ("dess", "pdfs"),
                    ("tse", "t1")]


def woo_cases(quick: bool, seed_set: int = 0):
    """The woo_oai knees rendered in every WOO_VARIANTS acquisition. ``seed_set`` > 0: other renders (noise,
    deformation, contrast draw) of the same anatomy, for checking settings chosen on set 0."""
    files = sorted((REAL / "woo_oai_labels").glob("*.nii.gz"))
    for fi, path in enumerate(files[:1] if quick else files):
        labels = read_labels(path, preset="woo-oai")
        labels = labels.with_array(labels.array, meta=labels.meta.replace(side=KneeSide.RIGHT,
                                                                          side_source="assumed (evaluation)"))
        for vi, (name, contrast, ip, sl, axis, mirror) in enumerate(WOO_VARIANTS[:2] if quick else WOO_VARIANTS):
            spec = RandomisationSpec(contrasts=(contrast,), in_plane_mm=(ip, ip), slice_mm=(sl, sl), slice_axis=axis,
                                     mirror_probability=1.0 if mirror else 0.0, rotation_deg=5.0,
                                     elastic_mm=(1.0, 1.0), noise_sigma=(0.02, 0.02), bias_strength=(0.2, 0.2))
            seeds = [777, fi, vi] + ([seed_set] if seed_set else [])
            image, truth = synthesize_from_labels(labels, rng=np.random.default_rng(seeds), spec=spec)
            yield f"woo{fi}_{name}{_set_suffix(seed_set)}", image, truth


def phantom_cases(quick: bool, seed_set: int = 0, context: bool = False):
    """Fresh procedural knees in PHANTOM_VARIANTS acquisitions; ``seed_set`` > 0: other knees (anatomy and noise).

    ``context``: each case also carries the phantom's full label map (fibula 7 and menisci 8 kept), for studies of
    what a wrong label took; the evaluation's truth keeps 0-6 only."""
    n = 2 if quick else 12
    for i in range(n):
        acq_name, contrast = PHANTOM_VARIANTS[i % len(PHANTOM_VARIANTS)]
        acq = replace(ACQUISITIONS[acq_name], contrast=contrast)
        # not a training seed stream (training uses SeedSequence(20261122, i))
        rng = np.random.default_rng([424242, i] + ([seed_set] if seed_set else []))
        side = KneeSide.LEFT if i % 2 else KneeSide.RIGHT
        ph = make_knee_phantom(KneeAnatomy.random(rng), acq, seed=9000 + 1000 * seed_set + i, side=side)
        truth = np.where(ph.labels.array <= 6, ph.labels.array, 0).astype(np.uint8)
        case = (f"phantom{i}_{acq_name}_{contrast}_{side.value}{_set_suffix(seed_set)}", ph.image,
                ph.labels.with_array(truth))
        yield (*case, ph.labels.array) if context else case


def _set_suffix(seed_set: int) -> str:
    """Case names of a held-out seed set end in ``_set<N>`` (set 0, the reported evaluation, has none)."""
    if seed_set < 0:
        raise ValueError(f"seed set must be >= 0, got {seed_set}")
    return f"_set{seed_set}" if seed_set else ""


def joint_box(pred: np.ndarray, true: np.ndarray, margin: int) -> tuple[slice, ...]:
    """The bounding box of two masks' union, ``margin`` voxels wider each side: distance transforms run in it, not
    over the whole field of view."""
    both = np.argwhere(pred | true)
    lo, hi = np.maximum(both.min(0) - margin, 0), both.max(0) + margin + 1
    return tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))


def surface_distance(pred: np.ndarray, true: np.ndarray, spacing: np.ndarray) -> float:
    """Mean symmetric surface distance (mm) between two masks, computed in their joint bounding box."""
    if not pred.any() or not true.any():
        return float("nan")
    box = joint_box(pred, true, margin=3)
    p, t = pred[box], true[box]
    sp = p & ~ndimage.binary_erosion(p)
    st = t & ~ndimage.binary_erosion(t)
    dt_t = ndimage.distance_transform_edt(~st, sampling=spacing)
    dt_p = ndimage.distance_transform_edt(~sp, sampling=spacing)
    return float((dt_t[sp].sum() + dt_p[st].sum()) / (sp.sum() + st.sum()))


def fc_thccab(truth: LabelVolume, array: np.ndarray) -> float:
    """Femoral ThCcAB.Me of ``array`` on the truth's grid, with the truth's side (right when unknown)."""
    side = truth.meta.side if truth.meta.side in (KneeSide.RIGHT, KneeSide.LEFT) else KneeSide.RIGHT
    labels = truth.with_array(array, meta=truth.meta.replace(side=side))
    try:
        m = measure_knee(labels, plates=("femur",), schemes=("moaks",))
    except Exception as exc:  # an unmeasurable prediction is a result, recorded as NaN
        print(f"  measure failed: {exc}")
        return float("nan")
    rows = [r for r in m.rows() if r["region"] == "all" and r["metric"] == "ThCcAB.Me"]
    return float(rows[0]["value"]) if rows else float("nan")


def fc_error_split(pred: np.ndarray, true: np.ndarray, spacing: np.ndarray) -> dict:
    """Where the femoral cartilage is wrong (mL): read over background within 2 mm of the true plate (its articular
    surface too far out: fluid film, the thickness bias), over background further away (false cartilage elsewhere),
    over the femur, over another structure, or missed."""
    fc, femur = int(Structure.FEMORAL_CARTILAGE), int(Structure.FEMUR)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    p, t = pred == fc, true == fc
    over_background = p & (true == 0)
    near = np.zeros_like(p)
    if t.any() and over_background.any():
        box = joint_box(p, t, margin=1)
        near[box] = ndimage.distance_transform_edt(~t[box], sampling=spacing) <= 2.0
    return {"over_background_within_2mm": round(float((over_background & near).sum()) * voxel_ml, 3),
            "over_background_beyond_2mm": round(float((over_background & ~near).sum()) * voxel_ml, 3),
            "over_femur": round(float((p & (true == femur)).sum()) * voxel_ml, 3),
            "over_other_structures": round(float((p & ~t & (true != femur) & (true != 0)).sum()) * voxel_ml, 3),
            "missed": round(float((t & ~p).sum()) * voxel_ml, 3)}


def evaluate(bundle, case: str, image: Volume, truth: LabelVolume, device: str) -> dict:
    t0 = time.perf_counter()
    result = segment_volume(image, bundle=bundle, device=device)
    seconds = time.perf_counter() - t0
    pred = result.labels.array
    sp = image.spacing
    rec = {"case": case, "shape": list(image.spatial_shape), "spacing_mm": [round(float(s), 3) for s in sp],
           "seconds": round(seconds, 1), "warnings": result.warnings, "dice": {}, "msd_mm": {}}
    for s, name in zip(STRUCTS, NAMES, strict=True):
        rec["dice"][name] = dice(pred, truth.array, s)
        rec["msd_mm"][name] = surface_distance(pred == s, truth.array == s, sp)
    rec["fc_error_ml"] = fc_error_split(pred, truth.array, sp)
    rec["thccab_true_mm"], rec["thccab_pred_mm"] = fc_thccab(truth, truth.array), fc_thccab(truth, pred)
    rec["thccab_error_mm"] = rec["thccab_pred_mm"] - rec["thccab_true_mm"]
    print(f"{case}: " + " ".join(f"{n[:8]}={rec['dice'][n]:.3f}" for n in NAMES)
          + f" | ThCcAB {rec['thccab_true_mm']:.3f}->{rec['thccab_pred_mm']:.3f} | {seconds:.0f}s", flush=True)
    return rec


def grid_floor(case: str, image: Volume, truth: LabelVolume, spacing_mm: float) -> dict:
    """The ThCcAB error the pipeline's geometry alone allows: the true labels, one map per class, go to the working
    grid and back to the native voxels exactly as the network's probabilities do, then argmax. A model can only be
    as close as this; if the floor itself missed 0.1 mm, the working grid would have to be finer."""
    grid = WorkingGrid(image.affine, image.spatial_shape, spacing_mm)
    lab = truth.array
    channels = np.stack([grid.to_working((lab == c).astype(np.float32)) for c in range(7)])
    back = np.empty(lab.shape, np.uint8)
    for k0, k1, slab in grid.native_slabs(channels):
        back[:, :, k0:k1] = slab.argmax(0).numpy()
    true_mm, back_mm = fc_thccab(truth, lab), fc_thccab(truth, back)
    p, t = back == Structure.FEMORAL_CARTILAGE, lab == Structure.FEMORAL_CARTILAGE
    rec = {"case": case, "thccab_true_mm": true_mm, "thccab_grid_mm": back_mm, "error_mm": back_mm - true_mm,
           "fc_dice": float(2 * (p & t).sum() / max(1, p.sum() + t.sum()))}
    print(f"{case} (grid floor): FC Dice {rec['fc_dice']:.3f} | ThCcAB {true_mm:.3f}->{back_mm:.3f}", flush=True)
    return rec


# real images --------------------------------------------------------------------------------------------------------
def overlay_png(image: Volume, labels: np.ndarray, path: Path, title_slices: int = 3) -> None:
    """Sagittal slices (RAS x fixed) at 35/50/65 % of the labelled femur's R-L extent: image | image + labels."""
    perm, flip = ras_transform(image.affine)
    img = np.asarray(to_ras_array(image.array, perm, flip), dtype=np.float32)
    lab = to_ras_array(labels, perm, flip)
    sp = np.linalg.norm(ras_affine(image.affine, image.spatial_shape, perm, flip)[:3, :3], axis=0)
    fem = np.argwhere(lab == Structure.FEMUR)
    xs = (np.quantile(fem[:, 0], [0.2, 0.5, 0.8]).astype(int) if len(fem)
          else np.linspace(0.35, 0.65, title_slices) * img.shape[0])
    lo, hi = np.percentile(img, [1, 99.5])
    tiles = []
    for x in xs.astype(int):
        g = np.clip((img[x] - lo) / max(hi - lo, 1e-6), 0, 1)
        rgb = np.repeat(g[..., None], 3, axis=-1) * 255
        over = rgb.copy()
        for s in STRUCTS:
            m = lab[x] == s
            over[m] = 0.45 * over[m] + 0.55 * np.array(STRUCTURE_COLOURS[s])
        pair = np.concatenate([rgb, over], axis=0)  # (2A, S, 3): A rows, S columns
        pair = np.transpose(pair, (1, 0, 2))[::-1]  # S up, A to the right
        tile = Image.fromarray(pair.astype(np.uint8))
        w, h = tile.size
        scale = 2.0
        tile = tile.resize((int(w * sp[1] / min(sp[1:]) * scale), int(h * sp[2] / min(sp[1:]) * scale)),
                           Image.Resampling.NEAREST)
        tiles.append(tile)
    width = sum(t.width for t in tiles) + 4 * (len(tiles) - 1)
    canvas = Image.new("RGB", (width, max(t.height for t in tiles)), (255, 255, 255))
    x0 = 0
    for t in tiles:
        canvas.paste(t, (x0, 0))
        x0 += t.width + 4
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def plausibility(labels: np.ndarray, image: Volume) -> dict:
    voxel_ml = image.voxel_volume_mm3 / 1000.0
    vols = {n: round(float((labels == s).sum()) * voxel_ml, 2) for s, n in zip(STRUCTS, NAMES, strict=True)}
    fc = labels == Structure.FEMORAL_CARTILAGE
    near_femur = ndimage.binary_dilation(labels == Structure.FEMUR, iterations=2)
    on_bone = float((fc & near_femur).sum() / fc.sum()) if fc.any() else float("nan")
    _, n = ndimage.label(fc)
    return {"volumes_ml": vols, "fc_voxels_within_2_voxels_of_femur": round(on_bone, 3), "fc_components": int(n)}


def mese_case(bundle, out: Path, device: str) -> dict:
    report = discover(REAL / "pymskt_mese_t2" / "dicom")
    series = sorted([s for s in report.series if s.ok], key=lambda s: s.echo_time_ms or 0)
    rec = {}
    for idx in (0, 3):
        vol = load_series(series[idx])
        vol = vol.with_meta(side=KneeSide.RIGHT) if vol.meta.side == KneeSide.UNKNOWN else vol
        t0 = time.perf_counter()
        res = segment_volume(vol, bundle=bundle, device=device)
        overlay_png(vol, res.labels.array, out / f"mese_t2_echo{idx + 1}_overlay.png")
        rec[f"echo{idx + 1}_te{series[idx].echo_time_ms}ms"] = {
            **plausibility(res.labels.array, vol), "warnings": res.warnings,
            "seconds": round(time.perf_counter() - t0, 1), "shape": list(vol.spatial_shape),
            "spacing_mm": [round(float(s), 3) for s in vol.spacing]}
        print(f"MESE echo {idx + 1}: {rec[f'echo{idx + 1}_te{series[idx].echo_time_ms}ms']}", flush=True)
    return rec


def clair_volume() -> tuple[Volume, LabelVolume]:
    """CLAIR template and label. The header is an identity affine with no scanner position; rendered through it
    (overlay_png) the femur sits above the tibia and the trochlea faces anterior, so the identity is read as RAS."""
    folder = REAL / "cartimorph_clair_template"
    image = read_image(folder / "CLAIR-Knee-103R_template_64x128x128.nii.gz")
    labels = read_labels(folder / "CLAIR-Knee-103R_segmentation_64x128x128.nii.gz", preset="clair")
    return image.with_meta(side=KneeSide.RIGHT), LabelVolume(labels.array, image.affine)


def clair_case(bundle, out: Path, device: str) -> dict:
    image, truth = clair_volume()
    res = segment_volume(image, bundle=bundle, device=device)
    pred = res.labels.array
    dice = {}
    for s, name in zip(STRUCTS[:4], NAMES[:4], strict=True):
        p, t = pred == s, truth.array == s
        dice[name] = round(float(2 * (p & t).sum() / max(1, p.sum() + t.sum())), 4)
    overlay_png(image, pred, out / "clair_pred_overlay.png")
    overlay_png(image, truth.array, out / "clair_truth_overlay.png")
    rec = {"dice": dice, **plausibility(pred, image), "warnings": res.warnings}
    print(f"CLAIR: {rec}", flush=True)
    return rec


def summarise(records: list[dict]) -> dict:
    out = {}
    for key in ("dice", "msd_mm"):
        vals = {n: [r[key][n] for r in records if np.isfinite(r[key][n])] for n in NAMES}
        out[key] = {n: {"mean": round(float(np.mean(v)), 4) if v else None,
                        "median": round(float(np.median(v)), 4) if v else None, "n": len(v)} for n, v in vals.items()}
    out.update(thickness_agreement([r["thccab_true_mm"] for r in records], [r["thccab_pred_mm"] for r in records]))
    split = [r["fc_error_ml"] for r in records if "fc_error_ml" in r]
    if split:
        out["fc_error_ml_mean"] = {k: round(float(np.mean([s[k] for s in split])), 3) for k in split[0]}
    out["by_group"] = by_group(records)
    return out


CONTRASTS = ("dess", "pdfs", "t1", "random")
SLICE_CLASSES = ((0.8, "slices <= 0.8 mm"), (1.5, "slices 0.8-1.5 mm"), (np.inf, "slices > 1.5 mm"))


def case_groups(record: dict) -> tuple[str, str]:
    """(contrast, slice class) of a synthetic case: the contrast is the last contrast token of the case name (both
    generators put it there; a phantom's name carries its acquisition first, ``phantom4_dess_pdfs_right`` is PD-FS on
    a DESS grid), the slice class its coarsest voxel edge. Why: the targets come from published 3D DESS figures
    (0.7 mm slices), and the mixed set's mean hides how far thick-slice and T1 cases sit from them."""
    tokens = [t for t in record["case"].split("_") if t in CONTRASTS]
    contrast = tokens[-1] if tokens else "other"
    thickest = max(record["spacing_mm"])
    return contrast, next(name for limit, name in SLICE_CLASSES if thickest <= limit + 1e-6)


def by_group(records: list[dict]) -> dict:
    """Mean Dice of each structure and ThCcAB agreement per contrast and per slice class."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        for g in case_groups(r):
            groups.setdefault(g, []).append(r)
    order = [*CONTRASTS, "other", *(name for _, name in SLICE_CLASSES)]
    out = {}
    for g in sorted(groups, key=order.index):
        rs = groups[g]
        out[g] = {"n": len(rs),
                  "dice": {n: round(float(np.nanmean([r["dice"][n] for r in rs])), 4) for n in NAMES},
                  **thickness_agreement([r["thccab_true_mm"] for r in rs], [r["thccab_pred_mm"] for r in rs])}
    return out


def thickness_agreement(true_mm: list[float], pred_mm: list[float]) -> dict:
    """Predicted against true femoral ThCcAB over cases (unmeasurable ones, NaN, left out): |error| mean, median and
    count within 0.1 mm; with 3 or more cases the fit too (slope 1 and r 1 for a measurement, slope 0 for a prior)."""
    t, p = np.asarray(true_mm, float), np.asarray(pred_mm, float)
    ok = np.isfinite(t) & np.isfinite(p)
    t, p = t[ok], p[ok]
    err = np.abs(p - t)
    out = {"thccab_abs_error_mm": {"mean": round(float(err.mean()), 4) if err.size else None,
                                   "median": round(float(np.median(err)), 4) if err.size else None,
                                   "within_0.1mm": int(np.sum(err <= 0.1)), "n": int(err.size),
                                   "n_cases": len(true_mm)}}
    if t.size >= 3:
        out["thccab_fit"] = {"slope": round(float(np.polyfit(t, p, 1)[0]), 3),
                             "r": round(float(np.corrcoef(t, p)[0, 1]), 3),
                             "bias_mm": round(float(np.mean(p - t)), 4)}
    return out


def dice(pred: np.ndarray, true: np.ndarray, label: int) -> float:
    """Dice of one label between two label arrays (NaN when neither has it)."""
    p, t = pred == label, true == label
    denom = int(p.sum() + t.sum())
    return float(2 * (p & t).sum() / denom) if denom else float("nan")


def markdown(summary: dict, records: list[dict], real: dict, floor: list[dict] | None = None) -> str:
    lines = ["| structure | Dice mean | Dice median | MSD mean (mm) | MSD median (mm) |", "|---|---|---|---|---|"]
    for n in NAMES:
        d, m = summary["dice"][n], summary["msd_mm"][n]
        lines.append(f"| {n} | {d['mean']} | {d['median']} | {m['mean']} | {m['median']} |")
    t = summary["thccab_abs_error_mm"]
    lines += ["", f"Femoral ThCcAB.Me |pred - true|: mean {t['mean']} mm, median {t['median']} mm, "
                  f"{t['within_0.1mm']}/{t['n']} measurable cases within 0.1 mm ({t['n_cases']} cases)", "",
              "| case | " + " | ".join(NAMES) + " | ThCcAB true | ThCcAB pred |", "|---" * (len(NAMES) + 3) + "|"]
    if "thccab_fit" in summary:
        f = summary["thccab_fit"]
        lines[-3:-3] = ["", f"Predicted on true ThCcAB: slope {f['slope']}, r {f['r']}, "
                            f"mean signed error {f['bias_mm']} mm"]
    if "fc_error_ml_mean" in summary:
        e = summary["fc_error_ml_mean"]
        lines[-3:-3] = ["", "Femoral cartilage errors, mean mL per case: read over background within 2 mm of the "
                            f"true plate {e['over_background_within_2mm']}, beyond {e['over_background_beyond_2mm']}, "
                            f"over the femur {e['over_femur']}, over other structures {e['over_other_structures']}, "
                            f"missed {e['missed']}"]
    for r in records:
        lines.append(f"| {r['case']} | " + " | ".join(f"{r['dice'][n]:.3f}" for n in NAMES)
                     + f" | {r['thccab_true_mm']:.3f} | {r['thccab_pred_mm']:.3f} |")
    if summary.get("by_group"):
        lines += ["", "By contrast and by slice thickness (mean Dice; femoral ThCcAB cases within 0.1 mm):", "",
                  "| group | cases | " + " | ".join(NAMES) + " | ThCcAB within 0.1 mm |",
                  "|---" * (len(NAMES) + 3) + "|"]
        for g, v in summary["by_group"].items():
            t = v["thccab_abs_error_mm"]
            lines.append(f"| {g} | {v['n']} | " + " | ".join(f"{v['dice'][n]:.3f}" for n in NAMES)
                         + f" | {t['within_0.1mm']}/{t['n']} |")
    if floor:
        errs = np.abs([r["error_mm"] for r in floor if np.isfinite(r["error_mm"])])
        lines += ["", f"Grid floor (true labels to the {floor[0].get('spacing_mm', '')} mm working grid and back): "
                      f"ThCcAB |error| max {errs.max():.4f} mm, mean {errs.mean():.4f} mm over {len(errs)} cases; "
                      f"femoral cartilage Dice min {min(r['fc_dice'] for r in floor):.3f}"]
    lines += ["", "Real images:", "```", json.dumps(real, indent=1), "```"]
    return "\n".join(lines) + "\n"


def merge(out: Path, bundle) -> None:
    """Combine the part files (records_*.json, real.json) into results.json and results.md."""
    records = [r for f in sorted(out.glob("records_*.json")) for r in json.loads(f.read_text())]
    real = json.loads((out / "real.json").read_text()) if (out / "real.json").exists() else {}
    floor = json.loads((out / "floor.json").read_text()) if (out / "floor.json").exists() else []
    summary = summarise(records) if records else {}
    result = {"bundle": str(bundle.path), "model_sha256": bundle.sha256,
              "metadata_training": bundle.metadata.get("training"), "summary": summary, "records": records,
              "real": real, "grid_floor": floor}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    text = markdown(summary, records, real, floor) if records else json.dumps(real, indent=1)
    (out / "results.md").write_text(text)
    print(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "pipelines" / "out" / "knee_mr_seg" / "eval")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="fewer synthetic cases (smoke run)")
    ap.add_argument("--parts", default="real,woo,phantom",
                    help="comma list of real, woo, phantom, floor (the working grid's own ThCcAB error, no "
                         "network); run parts in separate processes, then --merge")
    ap.add_argument("--merge", action="store_true", help="only combine the part files already in --out")
    ap.add_argument("--seed-set", type=int, default=0,
                    help="0: the reported synthetic cases; N > 0: held-out ones (other procedural knees, other "
                         "renders of the woo_oai knees) for checking settings chosen on set 0")
    args = ap.parse_args()
    bundle = load_bundle(args.bundle)
    args.out.mkdir(parents=True, exist_ok=True)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not args.merge:
        if "real" in parts:
            real = {"mese_t2": mese_case(bundle, args.out, args.device),
                    "clair": clair_case(bundle, args.out, args.device)}
            (args.out / "real.json").write_text(json.dumps(real, indent=1))
        gens = {"woo": woo_cases, "phantom": phantom_cases}
        if "floor" in parts:  # no network: the geometry's own thickness error on every synthetic case
            floor = []
            for gen in gens.values():
                for case, image, truth in gen(args.quick, args.seed_set):
                    floor.append({**grid_floor(case, image, truth, bundle.working_spacing_mm),
                                  "spacing_mm": bundle.working_spacing_mm})
                    (args.out / "floor.json").write_text(json.dumps(floor, indent=1))
        for part in (p for p in parts if p in gens):
            records = []
            for case, image, truth in gens[part](args.quick, args.seed_set):
                records.append(evaluate(bundle, case, image, truth, args.device))
                (args.out / f"records_{part}.json").write_text(json.dumps(records, indent=1))
    merge(args.out, bundle)


if __name__ == "__main__":
    main()
