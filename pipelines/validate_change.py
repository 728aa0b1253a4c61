"""Accuracy of koaimg's change analysis on phantom pairs with exact Δ, and on a real label map paired with itself.

Phantom part: knees (random anatomy per case) scanned twice; the follow-up carries a prescribed thickness change
(global 0, ±0.05, ±0.10, ±0.25 mm, and regional changes) and a worst-case repositioning (a 10° rotation about a random
axis and a 10 mm shift). Both visits are measured from their label maps, registered on the femur and compared; every
subregion's ΔThCtAB is checked against the phantom's exact regional Δ. The same Δ computed without registration
(each visit's own regional means) is reported alongside. Real part: a real label map (pymskt DESS) against a rigidly
moved, re-gridded copy of itself (true Δ = 0).

    nice -n 10 python pipelines/validate_change.py --out validate_change_out            # DESS grid (~15 min)
    nice -n 10 python pipelines/validate_change.py --acquisition sample --out /tmp/vc   # coarse grid (~2 min)

Prints the tables and writes results.json, regions.csv and delta_scatter.png into --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from koaimg.change import compare_knees, rigidly_moved_labels, visit_from_measurement
from koaimg.export import write_rows_csv
from koaimg.measure import measure_knee
from koaimg.synth import ACQUISITIONS, KneeAnatomy, Pose, ThicknessChange, make_pair
from koaimg.synth._knee_phantom import world_from_knee

REPO = Path(__file__).resolve().parents[1]
REAL_LABELS = (REPO.parent / "shared" / "realdata" / "pymskt_dess_labels"
               / "SAG_3D_DESS_RIGHT_bones_cart_men_fib-label.nrrd")
BONE = {"femur": "femoral_cartilage", "tibia": "tibial_cartilage", "patella": "patellar_cartilage"}

CASES = [
    ("global 0", ThicknessChange(0.0)),
    ("global +0.05", ThicknessChange(0.05)),
    ("global -0.05", ThicknessChange(-0.05)),
    ("global +0.10", ThicknessChange(0.10)),
    ("global -0.10", ThicknessChange(-0.10)),
    ("global +0.25", ThicknessChange(0.25)),
    ("global -0.25", ThicknessChange(-0.25)),
    ("regional FMC +0.25, TLC -0.10", ThicknessChange(0.0, {"FMC": 0.25, "TLC": -0.10})),
    ("regional FLC -0.25, TMC +0.10", ThicknessChange(0.0, {"FLC": -0.25, "TMC": 0.10})),
    ("regional FMP +0.05, FLT -0.05, TMA +0.25", ThicknessChange(0.0, {"FMP": 0.05, "FLT": -0.05, "TMA": 0.25})),
    ("regional FLP -0.10, TLP +0.05 on global -0.05", ThicknessChange(-0.05, {"FLP": -0.10, "TLP": 0.05})),
]


def worst_case_pose(rng: np.random.Generator, deg: float, mm: float) -> Pose:
    """A repositioning of exactly ``deg`` about a random axis and ``mm`` in a random direction."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    shift = rng.normal(size=3)
    shift *= mm / np.linalg.norm(shift)
    euler = Rotation.from_rotvec(np.deg2rad(deg) * axis).as_euler("xyz", degrees=True)
    return Pose(tuple(float(a) for a in euler), tuple(float(t) for t in shift))


def _registration_error(matrix: np.ndarray, truth: np.ndarray, points: np.ndarray) -> tuple[float, float]:
    err = matrix @ np.linalg.inv(truth)
    moved = points @ err[:3, :3].T + err[:3, 3]
    return (float(np.degrees(Rotation.from_matrix(err[:3, :3]).magnitude())),
            float(np.linalg.norm(moved - points, axis=1).max()))


