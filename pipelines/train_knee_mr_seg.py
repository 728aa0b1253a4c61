"""Train the knee MR segmentation bundle by domain randomisation, on CPU, resumable across sessions.

    nice -n 15 nohup python pipelines/train_knee_mr_seg.py train --hours 2 > pipelines/out/knee_mr_seg/train.out 2>&1 &
    python pipelines/train_knee_mr_seg.py export      # best checkpoint -> models/knee_mr_seg (weights + sha256)
    python pipelines/train_knee_mr_seg.py check --roi 96 128 160   # whole-field validation Dice per window size
    python pipelines/train_knee_mr_seg.py average --checkpoints A.pt B.pt  # mean weights -> OUT/averaged.pt
    python pipelines/train_knee_mr_seg.py train --init OUT/averaged.pt ...  # from any checkpoint, fresh optimiser

The defaults are the recipe of releases 0.4.0 and 0.4.1 (lr 2e-4, decaying to 3e-5 with ``--anneal-steps``;
cartilage thickness variation on 30 % of the label-map patches); add ``--anneal-steps N --new-cycle`` to start a new
cosine cycle. ``--surface-weight`` (off by default) is the experiment that first made the predicted thickness follow
the true one, at the cost of a thin bias; release 0.4.2 is the ``average`` of 0.4.1 and a checkpoint trained with it
(bundle docs, *Training record* and *Evaluation*).

Every sample is a pure function of (seed, step), the phantom pool of (seed, index): a run resumed from
``OUT/last.pt`` continues exactly where it stopped. ``OUT`` is gitignored and does not survive a fresh checkout, so
without ``last.pt`` training starts from the shipped bundle's weights at its recorded step (a fresh optimizer; the
bundle is the checkpoint that travels between sessions); ``--fresh`` starts from random weights. Training sources
are MIT-licensed or procedural only (``pymskt_dess_labels`` and ``koaimg.synth`` phantoms); ``woo_oai_labels``
never enter this script. Two renderers: label maps drawn into random images by ``synthesize_from_labels``, and, with
``--rendered-fraction``, procedural knees imaged by the phantom's own acquisition simulator (protocol grids, sequence
contrasts, field-of-view edges) and normalised as inference normalises a whole volume.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.inferers import SlidingWindowInferer
from monai.losses import DiceCELoss

from koaimg.core import KneeSide, KoaimgError, LabelVolume
from koaimg.io import atomic_write_bytes, atomic_write_text, read_labels
from koaimg.measure import measure_knee
from koaimg.segment import load_bundle
from koaimg.segment._intensity import normalise_intensity
from koaimg.segment._training import (
    N_CLASSES,
    CheckpointMismatchError,
    LabelSource,
    RenderedSource,
    average_weights,
    mean_weights,
    network_arrays,
    phantom_labels,
    rendered_pair,
    rendered_phantom,
    surface_weighted_ce,
    training_pair,
)
from koaimg.synth import RandomisationSpec, synthesize_from_labels

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "models" / "knee_mr_seg"
OUT = REPO / "pipelines" / "out" / "knee_mr_seg"
REAL_MAP = (REPO.parent / "shared" / "realdata" / "pymskt_dess_labels"
            / "SAG_3D_DESS_RIGHT_bones_cart_men_fib-label.nrrd")
NAMES = ["femur", "femoral_cartilage", "tibia", "tibial_cartilage", "patella", "patellar_cartilage"]
VAL_SEED_OFFSET = 1_000_000  # validation phantoms come from a seed stream the training pool never uses


def bundle_part(name: str):
    """``network_def`` or ``inferer`` exactly as the bundle's inference.json defines it (training = inference)."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    return parser.get_parsed_content(name)


def build_network() -> torch.nn.Module:
    return bundle_part("network_def")


def bundle_settings() -> dict:
    return json.loads((BUNDLE / "configs" / "inference.json").read_text())


