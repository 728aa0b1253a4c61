"""Benchmark cartilage thickness against exact truth: koaimg (binary labels, partial volume, nearest) and the peers
pymskt and localthickness, on the procedural DESS knee and on analytic shells (domain-specs §3.3).

Every method runs in its own child process (peers with ``pipelines/.venv-peers/bin/python``, never the project's
venv), reading its inputs from .npy files and writing the points it measured and their thickness back. The parent
computes the exact truth at each method's *own* points (the thickness at the bone foot point of the point), so a
method is not penalised for placing its surface points differently, only for the thickness it reports there.

Scored points: true thickness >= 1.0 mm (on the plate, outside full-thickness defects), the method returned a value.
"near step" = within 1 mm (along the bone surface) of a thickness discontinuity: a plate edge or a defect wall, where
no voxel method can be sub-voxel; "interior" = the rest. Time: median of ``--repeats`` calls after a warm-up (knee);
shells: median over phantoms of one call each. Peak MiB (knee): the rise of the child's peak resident memory during
its first knee call above its resident size just before it (inputs loaded, libraries imported and warmed on a small
shell, so compiled kernels are not counted).

Peers live in their own venv, made by ``--setup-peers`` (``pip install mskt nibabel localthickness``); without it
their rows say "not installed" and the koaimg rows still run.

    .venv/bin/python pipelines/bench_measure.py [--quick] [--setup-peers] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
PEERS_VENV = HERE / ".venv-peers"
#: pip packages per peer; mskt imports nibabel without declaring it (mskt 0.1.22), so it is named here
PEER_PACKAGES = {"pymskt": ["mskt", "nibabel"], "localthickness": ["localthickness"]}
METHODS = ("koaimg-binary", "koaimg-pv", "koaimg-nearest", "pymskt", "localthickness")
PEERS = {"pymskt": "pymskt", "localthickness": "localthickness"}
#: labels of the femur and its cartilage in koaimg's schema (the phantoms use these)
FEMUR, FEMORAL_CARTILAGE = 1, 2
MIN_TRUTH_MM = 1.0
STEP_MM = 1.0


# --------------------------------------------------------------------------------------------- child-process side
# (runs under the peers' venv too: standard library and numpy/scipy only at module level)

def _rss_kib(field_name: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Reset VmHWM (Linux >= 4.0) so the next peak belongs to the next call alone."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _load(method: str, case: Path) -> dict:
    """A method's inputs in the form it takes them (not timed): koaimg a LabelVolume (+ partial-volume maps),
    pymskt a SimpleITK label image, localthickness the label array."""
    labels, affine = np.load(case / "labels.npy"), np.load(case / "affine.npy")
    if method.startswith("koaimg"):
        from koaimg.core import LabelVolume, Structure

        inputs = {"labels": LabelVolume(labels, affine)}
        if method == "koaimg-pv":
            inputs["probabilities"] = {Structure.FEMUR: np.load(case / "bone.npy"),
                                       Structure.FEMORAL_CARTILAGE: np.load(case / "cart.npy")}
        return inputs
    if method == "pymskt":
        return {"image": _sitk_image(labels, affine)}
    return {"labels": labels, "affine": affine}


def _run_koaimg(method: str, inputs: dict) -> tuple[np.ndarray, np.ndarray]:
    from koaimg.measure import cartilage_thickness

    if method == "koaimg-pv":
        result = cartilage_thickness(inputs["labels"], probabilities=inputs["probabilities"])
    elif method == "koaimg-nearest":
        result = cartilage_thickness(inputs["labels"], method="nearest")
    else:
        result = cartilage_thickness(inputs["labels"])
    return result.points, result.thickness


def _sitk_image(labels: np.ndarray, affine: np.ndarray):
    """SimpleITK image (LPS physical space, as ITK/pymskt expect) of a label array on a RAS affine."""
    import SimpleITK as sitk

    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(labels.transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(v) for v in lps[:3, 3]))
    image.SetDirection(tuple(float(v) for v in (lps[:3, :3] / spacing).ravel()))
    return image


def _run_pymskt(inputs: dict) -> tuple[np.ndarray, np.ndarray]:
    """pymskt's documented recipe with its defaults: BoneMesh from the label image, create_mesh(),
    calc_cartilage_thickness() (bone-mesh vertices, ray along the vertex normal, distance between the two
    cartilage-mesh hits, 0 where there are not exactly two)."""
    import contextlib
    import io

    from pymskt.mesh import BoneMesh

    femur = BoneMesh(seg_image=inputs["image"], label_idx=FEMUR, list_cartilage_labels=[FEMORAL_CARTILAGE])
    with contextlib.redirect_stdout(io.StringIO()):  # it prints one line per cartilage mesh
        femur.create_mesh()
        femur.calc_cartilage_thickness()
    points_lps = np.asarray(femur.points, dtype=np.float64)
    thickness = np.asarray(femur.point_data["thickness (mm)"], dtype=np.float64)
    return points_lps * np.array([-1.0, -1.0, 1.0]), thickness


def _run_localthickness(inputs: dict) -> tuple[np.ndarray, np.ndarray]:
    """localthickness on the cartilage mask (isotropic voxels only: resampled by nearest neighbour to the in-plane
    spacing), reported as the Hildebrand diameter 2 x inscribed-ball radius, read at the bone voxels touching
    cartilage (largest value among their 26 neighbours: the cartilage voxels against the bone)."""
    import localthickness as lt
    from scipy import ndimage

    labels, affine = inputs["labels"], inputs["affine"]
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    cart = labels == FEMORAL_CARTILAGE
    bone = labels == FEMUR
    idx = np.argwhere(cart)
    lo = np.maximum(idx.min(axis=0) - 3, 0)
    hi = np.minimum(idx.max(axis=0) + 4, np.array(labels.shape))
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    sub = cart[box]
    iso = float(spacing.min())
    new_shape = [max(1, round(n * s / iso)) for n, s in zip(sub.shape, spacing, strict=True)]
    maps = [np.minimum(((np.arange(m) + 0.5) * n / m).astype(int), n - 1)
            for m, n in zip(new_shape, sub.shape, strict=True)]
    fine = sub[np.ix_(*maps)]
    radius = lt.local_thickness(fine, scale=1)
    # back to the label grid: each voxel takes the fine voxel at its centre
    back = [np.minimum(((np.arange(n) + 0.5) * m / n).astype(int), m - 1)
            for m, n in zip(new_shape, sub.shape, strict=True)]
    lt_mm = np.zeros(labels.shape, np.float32)
    lt_mm[box] = 2.0 * iso * radius[np.ix_(*back)] * sub
    interface = bone & ndimage.binary_dilation(cart, np.ones((3, 3, 3), bool))
    value = ndimage.maximum_filter(lt_mm, size=3)
    ijk = np.argwhere(interface)
    points = ijk @ affine[:3, :3].T + affine[:3, 3]
    return points, value[tuple(ijk.T)].astype(np.float64)


def _call(method: str, inputs: dict) -> tuple[np.ndarray, np.ndarray]:
    if method.startswith("koaimg"):
        return _run_koaimg(method, inputs)
    if method == "pymskt":
        return _run_pymskt(inputs)
    return _run_localthickness(inputs)


def worker(method: str, jobs_path: Path) -> None:
    """Child process: measure every job's case, write points/thickness beside it, timings and peaks to JSON.

    A job with ``warm_dir`` first measures that (small) case untimed, so compiled kernels and lazy imports are
    loaded; its first own call then gives the peak memory (and is the warm-up), and ``repeats`` timed calls follow.
    A job without repeats is called once, timed (the first such job of a run is preceded by an untimed call).
    """
    jobs = json.loads(jobs_path.read_text())
    report = []
    warmed = False
    for job in jobs:
        case = Path(job["dir"])
        if job.get("warm_dir"):
            _call(method, _load(method, Path(job["warm_dir"])))
        elif not warmed:
            _call(method, _load(method, case))
        warmed = True
        inputs = _load(method, case)
        reset = _reset_peak()
        before = _rss_kib("VmRSS")
        start = time.perf_counter()
        points, thickness = _call(method, inputs)
        first = time.perf_counter() - start
        peak_mib = ((_rss_kib("VmHWM") - before) / 1024.0) if reset else None
        times = [first]
        if job["repeats"] > 1:
            times = []
            for _ in range(job["repeats"]):
                start = time.perf_counter()
                _call(method, inputs)
                times.append(time.perf_counter() - start)
        np.save(case / f"{method}_points.npy", np.asarray(points, np.float64))
        np.save(case / f"{method}_thickness.npy", np.asarray(thickness, np.float64))
        report.append({"case": job["case"], "times_s": times, "first_call_s": first, "peak_mib": peak_mib})
        jobs_path.with_suffix(".out.json").write_text(json.dumps(report))


# --------------------------------------------------------------------------------------------------- parent side

@dataclass
class Case:
    """One phantom: where its inputs are, and ``evaluate(points) -> (truth mm, distance to a step mm, signed
    distance to the true bone surface mm)`` at any RAS points."""

    name: str
    directory: Path
    repeats: int
    evaluate: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
    meta: dict = field(default_factory=dict)


def _write_inputs(directory: Path, labels, bone: np.ndarray, cart: np.ndarray) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "labels.npy", labels.array)
    np.save(directory / "affine.npy", labels.affine)
    np.save(directory / "bone.npy", bone.astype(np.float32))
    np.save(directory / "cart.npy", cart.astype(np.float32))


def knee_case(root: Path, quick: bool, repeats: int) -> Case:
    """The procedural knee (FMC full-thickness and FLT 60 % defects), slightly off the scanner axes like a real knee,
    on the OAI DESS grid (quick: a 256 x 256 x 128 crop of it)."""
    from scipy.spatial import cKDTree

    from koaimg.synth import Acquisition, Defect, KneeAnatomy, Pose, make_knee_phantom, surface_mesh
    from koaimg.synth._knee_phantom import world_from_knee
    from koaimg.synth._knee_sdf import foot_points

    anatomy = KneeAnatomy().with_defects(Defect("FMC", 5.0, 1.0), Defect("FLT", 4.0, 0.6))
    shape = (256, 256, 128) if quick else (384, 384, 160)
    acquisition = Acquisition("dess_bench", shape, (0.3646, 0.3646, 0.7), "PIR", "dess")
    pose = Pose((3.0, -4.0, 2.0), (1.5, -2.0, 1.0))
    phantom = make_knee_phantom(anatomy, acquisition, seed=0, pose=pose, keep_bone_fraction=True, with_image=False)
    directory = root / "knee"
    _write_inputs(directory, phantom.labels, phantom.bone_fraction["femur"].array,
                  phantom.cartilage_fraction["femur"].array)
    to_knee = np.linalg.inv(world_from_knee(phantom.side, phantom.pose))
    prims = anatomy.femur_prims()
    mesh = surface_mesh(anatomy, "femur")
    mesh_plate, mesh_h, _ = anatomy.plate_and_thickness("femur", mesh.centroids, mesh.normals)
    bare = cKDTree(mesh.centroids[~mesh_plate | (mesh_h <= 0)])
    defects = anatomy.defect_centres("femur")

    def evaluate(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        feet = foot_points(prims, np.ascontiguousarray(points @ to_knee[:3, :3].T + to_knee[:3, 3]))
        plate, h, _ = anatomy.plate_and_thickness("femur", feet[:, :3], feet[:, 3:6])
        edge = bare.query(feet[:, :3])[0]
        for centre, defect in defects:  # partial-depth lesion walls are steps too
            edge = np.minimum(edge, np.abs(np.linalg.norm(feet[:, :3] - centre, axis=1) - defect.radius_mm))
        return np.where(plate, h, 0.0), edge, feet[:, 6]

    return Case("knee", directory, repeats, evaluate, {"shape": shape, "spacing": acquisition.spacing,
                                                       "pose": [pose.rotation_deg, pose.translation_mm]})


def shell_cases(root: Path, quick: bool) -> list[Case]:
    """Analytic shells, each with a 4 mm full-thickness defect at its top, over thickness and tilt."""
    from koaimg.synth._shells import KINDS, shell_phantom

    thicknesses = (1.0, 2.0, 3.0) if quick else (0.8, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
    tilts = (0.0, 60.0) if quick else (0.0, 30.0, 60.0)
    cases = []
    seed = 0
    for kind in KINDS:
        for h in thicknesses:
            for tilt in tilts:
                seed += 1
                ph = shell_phantom(kind, thickness_mm=h, tilt_deg=tilt, defect_radius_mm=4.0, seed=seed)
                name = f"{kind}_h{h:.1f}_t{tilt:.0f}"
                directory = root / name
                _write_inputs(directory, ph.labels, ph.bone_fraction.array, ph.cartilage_fraction.array)

                def evaluate(points: np.ndarray, ph=ph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
                    _, _, distance = ph.project(points)
                    return ph.truth_thickness(points), ph.edge_distance(points), distance

                cases.append(Case(name, directory, 1, evaluate,
                                  {"kind": kind, "thickness_mm": h, "tilt_deg": tilt, "seed": seed}))
    return cases


def regional_knee(quick: bool, repeats: int) -> dict:
    """Regional figures on the whole knee (femur, tibia, patella; FMC and TLC full-thickness, FLT 60 % defects):
    per MOAKS subregion, ThCtAB.Me against the phantom's exact regional truth (end to end: landmark-placed region
    boundaries included) and against the truth at the measured points (measurement only), dAB% against truth, MOAKS
    grades against truth; and the time of ``measure_knee`` (thickness + subregions + MOAKS) for the femur alone and
    for all plates with both schemes (median of ``repeats`` after a warm-up)."""
    from koaimg.core import Structure
    from koaimg.measure import measure_knee
    from koaimg.synth import Acquisition, Defect, KneeAnatomy, Pose, make_knee_phantom
    from koaimg.synth._knee_phantom import world_from_knee
    from koaimg.synth._knee_sdf import foot_points

    anatomy = KneeAnatomy().with_defects(Defect("FMC", 5.0, 1.0), Defect("FLT", 4.0, 0.6), Defect("TLC", 4.0, 1.0))
    shape = (256, 256, 128) if quick else (384, 384, 160)
    acquisition = Acquisition("dess_bench", shape, (0.3646, 0.3646, 0.7), "PIR", "dess")
    pose = Pose((3.0, -4.0, 2.0), (1.5, -2.0, 1.0))
    phantom = make_knee_phantom(anatomy, acquisition, seed=3, pose=pose, keep_bone_fraction=True, with_image=False)
    to_knee = np.linalg.inv(world_from_knee(phantom.side, phantom.pose))

    def truth_at(bone: str, points: np.ndarray) -> np.ndarray:
        k = points @ to_knee[:3, :3].T + to_knee[:3, 3]
        f = anatomy.frame_from_knee(bone)
        feet = foot_points(anatomy.bone_prims()[bone], np.ascontiguousarray(k @ f[:3, :3].T + f[:3, 3]))
        plate, h, _ = anatomy.plate_and_thickness(bone, feet[:, :3], feet[:, 3:6])
        return np.where(plate, h, 0.0)

    structures = {"femur": (Structure.FEMUR, Structure.FEMORAL_CARTILAGE),
                  "tibia": (Structure.TIBIA, Structure.TIBIAL_CARTILAGE),
                  "patella": (Structure.PATELLA, Structure.PATELLAR_CARTILAGE)}
    out: dict = {"regions": [], "summary": {}, "timing": {}}
    for source in ("binary", "probability"):
        probabilities = None
        if source == "probability":
            probabilities = {}
            for bone, (b, c) in structures.items():
                probabilities[b] = phantom.bone_fraction[bone].array
                probabilities[c] = phantom.cartilage_fraction[bone].array
        measurement = measure_knee(phantom.labels, probabilities=probabilities)
        e2e, same, dab, grades = [], [], [], []
        for bone, plate in measurement.plates.items():
            truth_rows = {r["region"]: r for r in phantom.regions[bone].rows}
            r = plate.result
            h_true = truth_at(bone, r.points)
            ok = np.isfinite(r.thickness)
            for row in (x for x in plate.rows if x["scheme"] == "moaks"):
                name = row["region"]
                sel = ok & ((plate.regions == name) if name != "all" else True)
                a = r.area[sel]
                t = truth_rows[name]
                entry = {"source": source, "plate": bone, "region": name,
                         "ThCtAB_bias_e2e": row["ThCtAB.Me"] - t["ThCtAB.Me"],
                         "ThCtAB_bias_same_points": float(((r.thickness[sel] - h_true[sel]) * a).sum() / a.sum()),
                         "dAB_pct_diff": row["dAB%"] - t["dAB%"], "tAB_rel": row["tAB"] / t["tAB"] - 1.0}
                if name != "all":
                    entry["grades_equal"] = (row["moaks_any_loss_grade"] == t["moaks_any_loss_grade"]
                                             and row["moaks_full_thickness_grade"] == t["moaks_full_thickness_grade"])
                    grades.append(entry["grades_equal"])
                    e2e.append(entry["ThCtAB_bias_e2e"])
                    same.append(entry["ThCtAB_bias_same_points"])
                    dab.append(entry["dAB_pct_diff"])
                out["regions"].append(entry)
        out["summary"][source] = {
            "regions": len(e2e), "max_abs_bias_e2e_mm": float(np.max(np.abs(e2e))),
            "mean_bias_e2e_mm": float(np.mean(e2e)), "max_abs_bias_same_points_mm": float(np.max(np.abs(same))),
            "mean_bias_same_points_mm": float(np.mean(same)), "max_abs_dAB_pp": float(np.max(np.abs(dab))),
            "grades_equal": f"{int(np.sum(grades))}/{len(grades)}"}
    for label, kwargs in (("femur, MOAKS", {"plates": ("femur",), "schemes": ("moaks",)}),
                          ("all plates, both schemes", {})):
        measure_knee(phantom.labels, **kwargs)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            measure_knee(phantom.labels, **kwargs)
            times.append(time.perf_counter() - start)
        out["timing"][label] = {"median_s": statistics.median(times), "times_s": times}
    out["meta"] = {"shape": shape, "spacing": acquisition.spacing, "pose": [pose.rotation_deg, pose.translation_mm]}
    return out


def print_regional(regional: dict) -> None:
    print("\nregional (MOAKS subregions, whole knee): ThCtAB.Me bias vs exact truth (mm), dAB% difference (pp)")
    print(f"{'source':<12} {'regions':>7} {'max|bias| e2e':>14} {'mean bias e2e':>14} {'max|bias| same pts':>19} "
          f"{'mean bias same pts':>19} {'max|dAB| pp':>11} {'grades equal':>12}")
    for source, s in regional["summary"].items():
        print(f"{source:<12} {s['regions']:>7d} {s['max_abs_bias_e2e_mm']:>14.3f} {s['mean_bias_e2e_mm']:>+14.3f} "
              f"{s['max_abs_bias_same_points_mm']:>19.3f} {s['mean_bias_same_points_mm']:>+19.3f} "
              f"{s['max_abs_dAB_pp']:>11.1f} {s['grades_equal']:>12}")
    print(f"\n{'measure_knee (thickness + subregions + MOAKS)':<48} {'median s':>9}")
    for label, t in regional["timing"].items():
        print(f"{label:<48} {t['median_s']:>9.2f}")


def peer_python() -> Path:
    """The peers' interpreter (a venv of its own: never the project's environment)."""
    return PEERS_VENV / "bin" / "python"


def peer_status() -> dict[str, str]:
    """'ok' per peer that imports in the peers' venv, else why not."""
    py = peer_python()
    status = {}
    for method, module in PEERS.items():
        if not py.exists():
            status[method] = "not installed (run with --setup-peers)"
            continue
        run = subprocess.run([str(py), "-c", f"import {module}"], capture_output=True, text=True)
        status[method] = "ok" if run.returncode == 0 else \
            f"not installed ({(run.stderr.strip().splitlines() or ['?'])[-1]})"
    return status


