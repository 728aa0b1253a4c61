"""Accuracy of ultrasound cartilage thickness on phantoms with exact truth: classical tracker vs the 2D model.

    nice -n 10 python pipelines/eval_us.py --n 40 --pairs 20        # ~5 min on one CPU thread
    python pipelines/eval_us.py --n 4 --pairs 2 --out /tmp/eval      # smoke run

Per site (LC, IN, MC): mean absolute error, bias and worst error of the window-mean thickness against the truth
(``USSiteTruth.mean_thickness_mm``) on random phantoms (0.08-0.12 mm/px, 1-3.5 mm, speckle; seeds 0..n-1, never used
for training), and the error of the baseline -> follow-up change Δ on repositioned pairs with known per-site Δ
(seeds 5000+). Both methods see the same frames; the real Clarius screenshot adds Dice against its provided
(model-predicted) mask and the site values. Writes eval_us.json, three figures and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from koaimg.core import KoaimgError  # noqa: E402
from koaimg.measure.ultrasound import SITES, measure_ultrasound  # noqa: E402
from koaimg.synth import follow_up_spec, make_us_phantom, random_us_spec  # noqa: E402

REAL = REPO.parent / "shared" / "realdata" / "kimbowa_knee_us"


def _measure(img, side, model, method):
    from koaimg.segment.ultrasound import cartilage_probability

    prob = None
    if method == "model":
        prob = cartilage_probability(model, img.frames[0], img.spacing_mm)
    try:
        m = measure_ultrasound(img, method=method, probability=prob, side=side)
    except KoaimgError as exc:
        return None, exc.one_line()
    return m, None


def evaluate(n: int, pairs: int, model) -> dict:
    methods = ("tracker", "model")
    res: dict = {m: {"err": {s: [] for s in SITES}, "derr": {s: [] for s in SITES}, "failures": [],
                     "true": [], "meas": [], "seconds": 0.0} for m in methods}
    for seed in range(n):
        ph = make_us_phantom(random_us_spec(seed, n_frames=1), seed=seed)
        img = ph.to_ultrasound_image()
        for method in methods:
            t0 = time.perf_counter()
            m, why = _measure(img, ph.spec.side, model, method)
            res[method]["seconds"] += time.perf_counter() - t0
            if m is None:
                res[method]["failures"].append(f"seed {seed}: {why}")
                continue
            for s in SITES:
                true = ph.truth.sites[s].mean_thickness_mm
                res[method]["err"][s].append(m.sites[s].thickness_mm - true)
                res[method]["true"].append(true)
                res[method]["meas"].append(m.sites[s].thickness_mm)
    for k in range(pairs):
        seed = 5000 + k
        rng = np.random.default_rng(seed)
        spec = random_us_spec(seed, n_frames=1)
        delta = {s: float(rng.uniform(-0.3, 0.4)) for s in SITES}
        delta = {s: max(d, 0.3 - t) for (s, d), t in zip(delta.items(), spec.thickness_mm, strict=True)}
        base = make_us_phantom(spec, seed=seed)
        try:
            follow = make_us_phantom(follow_up_spec(spec, delta, seed=seed + 1), seed=seed + 7)
        except KoaimgError as exc:  # the thicker cartilage does not fit this groove: not a measurement failure
            res["tracker"]["failures"].append(f"pair {seed} not built: {exc.one_line()}")
            continue
        for method in methods:
            mb, _ = _measure(base.to_ultrasound_image(), spec.side, model, method)
            mf, _ = _measure(follow.to_ultrasound_image(), spec.side, model, method)
            if mb is None or mf is None:
                res[method]["failures"].append(f"pair {seed}")
                continue
            for s in SITES:
                true = follow.truth.sites[s].mean_thickness_mm - base.truth.sites[s].mean_thickness_mm
                res[method]["derr"][s].append(mf.sites[s].thickness_mm - mb.sites[s].thickness_mm - true)
    return res


def _summary(res: dict) -> dict:
    out = {}
    for method, r in res.items():
        rows = {}
        for s in SITES:
            e, d = np.asarray(r["err"][s]), np.asarray(r["derr"][s])
            rows[s] = {"n": int(e.size), "mae_mm": float(np.mean(np.abs(e))) if e.size else None,
                       "bias_mm": float(np.mean(e)) if e.size else None,
                       "max_abs_mm": float(np.max(np.abs(e))) if e.size else None,
                       "delta_n": int(d.size), "delta_mae_mm": float(np.mean(np.abs(d))) if d.size else None,
                       "delta_max_abs_mm": float(np.max(np.abs(d))) if d.size else None}
        all_e = np.concatenate([np.asarray(r["err"][s]) for s in SITES])
        all_d = np.concatenate([np.asarray(r["derr"][s]) for s in SITES])
        out[method] = {"sites": rows, "mae_mm": float(np.mean(np.abs(all_e))) if all_e.size else None,
                       "delta_mae_mm": float(np.mean(np.abs(all_d))) if all_d.size else None,
                       "delta_within_0.05_pct": float(100 * np.mean(np.abs(all_d) <= 0.05)) if all_d.size else None,
                       "failures": r["failures"], "seconds_per_frame": r["seconds"] / max(len(r["true"]) / 3, 1)}
    return out


def real_image(model) -> dict:
    from PIL import Image

    from koaimg.io import read_ultrasound_screenshot
    from koaimg.segment.ultrasound import cartilage_probability

    path = REAL / "clarius.png"
    if not path.is_file():
        return {"skipped": f"{path} not found"}
    img = read_ultrasound_screenshot(path, pixel_spacing_mm=0.0852)
    with Image.open(REAL / "clarius_pred.png") as im:
        ref = np.asarray(im.resize(img.shape[::-1], Image.NEAREST)) > 127
    out = {}
    prob = cartilage_probability(model, img.frames[0], img.spacing_mm)
    for method in ("tracker", "model"):
        try:
            m = measure_ultrasound(img, method=method, probability=prob)
        except KoaimgError as exc:
            out[method] = {"refused": exc.one_line()}
            continue
        mask = m.cartilage_mask()
        out[method] = {"dice_vs_provided_mask": float(2 * (mask & ref).sum() / (mask.sum() + ref.sum())),
                       "sites_mm": {s: round(m.sites[s].thickness_mm, 3) for s in SITES},
                       "confidence": {s: m.sites[s].confidence for s in SITES}}
    return out


def figures(res: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharey=True)
    for ax, method in zip(axes, ("tracker", "model"), strict=True):
        r = res[method]
        ax.plot([0.8, 3.7], [0.8, 3.7], color="0.6", lw=1)
        ax.scatter(r["true"], r["meas"], s=9)
        mae = np.mean(np.abs(np.asarray(r["meas"]) - np.asarray(r["true"]))) if r["true"] else float("nan")
        ax.set(title=f"{method}: MAE {mae:.3f} mm", xlabel="true window-mean thickness (mm)")
    axes[0].set_ylabel("measured (mm)")
    fig.tight_layout()
    fig.savefig(out / "eval_us_scatter.png", dpi=90)
    names.append("eval_us_scatter.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.8))
    data, labels = [], []
    for method in ("tracker", "model"):
        for s in SITES:
            data += [res[method]["err"][s], res[method]["derr"][s]]
            labels += [f"{method[:5]}\n{s}", f"{method[:5]}\n{s} Δ"]
    ax.boxplot(data, tick_labels=labels, showfliers=True)
    ax.axhline(0, color="0.6", lw=1)
    for lim, style in ((0.1, ":"), (0.05, "--")):
        ax.axhline(lim, color="r", ls=style, lw=0.8)
        ax.axhline(-lim, color="r", ls=style, lw=0.8)
    ax.set(ylabel="error (mm)", title="site thickness and Δ errors (dotted ±0.10, dashed ±0.05 mm)")
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(out / "eval_us_errors.png", dpi=90)
    names.append("eval_us_errors.png")
    plt.close(fig)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=40, help="single-frame phantoms (seeds 0..n-1)")
    parser.add_argument("--pairs", type=int, default=20, help="baseline/follow-up pairs (seeds 5000+)")
    parser.add_argument("--out", type=Path, default=REPO / "pipelines" / "out" / "eval_us")
    parser.add_argument("--bundle", type=Path, default=None)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from koaimg.segment.ultrasound import load_us_model

    model = load_us_model(args.bundle)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res = evaluate(args.n, args.pairs, model)
    summary = {"n_phantoms": args.n, "n_pairs": args.pairs, "model_sha256": model.sha256,
               "methods": _summary(res), "real_clarius": real_image(model),
               "figures": figures(res, args.out), "seconds": round(time.perf_counter() - t0)}
    (args.out / "eval_us.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{'method':8s} {'site':4s} {'n':>3s} {'MAE':>6s} {'bias':>7s} {'max':>6s} {'ΔMAE':>6s} {'Δmax':>6s}")
    for method, m in summary["methods"].items():
        for s, r in m["sites"].items():
            print(f"{method:8s} {s:4s} {r['n']:3d} {r['mae_mm']:6.3f} {r['bias_mm']:+7.3f} {r['max_abs_mm']:6.3f} "
                  f"{r['delta_mae_mm']:6.3f} {r['delta_max_abs_mm']:6.3f}")
        print(f"{method:8s} all  MAE {m['mae_mm']:.3f} mm, Δ MAE {m['delta_mae_mm']:.3f} mm, "
              f"{m['delta_within_0.05_pct']:.0f} % of Δ within 0.05 mm, {len(m['failures'])} failure(s), "
              f"{m['seconds_per_frame']:.2f} s/frame")
    print("real clarius.png:", json.dumps(summary["real_clarius"]))
    print(f"wrote {args.out / 'eval_us.json'} in {summary['seconds']} s")


if __name__ == "__main__":
    main()