class Pool:
    """Procedural label maps cached on disk (a phantom costs seconds; a patch from it ~0.2 s)."""

    def __init__(self, out: Path, seed: int, offset: int = 0) -> None:
        self.dir = out / "pool"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.seed, self.offset = seed, offset
        self.items: list[LabelSource] = []

    def ensure(self, n: int) -> None:
        while len(self.items) < n:
            i = len(self.items) + self.offset
            path = self.dir / f"phantom_{i:04d}.npz"
            if path.exists():
                z = np.load(path)
                lab = LabelVolume(z["labels"], z["affine"])
            else:
                t = time.time()
                lab = phantom_labels(int(np.random.SeedSequence([self.seed, i]).generate_state(1)[0]))
                buf = io.BytesIO()
                np.savez_compressed(buf, labels=lab.array, affine=lab.affine)
                atomic_write_bytes(path, buf.getvalue())
                log({"event": "phantom", "index": i, "seconds": round(time.time() - t, 1)})
            self.items.append(LabelSource(lab, f"phantom_{i}"))


class RenderedPool:
    """Procedural knees imaged by the phantom's own acquisition simulator, cached on disk as working-grid arrays
    (a render costs ~10 s; a patch from it ~0.02 s). Seeds: SeedSequence([seed, 7, index]), never an evaluation's.
    Knees rendered with a cartilage-fluid gap are cached apart from those without."""

    def __init__(self, out: Path, seed: int, spacing_mm: float, cartilage_fluid_gap: float = 0.0) -> None:
        self.dir = out / ("rendered" if cartilage_fluid_gap == 0 else f"rendered_gap{cartilage_fluid_gap:g}")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.seed, self.spacing_mm, self.gap = seed, spacing_mm, cartilage_fluid_gap
        self.items: list[RenderedSource] = []

    def ensure(self, n: int) -> None:
        while len(self.items) < n:
            i = len(self.items)
            path = self.dir / f"render_{i:04d}.npz"
            if path.exists():
                z = np.load(path)
                src = RenderedSource(z["image"], z["labels"], str(z["name"]))
            else:
                t = time.time()
                src = rendered_phantom(int(np.random.SeedSequence([self.seed, 7, i]).generate_state(1)[0]),
                                       self.spacing_mm, cartilage_fluid_gap=self.gap)
                buf = io.BytesIO()
                np.savez(buf, image=src.image, labels=src.labels, name=src.name)
                atomic_write_bytes(path, buf.getvalue())
                log({"event": "rendered", "index": i, "name": src.name, "seconds": round(time.time() - t, 1)})
            self.items.append(src)


def log(record: dict) -> None:
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}
    line = json.dumps(record)
    print(line, flush=True)
    with open(OUT / "train_log.jsonl", "a") as fh:
        fh.write(line + "\n")