def versions(status: dict[str, str]) -> dict[str, str]:
    """Installed versions of koaimg and of each working peer's distributions."""
    from importlib.metadata import version

    out = {"koaimg": version("koaimg")}
    for method, packages in PEER_PACKAGES.items():
        if status.get(method) != "ok":
            continue
        code = f"import importlib.metadata as m; print(' '.join(m.version(p) for p in {packages!r}))"
        run = subprocess.run([str(peer_python()), "-c", code], capture_output=True, text=True)
        out.update(zip(packages, run.stdout.split(), strict=False))
    return out


def setup_peers() -> dict[str, str]:
    """Create pipelines/.venv-peers and pip-install the peers from PyPI; returns pip's verdict per peer."""
    if not peer_python().exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    verdict = {}
    for method, packages in PEER_PACKAGES.items():
        run = subprocess.run([str(peer_python()), "-m", "pip", "install", "-q", *packages], capture_output=True,
                             text=True)
        verdict[method] = "ok" if run.returncode == 0 else \
            f"pip install {' '.join(packages)} failed: " + (run.stderr.strip().splitlines() or ["?"])[-1]
        print(f"  {' '.join(packages)}: {verdict[method]}")
    return verdict


def _child(method: str, jobs: list[dict], path: Path) -> tuple[dict[str, dict], str | None]:
    path.write_text(json.dumps(jobs))
    python = sys.executable if method.startswith("koaimg") else str(peer_python())
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    run = subprocess.run([python, str(Path(__file__).resolve()), "--worker", method, "--jobs", str(path)],
                         capture_output=True, text=True, env=env)
    out = path.with_suffix(".out.json")
    done = {row["case"]: row for row in json.loads(out.read_text())} if out.exists() else {}
    error = None if run.returncode == 0 else (run.stderr.strip().splitlines() or ["?"])[-1]
    return done, error