def phantom_case(index: int, name: str, change: ThicknessChange, acquisition, deg: float, mm: float) -> dict:
    rng = np.random.default_rng([index, 606])
    anatomy = KneeAnatomy.random(rng)
    side = "right" if index % 2 == 0 else "left"
    t0 = time.perf_counter()
    pair = make_pair(anatomy, acquisition, change, seed=1000 + index, side=side,
                     followup_pose=worst_case_pose(rng, deg, mm))
    t1 = time.perf_counter()
    mb, mf = measure_knee(pair.baseline.labels), measure_knee(pair.followup.labels)
    b = visit_from_measurement(mb, pair.baseline.labels)
    f = visit_from_measurement(mf, pair.followup.labels)
    t2 = time.perf_counter()
    result = compare_knees(b, f)
    t3 = time.perf_counter()
    truth = {(BONE[r["bone"]], r["region"]): r["delta"] for r in pair.delta_regions if r["metric"] == "ThCtAB.Me"}
    own = {(r["structure"], r["region"]): r["value"] for r in mb.rows() if r["scheme"] == "moaks"
           and r["metric"] == "ThCtAB.Me"}
    own_f = {(r["structure"], r["region"]): r["value"] for r in mf.rows() if r["scheme"] == "moaks"
             and r["metric"] == "ThCtAB.Me"}
    regions = []
    for r in result.rows():
        if r["scheme"] != "moaks" or r["metric"] != "ThCtAB.Me":
            continue
        key = (r["structure"], r["region"])
        regions.append({"case": name, "side": side, "structure": r["structure"], "region": r["region"],
                        "true_delta": truth[key], "delta": r["delta"], "error": r["delta"] - truth[key],
                        "unregistered_error": own_f[key] - own[key] - truth[key], "beyond_sdd": r["beyond_sdd"],
                        "sdd": r["sdd"]})
    w_b = world_from_knee(pair.baseline.side, pair.baseline.pose)
    w_f = world_from_knee(pair.followup.side, pair.followup.pose)
    rot, shift = _registration_error(result.transform.matrix, w_b @ np.linalg.inv(w_f), b.femoral.points)
    return {"case": name, "side": side, "regions": regions, "registration_rotation_error_deg": rot,
            "registration_max_displacement_error_mm": shift, "registration_rms_mm": result.transform.rms_mm,
            "seconds": {"phantom_pair": t1 - t0, "measure_both": t2 - t1, "change": t3 - t2}}


def real_self_pair(deg: float, mm: float) -> dict:
    """A real label map against a rigidly moved, re-gridded copy of itself: every femoral subregion should be ~0."""
    from koaimg.io import read_labels

    labels = read_labels(REAL_LABELS, preset="pymskt")
    move = np.eye(4)
    axis = np.array([0.6, 0.3, 0.74]) / np.linalg.norm([0.6, 0.3, 0.74])
    move[:3, :3] = Rotation.from_rotvec(np.deg2rad(deg) * axis).as_matrix()
    centre = labels.index_to_world(np.array(labels.spatial_shape)[None, :] / 2.0).ravel()
    move[:3, 3] = centre - move[:3, :3] @ centre + np.array([0.6, -0.48, 0.64]) * mm
    t0 = time.perf_counter()
    moved = rigidly_moved_labels(labels, move)
    t1 = time.perf_counter()
    mb, mf = measure_knee(labels), measure_knee(moved)
    result = compare_knees(visit_from_measurement(mb, labels), visit_from_measurement(mf, moved))
    t2 = time.perf_counter()
    rows = [r for r in result.rows() if r["metric"] == "ThCtAB.Me" and r["structure"] == "femoral_cartilage"]
    rot, shift = _registration_error(result.transform.matrix, np.linalg.inv(move),
                                     visit_from_measurement(mb).femoral.points)
    return {"rows": [{k: r[k] for k in ("scheme", "region", "baseline", "delta", "beyond_sdd")} for r in rows],
            "max_abs_delta_mm": max(abs(r["delta"]) for r in rows), "registration_rotation_error_deg": rot,
            "registration_max_displacement_error_mm": shift,
            "seconds": {"resample": t1 - t0, "measure_change": t2 - t1}}


def summarise(regions: list[dict]) -> list[dict]:
    out = []
    for structure in ("femoral_cartilage", "tibial_cartilage", "patellar_cartilage", "femorotibial"):
        sel = [r for r in regions if r["region"] != "all" and (r["structure"] == structure or (
            structure == "femorotibial" and r["structure"] in ("femoral_cartilage", "tibial_cartilage")))]
        if not sel:
            continue
        e = np.array([r["error"] for r in sel])
        u = np.array([r["unregistered_error"] for r in sel])
        out.append({"plates": structure, "n_subregion_values": len(e), "bias_mm": float(e.mean()),
                    "sd_mm": float(e.std(ddof=1)), "max_abs_mm": float(np.abs(e).max()),
                    "unregistered_bias_mm": float(u.mean()), "unregistered_sd_mm": float(u.std(ddof=1))})
    return out


