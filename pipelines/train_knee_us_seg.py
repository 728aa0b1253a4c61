"""Train the ultrasound femoral-cartilage bundle (models/knee_us_seg) on synthetic phantoms, on one CPU thread.

    nice -n 15 python pipelines/train_knee_us_seg.py train --budget-min 38     # resumable: run again to continue
    nice -n 15 python pipelines/train_knee_us_seg.py train --stage finetune --init checkpoint --budget-min 15 \
        --lr 5e-4 --realistic 0.6                                                # stage 2: real-scanner look
    python pipelines/train_knee_us_seg.py validate                               # Dice on held-out phantoms
    python pipelines/train_knee_us_seg.py export --stage finetune                # weights -> bundle, sha256 pinned

Work files (training set cache, checkpoint, log) go to pipelines/out/knee_us_seg/ (gitignored); only the exported
weights (< 1 MB) are committed. Training phantoms use seeds 1000-1199; evaluation (pipelines/eval_us.py) uses 0-99
and 5000+, so the model is never scored on an image it was trained on.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from koaimg.segment.ultrasound._network import build_network, normalise_frame  # noqa: E402
from koaimg.segment.ultrasound._training import TrainConfig, TrainingSet, make_training_set, train  # noqa: E402

WORK = REPO / "pipelines" / "out" / "knee_us_seg"
BUNDLE = REPO / "models" / "knee_us_seg"
TRAIN_SEEDS = range(1000, 1200)
VALID_SEEDS = range(9000, 9012)


def _log(msg: str) -> None:
    line = f"{time.strftime('%H:%M:%S')} {msg}"
    print(line, flush=True)
    with (WORK / "train.log").open("a") as fh:
        fh.write(line + "\n")


def _training_set() -> TrainingSet:
    cache = WORK / "train_set.npz"
    if cache.is_file():
        return TrainingSet.load(cache)
    t0 = time.monotonic()
    data = make_training_set(TRAIN_SEEDS)
    data.save(cache)
    _log(f"made {len(TRAIN_SEEDS)} training phantoms in {time.monotonic() - t0:.0f} s")
    return data


def _dice(net: torch.nn.Module) -> list[float]:
    from koaimg.synth import make_us_phantom, random_us_spec

    out = []
    for seed in VALID_SEEDS:
        ph = make_us_phantom(random_us_spec(seed, n_frames=1), seed=seed)
        x = normalise_frame(ph.frames[0])
        rows, cols = x.shape
        xp = np.pad(x, ((0, (-rows) % 16), (0, (-cols) % 16)), mode="edge")
        with torch.inference_mode():
            p = torch.sigmoid(net(torch.from_numpy(xp)[None, None]))[0, 0, :rows, :cols].numpy()
        pred, true = p >= 0.5, ph.masks[0]
        out.append(float(2 * (pred & true).sum() / max(pred.sum() + true.sum(), 1)))
    return out


def cmd_train(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    WORK.mkdir(parents=True, exist_ok=True)
    data = _training_set()
    cfg = TrainConfig(seed=args.seed, budget_s=args.budget_min * 60.0, batch=args.batch, lr=args.lr,
                      realistic=args.realistic)
    init = WORK / f"{args.init}.pt" if args.init else None
    net = train(data, WORK / f"{args.stage}.pt", cfg, log=_log, init=init)
    dice = _dice(net)
    _log(f"validation Dice on {len(dice)} held-out phantoms: mean {np.mean(dice):.3f}, min {np.min(dice):.3f}")


def cmd_validate(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    net = build_network()
    net.load_state_dict(torch.load(WORK / f"{args.stage}.pt", map_location="cpu", weights_only=False)["model"])
    net.eval()
    dice = _dice(net)
    print(f"Dice per held-out phantom: {np.round(dice, 3).tolist()}; mean {np.mean(dice):.3f}")


def cmd_export(args: argparse.Namespace) -> None:
    state = torch.load(WORK / f"{args.stage}.pt", map_location="cpu", weights_only=False)
    buf = io.BytesIO()
    torch.save({k: v.clone() for k, v in state["model"].items()}, buf)
    data = buf.getvalue()
    (BUNDLE / "models").mkdir(parents=True, exist_ok=True)
    (BUNDLE / "models" / "model.pt").write_bytes(data)
    meta_path = BUNDLE / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["model_sha256"] = hashlib.sha256(data).hexdigest()
    meta["training"] = {"steps": int(state["step"]), "training_seconds": round(float(state["elapsed_s"])),
                        "final_loss": round(float(state["history"][-1][2]), 5) if state["history"] else None,
                        "train_seeds": [TRAIN_SEEDS.start, TRAIN_SEEDS.stop - 1], "stage": args.stage,
                        **state["config"]}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    np.savetxt(BUNDLE / "docs" / f"loss_history_{args.stage}.csv", np.asarray(state["history"]), delimiter=",",
               header="step,training_seconds,mean_loss", fmt=["%d", "%.1f", "%.5f"], comments="")
    print(f"exported {len(data)} bytes, sha256 {meta['model_sha256']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("train")
    p.add_argument("--budget-min", type=float, default=35.0, help="training minutes in total (resumes count)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--realistic", type=float, default=0.0, help="probability of the real-scanner look augmentation")
    p.add_argument("--stage", default="checkpoint", help="checkpoint name in pipelines/out/knee_us_seg/")
    p.add_argument("--init", default=None, help="start from this stage's weights (fine-tuning)")
    p.set_defaults(func=cmd_train)
    for name, func in (("validate", cmd_validate), ("export", cmd_export)):
        q = sub.add_parser(name)
        q.add_argument("--stage", default="checkpoint")
        q.set_defaults(func=func)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