def run_method(method: str, knee: Case, shells: list[Case], root: Path) -> dict[str, dict] | str:
    """Run one method in two children (the knee, warmed on a small shell first; then all shells)."""
    start = time.perf_counter()
    done, error = _child(method, [{"case": knee.name, "dir": str(knee.directory), "repeats": knee.repeats,
                                   "warm_dir": str(shells[0].directory)}], root / f"jobs_{method}_knee.json")
    more, error_shells = _child(method, [{"case": c.name, "dir": str(c.directory), "repeats": 1} for c in shells],
                                root / f"jobs_{method}_shells.json")
    done.update(more)
    errors = [e for e in (error, error_shells) if e]
    print(f"  {method}: {time.perf_counter() - start:.0f} s" + (f" ({'; '.join(errors)})" if errors else ""))
    if not done:
        return f"failed: {'; '.join(errors)}"
    return done


def score(case: Case, method: str) -> dict | None:
    """Errors at the method's own points against the exact truth, split by distance to a thickness step.

    Points further than 1 mm from the true bone surface are not bone-interface points (pymskt's mesh closes the
    bone where it leaves the grid; those caps are not measured anywhere) and are left out."""
    points_path = case.directory / f"{method}_points.npy"
    if not points_path.exists():
        return None
    points = np.load(points_path)
    thickness = np.load(case.directory / f"{method}_thickness.npy")
    truth, edge, distance = case.evaluate(points)
    on_bone = np.abs(distance) <= 1.0
    finite = np.isfinite(thickness)
    scored = on_bone & (truth >= MIN_TRUTH_MM) & finite
    covered = on_bone & (truth > 0) & finite & (edge >= STEP_MM)
    err = thickness - truth
    return {"err": err[scored], "near": (edge < STEP_MM)[scored], "err_covered": err[covered],
            "missing": int((on_bone & (truth >= MIN_TRUTH_MM) & ~finite).sum()), "n_points": len(points)}