def pool_size(step: int, args: argparse.Namespace) -> int:
    return int(min(args.pool_max, args.pool_start + step // args.pool_every))


def rendered_size(step: int, start: int | None, args: argparse.Namespace) -> int:
    """Rendered knees in use at ``step``: the pool grows from the step the source was switched on (kept in last.pt)."""
    if args.rendered_fraction <= 0 or start is None:
        return 0
    return int(min(args.rendered_max, args.rendered_start + max(0, step - start) // args.rendered_every))


def draw_batch(step: int, args: argparse.Namespace, real: LabelSource, pool: Pool, rendered: RenderedPool,
               rendered_from: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng([args.seed, step])
    n = pool_size(step, args)
    pool.ensure(n)
    n_rendered = rendered_size(step, rendered_from, args)
    rendered.ensure(n_rendered)
    xs, ys = [], []
    for _ in range(args.batch):
        u = rng.random()  # one draw picks the source, so runs without rendered knees keep their sample stream
        if n_rendered and u >= 1.0 - args.rendered_fraction:
            img, lab = rendered_pair(rendered.items[int(rng.integers(n_rendered))], rng, patch=args.patch,
                                     spacing_mm=args.spacing, cartilage_focus=args.cartilage_focus,
                                     anywhere=args.anywhere)
        else:
            src = real if u < args.real_fraction else pool.items[int(rng.integers(n))]
            img, lab = training_pair(src, rng, patch=args.patch, spacing_mm=args.spacing,
                                     cartilage_focus=args.cartilage_focus, anywhere=args.anywhere,
                                     thickness_change=args.thickness_change,
                                     cartilage_fluid_gap=args.cartilage_fluid_gap,
                                     scale_jitter=args.scale_jitter)
        xs.append(img)
        ys.append(lab)
    return torch.from_numpy(np.stack(xs))[:, None], torch.from_numpy(np.stack(ys).astype(np.int64))[:, None]


def cached_items(path: Path, n: int, build) -> list[tuple[np.ndarray, np.ndarray]]:
    """``build()``'s (image, target) pairs, kept in ``path`` so every run validates on identical arrays."""
    if path.exists():
        z = np.load(path)
        return [(z[f"x{i}"], z[f"y{i}"]) for i in range(n)]
    items = build()
    buf = io.BytesIO()
    np.savez_compressed(buf, **{f"x{i}": x for i, (x, _) in enumerate(items)},
                        **{f"y{i}": y for i, (_, y) in enumerate(items)})
    atomic_write_bytes(path, buf.getvalue())
    return items


def validation_pool(args: argparse.Namespace) -> Pool:
    pool = Pool(OUT, args.seed, offset=VAL_SEED_OFFSET)
    pool.ensure(2)
    return pool


def validation_set(args: argparse.Namespace) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cartilage-centred patches of the two validation knees."""
    def build() -> list[tuple[np.ndarray, np.ndarray]]:
        pool, rng = validation_pool(args), np.random.default_rng([args.seed, VAL_SEED_OFFSET])
        return [training_pair(pool.items[i % 2], rng, patch=args.val_patch, spacing_mm=args.spacing,
                              cartilage_focus=0.9) for i in range(args.val_n)]

    return cached_items(OUT / f"val_{args.val_n}_{args.val_patch}.npz", args.val_n, build)


def field_validation_set(args: argparse.Namespace) -> list[tuple[np.ndarray, np.ndarray]]:
    """Whole fields of view of the two validation knees on the working grid (DESS-like and random contrast).

    The cartilage-centred patches cannot see what fails on real scans: air, far soft tissue and the field-of-view
    edge labelled as bone. These volumes are normalised as a whole, exactly as inference does."""
    def build() -> list[tuple[np.ndarray, np.ndarray]]:
        pool, items = validation_pool(args), []
        for i in range(args.val_fov_n):
            spec = RandomisationSpec(contrasts=(("dess", "random", "pdfs", "t1")[i % 4],),
                                     in_plane_mm=(args.spacing,) * 2, slice_mm=(args.spacing,) * 2, rotation_deg=10.0)
            img, lab = network_arrays(*synthesize_from_labels(
                pool.items[i % 2].labels, spec=spec, rng=np.random.default_rng([args.seed, VAL_SEED_OFFSET, 1, i])))
            items.append((normalise_intensity(img), lab))
        return items

    return cached_items(OUT / f"valfov_{args.val_fov_n}.npz", args.val_fov_n, build)


#: protocols of the rendered validation knees: the sequences the label-driven validation does not image
RENDERED_VAL = (("flash", "t1"), ("tse", "pdfs"), ("tse", "t1"), ("dess", "dess"))


def rendered_validation_set(args: argparse.Namespace) -> list[tuple[np.ndarray, np.ndarray]]:
    """Whole fields of view of procedural knees imaged by the phantom's own simulator (T1 FLASH, PD-FS TSE, ...):
    seeds SeedSequence([seed, 8, i]), apart from training's ([seed, 7, i]) and the evaluation's."""
    def build() -> list[tuple[np.ndarray, np.ndarray]]:
        items = []
        for i in range(args.val_rendered_n):
            acq, contrast = RENDERED_VAL[i % len(RENDERED_VAL)]
            src = rendered_phantom(int(np.random.SeedSequence([args.seed, 8, i]).generate_state(1)[0]), args.spacing,
                                   acquisition=acq, contrast=contrast)
            items.append((src.image.astype(np.float32), src.labels))
        return items

    return cached_items(OUT / f"valrend_{args.val_rendered_n}.npz", args.val_rendered_n, build)


def working_thccab(labels: np.ndarray, spacing_mm: float) -> float:
    """Femoral ThCcAB.Me (mm) of a working-grid label array, NaN when it cannot be measured.

    The whole-plate mean needs no knee side (a right knee is assumed for the subregion scheme it is computed with)."""
    volume = LabelVolume(labels, np.diag([spacing_mm] * 3 + [1.0]))
    volume = volume.with_array(labels, meta=volume.meta.replace(side=KneeSide.RIGHT))
    try:
        rows = measure_knee(volume, plates=("femur",), schemes=("moaks",)).rows()
    except KoaimgError:
        return float("nan")
    values = [r["value"] for r in rows if r["region"] == "all" and r["metric"] == "ThCcAB.Me"]
    return float(values[0]) if values else float("nan")


def thickness_summary(pairs: list[tuple[float, float]]) -> dict[str, float]:
    """Mean signed and mean absolute femoral ThCcAB error (mm) over (true, predicted) pairs: Dice cannot tell a
    plate one voxel too thick from a right one, this can."""
    errors = np.array([p - t for t, p in pairs], dtype=float)
    return {"mean_error_mm": round(float(np.nanmean(errors)), 4) if errors.size else float("nan"),
            "mean_abs_error_mm": round(float(np.nanmean(np.abs(errors))), 4) if errors.size else float("nan")}


@torch.inference_mode()
def validate(net: torch.nn.Module, items: list[tuple[np.ndarray, np.ndarray]], whole: bool = False,
             roi: int | None = None, thickness: list[tuple[float, float]] | None = None,
             spacing_mm: float = 0.6) -> dict[str, float]:
    """Dice per structure over ``items`` (pooled voxels); ``whole`` volumes run through the bundle's sliding window
    (or one with a ``roi``³ window, to compare window sizes). With ``thickness`` (whole volumes only), the true and
    predicted femoral ThCcAB of each volume are appended to it."""
    net.eval()
    inferer = bundle_part("inferer") if roi is None else SlidingWindowInferer(
        roi_size=(roi,) * 3, sw_batch_size=1, overlap=bundle_settings()["overlap"], mode="gaussian")
    inter = np.zeros(N_CLASSES)
    total = np.zeros(N_CLASSES)
    for x, y in items:
        t = torch.from_numpy(x)[None, None]
        pred = (inferer(t, net) if whole else net(t)).argmax(1)[0].numpy()
        if whole and thickness is not None:
            thickness.append((working_thccab(y, spacing_mm), working_thccab(pred.astype(np.uint8), spacing_mm)))
        for c in range(1, N_CLASSES):
            inter[c] += np.sum((pred == c) & (y == c))
            total[c] += np.sum(pred == c) + np.sum(y == c)
    net.train()
    return {name: float(2 * inter[c] / total[c]) if total[c] else float("nan") for c, name in enumerate(NAMES, 1)}


def selection_score(patches: dict[str, float], fields: dict[str, float] | None) -> float:
    """Checkpoint selection: mean Dice of the patches, averaged with that of the whole fields of view when present."""
    score = float(np.nanmean(list(patches.values())))
    return 0.5 * (score + float(np.nanmean(list(fields.values())))) if fields else score


def learning_rate(step: int, start: int, args: argparse.Namespace) -> float:
    """Constant ``--lr``, or a cosine decay to ``--lr-min`` over ``--anneal-steps`` from the step it began."""
    if args.anneal_steps <= 0:
        return args.lr
    t = min(1.0, max(0, step - start) / args.anneal_steps)
    return args.lr_min + 0.5 * (args.lr - args.lr_min) * (1.0 + np.cos(np.pi * t))


def init_from_bundle(net: torch.nn.Module, kind: str) -> tuple[int, float, float]:
    """Load the shipped weights (sha256-checked by ``load_bundle``) and the step, score and CPU time they record;
    the score counts only when it came from the same kind of validation."""
    bundle = load_bundle(BUNDLE)
    net.load_state_dict(bundle.network.state_dict())
    record = bundle.metadata["training"]
    score = selection_score(record["validation_dice_patches"], record.get("validation_dice_fields_of_view"))
    score = score if record.get("validation", "patches8x96") == kind else -1.0
    return int(record["steps"]), score, float(record["cpu_hours"]) * 3600


def save(path: Path, obj: dict) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def validation_kind(args: argparse.Namespace) -> str:
    """What a validation score means; a best score from another kind of validation is not compared with it."""
    return (f"patches{args.val_n}x{args.val_patch}" + (f"+fov{args.val_fov_n}" if args.val_fov_n else "")
            + (f"+rendered{args.val_rendered_n}" if args.val_rendered_n else ""))


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    OUT.mkdir(parents=True, exist_ok=True)
    net = build_network()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-5)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, smooth_nr=1e-4, smooth_dr=1e-4)
    step, best, seconds, kind, anneal_start, rendered_from = 0, -1.0, 0.0, validation_kind(args), None, None
    last = OUT / "last.pt"
    if args.init:
        # weights of another checkpoint (an average, a validated step), a fresh optimiser; the rendered pool keeps
        # growing from where the interrupted run had it (its knees are cached in OUT)
        ck = torch.load(args.init, map_location="cpu", weights_only=False)
        net.load_state_dict(ck["model"])
        step, seconds = int(ck["step"]), float(ck.get("train_seconds", 0.0))
        best = float(ck.get("val_mean", -1.0)) if ck.get("val_kind", "patches8x96") == kind else -1.0
        rendered_from = ck.get("rendered_from") or (
            torch.load(last, map_location="cpu", weights_only=False).get("rendered_from") if last.exists() else None)
        log({"event": "init_from_checkpoint", "checkpoint": str(args.init), "step": step, "best": best,
             "val_kind": kind, **({"averaged_from": ck["averaged_from"]} if ck.get("averaged_from") else {})})
    elif last.exists() and not args.fresh:
        ck = torch.load(last, map_location="cpu", weights_only=False)
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, best, seconds = ck["step"], ck["best"], ck.get("train_seconds", 0.0)
        anneal_start = ck.get("anneal_start")
        rendered_from = ck.get("rendered_from")
        if ck.get("val_kind", "patches8x96") != kind:
            best = -1.0  # scores of another validation set are not comparable
        log({"event": "resume", "step": step, "best": best, "val_kind": kind})
    elif not args.fresh:
        step, best, seconds = init_from_bundle(net, kind)
        log({"event": "init_from_bundle", "step": step, "best": best, "val_kind": kind})
    if args.anneal_steps > 0 and (anneal_start is None or args.new_cycle):
        anneal_start = step  # the cycle's start travels in last.pt, so a resumed run continues the same decay
    if args.rendered_fraction > 0 and rendered_from is None:
        rendered_from = step  # the rendered pool grows from here; travels in last.pt like the decay's start
    real = LabelSource(read_labels(REAL_MAP, preset="pymskt"), "pymskt_dess_labels")
    pool = Pool(OUT, args.seed)
    rendered = RenderedPool(OUT, args.seed, args.spacing, args.cartilage_fluid_gap)
    val = validation_set(args)
    val_fov = field_validation_set(args) if args.val_fov_n else []
    val_fov += rendered_validation_set(args) if args.val_rendered_n else []
    deadline = time.time() + args.hours * 3600

    def checkpoint(path: Path) -> None:
        save(path, {"model": net.state_dict(), "optimizer": opt.state_dict(), "step": step, "best": best,
                    "train_seconds": seconds, "args": vars(args), "val_kind": kind, "anneal_start": anneal_start,
                    "rendered_from": rendered_from})

    net.train()
    running = []
    while step < args.steps and time.time() < deadline and not (OUT / "STOP").exists():
        t0 = time.time()
        lr = learning_rate(step, anneal_start or 0, args)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = draw_batch(step, args, real, pool, rendered, rendered_from)
        t1 = time.time()
        opt.zero_grad(set_to_none=True)
        logits = net(x)
        loss = loss_fn(logits, y)
        if args.surface_weight > 0:
            loss = loss + args.surface_weight * surface_weighted_ce(logits, y, args.surface_side)
        loss.backward()
        opt.step()
        step += 1
        seconds += time.time() - t0
        running.append(loss.item())
        if step % args.log_every == 0:
            log({"step": step, "loss": round(float(np.mean(running)), 4), "lr": float(f"{lr:.3g}"),
                 "data_s": round(t1 - t0, 2), "step_s": round(time.time() - t0, 2), "pool": len(pool.items),
                 "rendered": len(rendered.items),
                 "train_hours": round(seconds / 3600, 3)})
            running = []
        if step % args.val_every == 0 or step >= args.steps:
            dice = validate(net, val)
            pairs: list[tuple[float, float]] = []
            fov = validate(net, val_fov, whole=True, thickness=pairs, spacing_mm=args.spacing) if val_fov else None
            score = selection_score(dice, fov)
            record = {"step": step, "val_dice": {k: round(v, 4) for k, v in dice.items()},
                      "val_patches": round(selection_score(dice, None), 4)}
            if fov:
                record["val_fov_dice"] = {k: round(v, 4) for k, v in fov.items()}
                record["val_fov"] = round(selection_score(fov, None), 4)
                record["val_fov_thccab"] = thickness_summary(pairs)
            improved = score > best
            log({**record, "val_mean": round(score, 4), "best": improved})
            snapshot = {"model": net.state_dict(), "step": step, "val_dice": dice, "val_mean": score,
                        "val_fov_dice": record.get("val_fov_dice"), "val_fov_thccab": record.get("val_fov_thccab"),
                        "val_kind": kind, "train_seconds": seconds,
                        "args": vars(args)}
            keep_validated(snapshot)
            if improved:
                best = score
                save(OUT / "best.pt", snapshot)
        if step % args.ckpt_every == 0:
            checkpoint(last)
    checkpoint(last)
    log({"event": "stopped", "step": step, "best": best})


def keep_validated(snapshot: dict, keep: int = 20) -> None:
    """Weights of every validated step (the latest ``keep``), so that a step other than the best by validation can
    be exported: the validation score does not measure thickness, the evaluation does."""
    folder = OUT / "validated"
    folder.mkdir(parents=True, exist_ok=True)
    save(folder / f"step_{snapshot['step']:06d}.pt", snapshot)
    for old in sorted(folder.glob("step_*.pt"))[:-keep]:
        old.unlink()


def export(args: argparse.Namespace) -> None:
    """Copy the best checkpoint (or ``--checkpoint``, a validated step) into the bundle as float16 weights and pin
    its sha256 in metadata.json."""
    ck = torch.load(args.checkpoint or OUT / "best.pt", map_location="cpu", weights_only=False)
    target = args.bundle_dir
    if target.resolve() != BUNDLE.resolve():  # e.g. a scratch copy for a quick evaluation of a running training
        shutil.copytree(BUNDLE, target, dirs_exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in ck["model"].items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    atomic_write_bytes(target / "models" / "model.pt", data)
    meta_path = target / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["model_sha256"] = hashlib.sha256(data).hexdigest()
    meta["training"] = {"steps": int(ck["step"]), "cpu_hours": round(ck["train_seconds"] / 3600, 2),
                        "validation_dice_patches": {k: round(v, 4) for k, v in ck["val_dice"].items()},
                        **({"validation_dice_fields_of_view": {k: round(v, 4) for k, v in ck["val_fov_dice"].items()}}
                           if ck.get("val_fov_dice") else {}),
                        "validation": ck.get("val_kind", "patches8x96"),
                        "device": "cpu", "seed": ck["args"]["seed"],
                        **({"averaged_from": ck["averaged_from"]} if ck.get("averaged_from") else {})}
    atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    print(f"exported to {target}: step {ck['step']} (val mean Dice {ck['val_mean']:.4f}), "
          f"sha256 {meta['model_sha256']}")


def average(args: argparse.Namespace) -> None:
    """Average the weights of several checkpoints (``--checkpoints``, optional ``--weights``) into ``OUT/averaged.pt``
    and validate it like a training step, so that ``export --checkpoint`` records honest figures.

    Why: the snapshots of one run sit in one basin (instance norm, no running statistics to recalibrate), and their
    mean is usually better than any one of them (stochastic weight averaging) at no training cost."""
    torch.set_num_threads(args.threads)
    if not args.checkpoints:
        raise SystemExit("average: give the checkpoints to average with --checkpoints A.pt B.pt ...")
    cks = [torch.load(p, map_location="cpu", weights_only=False) for p in args.checkpoints]
    try:
        state = average_weights([ck["model"] for ck in cks], args.weights)
    except CheckpointMismatchError as err:
        raise SystemExit(f"average: {err}") from None
    weights = mean_weights(len(cks), args.weights)
    net = build_network()
    net.load_state_dict(state)
    dice = validate(net, validation_set(args))
    items = (field_validation_set(args) if args.val_fov_n else []) + (
        rendered_validation_set(args) if args.val_rendered_n else [])
    pairs: list[tuple[float, float]] = []
    fov = validate(net, items, whole=True, thickness=pairs, spacing_mm=args.spacing) if items else None
    newest = max(cks, key=lambda ck: ck["step"])
    out = {"model": net.state_dict(), "step": int(newest["step"]), "val_dice": dice,
           "val_mean": selection_score(dice, fov), "val_fov_dice": fov, "val_fov_thccab": thickness_summary(pairs),
           "val_kind": validation_kind(args),
           "train_seconds": max(ck["train_seconds"] for ck in cks), "args": newest["args"],
           "averaged_from": [{"step": int(ck["step"]), "weight": round(float(w), 4),
                              **({"averaged_from": ck["averaged_from"]} if ck.get("averaged_from") else {})}
                             for w, ck in zip(weights, cks, strict=True)]}
    save(OUT / "averaged.pt", out)
    print(f"averaged {len(cks)} checkpoints (steps {[a['step'] for a in out['averaged_from']]}, weights "
          f"{[a['weight'] for a in out['averaged_from']]}) -> {OUT / 'averaged.pt'}: validation mean Dice "
          f"{out['val_mean']:.4f}; " + ", ".join(f"{k} {v:.3f}" for k, v in dice.items())
          + f"; whole-field ThCcAB error {out['val_fov_thccab']}")


def check(args: argparse.Namespace) -> None:
    """Whole-field validation Dice and femoral ThCcAB error of the shipped bundle (or ``--checkpoint``) for each
    ``--roi`` window size."""
    torch.set_num_threads(args.threads)
    net = build_network()
    if args.checkpoint:
        net.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=False)["model"])
        name = str(args.checkpoint)
    else:
        bundle = load_bundle(BUNDLE)
        net.load_state_dict(bundle.network.state_dict())
        name = f"bundle {bundle.version} (step {bundle.metadata['training']['steps']})"
    items = field_validation_set(args) + (rendered_validation_set(args) if args.val_rendered_n else [])
    print(f"{name}: whole-field validation ({len(items)} volumes), {args.threads} thread(s)")
    print("roi    seconds  mean   " + "  ".join(n[:8] for n in NAMES) + "  ThCcAB err / |err| (mm)")
    for roi in args.roi:
        t = time.time()
        pairs: list[tuple[float, float]] = []
        dice = validate(net, items, whole=True, roi=roi, thickness=pairs, spacing_mm=args.spacing)
        thick = thickness_summary(pairs)
        print(f"{roi:<6} {time.time() - t:7.1f}  {selection_score(dice, None):.3f}  "
              + "  ".join(f"{dice[n]:8.3f}" for n in NAMES)
              + f"  {thick['mean_error_mm']:+.3f} / {thick['mean_abs_error_mm']:.3f}")


def main() -> None:
    global OUT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["train", "export", "check", "average"],
                    help="train; export the best checkpoint; check: whole-field validation Dice per window size; "
                         "average: the weights of --checkpoints into OUT/averaged.pt")
    ap.add_argument("--seed", type=int, default=20261122)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--hours", type=float, default=2.0, help="stop after this wall-clock time (sessions end)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--patch", type=int, default=80)
    ap.add_argument("--spacing", type=float, default=bundle_settings()["working_spacing_mm"])
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("KOAIMG_TRAIN_THREADS", "1")))
    ap.add_argument("--real-fraction", type=float, default=0.35)
    ap.add_argument("--rendered-fraction", type=float, default=0.25,
                    help="share of patches from knees imaged by the phantom's own acquisition simulator")
    ap.add_argument("--rendered-start", type=int, default=4, help="rendered knees when the source is switched on")
    ap.add_argument("--rendered-every", type=int, default=100, help="steps per additional rendered knee")
    ap.add_argument("--rendered-max", type=int, default=40)
    ap.add_argument("--cartilage-focus", type=float, default=0.5,
                    help="share of patches centred on cartilage (the rest on any labelled voxel)")
    ap.add_argument("--anywhere", type=float, default=0.5,
                    help="share of patches centred anywhere in the label map (far background, field-of-view edge)")
    ap.add_argument("--thickness-change", type=float, default=0.3,
                    help="share of label-map patches whose cartilage is first made 0.3-0.8 mm thinner or thicker")
    ap.add_argument("--surface-weight", type=float, default=0.0,
                    help="weight of a cross-entropy term over the voxels each side of every cartilage boundary "
                         "(where thickness is decided; Dice hardly sees a one-voxel surface shift)")
    ap.add_argument("--surface-side", choices=["both", "articular"], default="both",
                    help="the surface loss's band: both boundaries of a plate, or only the articular one (against "
                         "fluid and soft tissue, where the models err), leaving the bone side to Dice + CE")
    ap.add_argument("--cartilage-fluid-gap", type=float, default=0.0,
                    help="least cartilage-fluid difference of class means, fraction of the brightest (0: independent);"
                         " equal means hide the articular surface and teach a thickness prior")
    ap.add_argument("--scale-jitter", type=float, default=0.1,
                    help="label-map patches are rendered at the working spacing times 1 +- this, per axis: the "
                         "network sees anatomy larger or smaller and cartilage of more thicknesses in voxels")
    ap.add_argument("--pool-start", type=int, default=6)
    ap.add_argument("--pool-every", type=int, default=100)
    ap.add_argument("--pool-max", type=int, default=90)
    ap.add_argument("--val-n", type=int, default=8)
    ap.add_argument("--val-patch", type=int, default=96)
    ap.add_argument("--val-fov-n", type=int, default=2,
                    help="whole-field-of-view validation volumes (0: cartilage-centred patches only)")
    ap.add_argument("--val-rendered-n", type=int, default=2,
                    help="whole fields of view of knees imaged by the phantom's simulator (T1 FLASH, PD-FS TSE, ...)")
    ap.add_argument("--val-every", type=int, default=150)
    ap.add_argument("--anneal-steps", type=int, default=0,
                    help="cosine decay of the learning rate to --lr-min over this many steps (0: constant --lr)")
    ap.add_argument("--lr-min", type=float, default=3e-5)
    ap.add_argument("--new-cycle", action="store_true", help="start a new cosine cycle at the resumed step")
    ap.add_argument("--ckpt-every", type=int, default=25)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--fresh", action="store_true", help="ignore OUT/last.pt")
    ap.add_argument("--init", type=Path, default=None,
                    help="train: start from this checkpoint's weights (e.g. OUT/averaged.pt) with a fresh optimiser, "
                         "instead of OUT/last.pt")
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="check: a checkpoint instead of the bundle; export: instead of OUT/best.pt "
                         "(e.g. OUT/validated/step_N.pt)")
    ap.add_argument("--checkpoints", type=Path, nargs="+", default=None, help="average: checkpoints to average")
    ap.add_argument("--weights", type=float, nargs="+", default=None, help="average: their weights (default equal)")
    ap.add_argument("--roi", type=int, nargs="+", default=[96], help="check: sliding-window sizes to compare")
    ap.add_argument("--out", type=Path, default=OUT, help="checkpoints, logs and the phantom pool (gitignored)")
    ap.add_argument("--bundle-dir", type=Path, default=BUNDLE, help="export target (default: the shipped bundle)")
    args = ap.parse_args()
    if not 0.0 <= args.real_fraction + args.rendered_fraction <= 1.0 or min(args.real_fraction,
                                                                              args.rendered_fraction) < 0:
        ap.error("--real-fraction and --rendered-fraction must be >= 0 and add up to at most 1")
    OUT = args.out
    OUT.mkdir(parents=True, exist_ok=True)
    {"train": train, "export": export, "check": check, "average": average}[args.command](args)


if __name__ == "__main__":
    main()