def scatter(regions: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    colours = {"femoral_cartilage": "tab:blue", "tibial_cartilage": "tab:green", "patellar_cartilage": "tab:red"}
    for structure, colour in colours.items():
        sel = [r for r in regions if r["structure"] == structure and r["region"] != "all"]
        if not sel:
            continue
        t = np.array([r["true_delta"] for r in sel])
        axes[0].scatter(t, [r["delta"] for r in sel], s=10, c=colour, label=structure.split("_")[0])
        axes[1].scatter(t + np.random.default_rng(0).uniform(-0.01, 0.01, len(t)), [r["error"] for r in sel], s=10,
                        c=colour)
    axes[0].plot([-0.3, 0.45], [-0.3, 0.45], "k--", lw=0.8)
    axes[0].set(xlabel="true subregion ΔThCtAB (mm)", ylabel="measured (mm)", title="measured vs true Δ")
    axes[0].legend()
    axes[1].axhline(0, c="k", lw=0.8)
    for y in (-0.03, 0.03):
        axes[1].axhline(y, c="grey", lw=0.6, ls=":")
    axes[1].set(xlabel="true subregion ΔThCtAB (mm)", ylabel="error (mm)", title="error per subregion")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--acquisition", default="dess", choices=sorted(ACQUISITIONS))
    parser.add_argument("--scale", type=float, default=1.0, help="fewer voxels per axis (same field of view)")
    parser.add_argument("--deg", type=float, default=10.0, help="repositioning rotation (deg)")
    parser.add_argument("--mm", type=float, default=10.0, help="repositioning shift (mm)")
    parser.add_argument("--cases", type=int, default=len(CASES), help="run the first N cases")
    parser.add_argument("--no-real", action="store_true", help="skip the real label map self-pair")
    parser.add_argument("--out", type=Path, default=Path("validate_change_out"))
    args = parser.parse_args()
    acquisition = ACQUISITIONS[args.acquisition]
    if args.scale != 1:
        acquisition = acquisition.scaled(args.scale)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"grid {acquisition.name}: {acquisition.shape} voxels of {np.round(acquisition.spacing, 3).tolist()} mm; "
          f"repositioning {args.deg:g} deg / {args.mm:g} mm")
    cases = []
    for index, (name, change) in enumerate(CASES[:args.cases]):
        case = phantom_case(index, name, change, acquisition, args.deg, args.mm)
        cases.append(case)
        errs = [r["error"] for r in case["regions"] if r["region"] != "all" and r["structure"] != "patellar_cartilage"]
        print(f"  {name:<48} {case['side']:<5} reg. error {case['registration_rotation_error_deg']:.3f} deg / "
              f"{case['registration_max_displacement_error_mm']:.3f} mm; femorotibial subregion error mean "
              f"{np.mean(errs):+.4f} SD {np.std(errs, ddof=1):.4f} max {np.max(np.abs(errs)):.4f} mm "
              f"({sum(case['seconds'].values()):.0f} s)", flush=True)
    regions = [r for c in cases for r in c["regions"]]
    summary = summarise(regions)
    zero = next((c for c in cases if c["case"] == "global 0"), None)
    print("\nsubregion ΔThCtAB.Me error (measured - true), all cases:")
    print(f"  {'plates':<20} {'n':>4} {'bias':>8} {'SD':>7} {'max|e|':>7}   without registration: bias / SD")
    for s in summary:
        print(f"  {s['plates']:<20} {s['n_subregion_values']:>4} {s['bias_mm']:+8.4f} {s['sd_mm']:7.4f} "
              f"{s['max_abs_mm']:7.4f}   {s['unregistered_bias_mm']:+.4f} / {s['unregistered_sd_mm']:.4f}")
    if zero is not None:
        flagged = [f"{r['structure']} {r['region']}" for r in zero["regions"] if r["beyond_sdd"]]
        print(f"zero-change pair: {len(flagged)} subregion(s) beyond SDD {flagged}")
    real = None
    if not args.no_real and REAL_LABELS.is_file():
        real = real_self_pair(5.0, 5.0)
        print(f"\nreal label map vs its own copy moved 5 deg / 5 mm and re-gridded: registration error "
              f"{real['registration_rotation_error_deg']:.3f} deg / "
              f"{real['registration_max_displacement_error_mm']:.3f} mm; femoral subregion |Δ| max "
              f"{real['max_abs_delta_mm']:.4f} mm")
        for r in real["rows"]:
            print(f"  {r['scheme']:<15} {r['region']:<6} ThCtAB {r['baseline']:.3f} mm  Δ {r['delta']:+.4f} mm")
    write_rows_csv(regions, args.out / "regions.csv")
    (args.out / "results.json").write_text(json.dumps(
        {"acquisition": acquisition.name, "shape": acquisition.shape, "spacing": acquisition.spacing,
         "repositioning": {"deg": args.deg, "mm": args.mm}, "summary": summary,
         "cases": [{k: v for k, v in c.items() if k != "regions"} for c in cases], "real_self_pair": real},
        indent=2, default=float))
    scatter(regions, args.out / "delta_scatter.png")
    print(f"\nwritten: {args.out}/results.json, regions.csv, delta_scatter.png")


if __name__ == "__main__":
    main()