def stats(err: np.ndarray) -> dict:
    if err.size == 0:
        return {"n": 0, "mae": None, "bias": None, "p95": None}
    return {"n": int(err.size), "mae": float(np.abs(err).mean()), "bias": float(err.mean()),
            "p95": float(np.percentile(np.abs(err), 95))}


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 256 x 256 x 128 knee and 24 small-range shells")
    parser.add_argument("--setup-peers", action="store_true", help="create pipelines/.venv-peers and install peers")
    parser.add_argument("--repeats", type=int, default=None, help="timed knee calls per method (default 5, quick 2)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--regional-only", action="store_true", help="only the whole-knee regional figures")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--jobs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, Path(args.jobs))
        return
    repeats = args.repeats or (2 if args.quick else 5)
    regional = regional_knee(args.quick, repeats)
    print_regional(regional)
    if args.regional_only:
        OUT.mkdir(exist_ok=True)
        (OUT / "bench_measure_regional.json").write_text(json.dumps(regional, indent=2, default=str))
        return
    methods = [m for m in args.methods.split(",") if m]
    install = setup_peers() if args.setup_peers else {}
    status = peer_status()
    for method, verdict in install.items():
        if verdict != "ok":
            status[method] = verdict
    root = Path(tempfile.mkdtemp(prefix="bench_measure_"))
    try:
        t0 = time.perf_counter()
        print("building phantoms ...")
        knee = knee_case(root, args.quick, repeats)
        shells = shell_cases(root, args.quick)
        print(f"  {len(shells)} shells + knee in {time.perf_counter() - t0:.0f} s; measuring ...")
        runs: dict[str, dict | str] = {}
        for method in methods:
            if method in PEERS and status.get(method) != "ok":
                runs[method] = status[method]
                print(f"  {method}: {status[method]}")
                continue
            runs[method] = run_method(method, knee, shells, root)
        summary = summarise(methods, runs, knee, shells)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    summary["environment"] = {"python": platform.python_version(), "machine": platform.machine(),
                              "cpus": os.cpu_count(), "quick": args.quick, "repeats": repeats,
                              "peers": status, "versions": versions(status), "knee": knee.meta}
    summary["regional"] = regional
    print_tables(summary)
    print_regional(regional)
    OUT.mkdir(exist_ok=True)
    name = "bench_measure_quick.json" if args.quick else "bench_measure.json"
    (OUT / name).write_text(json.dumps(summary, indent=2))
    print(f"\nwritten {OUT / name}")


def summarise(methods: list[str], runs: dict, knee: Case, shells: list[Case]) -> dict:
    rows, by_case = [], {}
    breakdown: dict[str, dict] = {"thickness": {}, "tilt": {}, "kind": {}}
    for method in methods:
        run = runs.get(method)
        if not isinstance(run, dict):
            for data in ("knee", "shells"):
                rows.append({"method": method, "data": data, "subset": "all", "note": str(run)})
            continue
        for label, cases in (("knee", [knee]), ("shells", shells)):
            scored = [(c, score(c, method)) for c in cases if c.name in run]
            scored = [(c, s) for c, s in scored if s is not None]
            if not scored:
                rows.append({"method": method, "data": label, "subset": "all", "note": "no result"})
                continue
            err = np.concatenate([s["err"] for _, s in scored])
            near = np.concatenate([s["near"] for _, s in scored])
            times = [t for c, _ in scored for t in run[c.name]["times_s"]] if label == "knee" else \
                [run[c.name]["times_s"][0] for c, _ in scored]
            # peak memory from the knee only: it is the first heavy call of a fresh child (after a shell warm-up);
            # later calls reuse memory the allocator kept, so their rise would understate
            peak = run[knee.name]["peak_mib"] if label == "knee" else None
            timing = {"time_s": statistics.median(times), "peak_mib": peak}
            missing = sum(s["missing"] for _, s in scored)
            for subset, sel in (("all", slice(None)), ("interior", ~near), ("near step", near)):
                rows.append({"method": method, "data": label, "subset": subset, **stats(err[sel]),
                             **(timing | {"missing": missing} if subset == "all" else {})})
            for c, s in scored:
                by_case.setdefault(c.name, {})[method] = {**stats(s["err"]), "interior": stats(s["err"][~s["near"]]),
                                                          "time_s": run[c.name]["times_s"][0],
                                                          "peak_mib": run[c.name]["peak_mib"], **c.meta}
            if label == "shells":
                for key in ("thickness", "tilt", "kind"):
                    meta_key = {"thickness": "thickness_mm", "tilt": "tilt_deg", "kind": "kind"}[key]
                    groups: dict = {}
                    for c, s in scored:
                        # the thickness curve keeps thin plates (< 1 mm) too: interior covered points
                        e = s["err_covered"] if key == "thickness" else s["err"][~s["near"]]
                        groups.setdefault(c.meta[meta_key], []).append(e)
                    breakdown[key].setdefault(method, {})
                    for value, parts in groups.items():
                        breakdown[key][method][str(value)] = stats(np.concatenate(parts))
    return {"rows": rows, "breakdown": breakdown, "cases": by_case,
            "definitions": {"scored": f"true thickness >= {MIN_TRUTH_MM} mm and a finite value",
                            "near step": f"< {STEP_MM} mm from a plate edge or defect wall along the bone",
                            "error": "measured - true (mm) at the method's own bone-surface point",
                            "time_s": "knee: median of repeats after a warm-up; shells: median over phantoms",
                            "peak_mib": "knee: rise of peak RSS during the first knee call of a child (warmed on "
                                        "a small shell) above its RSS just before the call",
                            "localthickness": "2 x inscribed-ball radius (Hildebrand diameter) on the cartilage "
                                              "mask resampled to isotropic in-plane voxels, read at bone voxels "
                                              "touching cartilage: a different quantity from bone-normal thickness",
                            "thickness breakdown": "interior points with any true thickness > 0 (thin plates kept)"}}


def print_tables(summary: dict) -> None:
    print(f"\n{'method':<16} {'data':<7} {'subset':<10} {'n points':>9} {'MAE mm':>7} {'bias mm':>8} "
          f"{'p95|err|':>8} {'time s':>7} {'peak MiB':>8} {'no value':>8}")
    for r in summary["rows"]:
        if "note" in r:
            print(f"{r['method']:<16} {r['data']:<7} {r['subset']:<10} {r['note']}")
            continue
        print(f"{r['method']:<16} {r['data']:<7} {r['subset']:<10} {r['n']:>9d} {_fmt(r['mae'], '.3f'):>7} "
              f"{_fmt(r['bias'], '+.3f'):>8} {_fmt(r['p95'], '.3f'):>8} {_fmt(r.get('time_s'), '.2f'):>7} "
              f"{_fmt(r.get('peak_mib'), '.0f'):>8} {_fmt(r.get('missing'), 'd'):>8}")
    for key, title in (("thickness", "shells, interior, by true thickness (mm)"), ("tilt", "shells, interior, by "
                       "tilt to the slice axis (deg)"), ("kind", "shells, interior, by shape")):
        table = summary["breakdown"][key]
        if not table:
            continue
        seen = list(dict.fromkeys(v for m in table.values() for v in m))
        values = seen if key == "kind" else sorted(seen, key=float)
        print(f"\n{title}: MAE / bias (mm)")
        print(f"{'method':<16} " + " ".join(f"{v:>13}" for v in values))
        for method, cells in table.items():
            print(f"{method:<16} " + " ".join(
                f"{_fmt(cells.get(v, {}).get('mae'), '.3f'):>6}/{_fmt(cells.get(v, {}).get('bias'), '+.3f'):>6}"
                for v in values))


if __name__ == "__main__":
    main()
