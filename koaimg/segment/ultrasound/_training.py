"""Training samples for the ultrasound cartilage model: synthetic phantoms, patches, augmentation, a resumable loop.

Targets are the phantoms' exact partial-volume cartilage fractions (not a thresholded mask), so the network learns
calibrated probabilities whose 0.5 level sits on the true interfaces to a fraction of a pixel. Every random draw comes
from ``numpy.random.default_rng((seed, step))``: a run resumed from a checkpoint sees exactly the samples it would
have seen uninterrupted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ._network import PATCH, build_network, normalise_frame

__all__ = ["TrainConfig", "TrainingSet", "augment", "make_training_set", "sample_batch", "train"]


@dataclass
class TrainingSet:
    """Phantom frames (uint8) and cartilage fractions (float16), with the cartilage pixel lists for patch centring."""

    images: list[np.ndarray]
    targets: list[np.ndarray]
    spacing_mm: list[float]

    def __post_init__(self) -> None:
        self.cartilage = [np.argwhere(t >= 0.5).astype(np.int32) for t in self.targets]

    def save(self, path: Path) -> None:
        """One compressed npz (regenerating 200 phantoms takes about a minute; reading this takes a second)."""
        arrays = {f"image_{i}": im for i, im in enumerate(self.images)}
        arrays.update({f"target_{i}": t for i, t in enumerate(self.targets)})
        np.savez_compressed(path, spacing=np.asarray(self.spacing_mm), **arrays)

    @classmethod
    def load(cls, path: Path) -> TrainingSet:
        """Read what :meth:`save` wrote."""
        with np.load(path) as data:
            n = len(data["spacing"])
            return cls([data[f"image_{i}"] for i in range(n)], [data[f"target_{i}"] for i in range(n)],
                       [float(s) for s in data["spacing"]])


def make_training_set(seeds: list[int] | range) -> TrainingSet:
    """One single-frame random phantom per seed (0.08-0.12 mm/px, 1-3.5 mm cartilage, random probe pose)."""
    from ...synth import make_us_phantom, random_us_spec

    images, targets, spacing = [], [], []
    for seed in seeds:
        rng = np.random.default_rng((int(seed), 7))
        spec = random_us_spec(int(seed), n_frames=1, probe_tilt_deg=float(rng.uniform(-6.0, 6.0)),
                              probe_shift_mm=(float(rng.uniform(-4.0, 4.0)), float(rng.uniform(-1.0, 1.0))))
        ph = make_us_phantom(spec, seed=int(seed) + 100_000)
        images.append(ph.frames[0])
        targets.append(ph.fractions[0].astype(np.float16))
        spacing.append(spec.mm_per_pixel)
    return TrainingSet(images, targets, spacing)


def augment(image: np.ndarray, target: np.ndarray, rng: np.random.Generator, realistic: float = 0.0
            ) -> tuple[np.ndarray, np.ndarray]:
    """Intensity and display variations a real scanner or screenshot shows and the phantom renderer does not.

    Gain and gamma (other presets), blur (other transducers, smoothing), noise, and black areas with no cartilage in
    the target (screenshot borders, a probe edge lifted off the skin), so the model says "nothing" on black. With
    probability ``realistic``: lifted blacks with coarse grain (real shadow and cartilage are speckled grey, the
    phantom's are near black) and smooth shading across the frame.
    """
    x = image * rng.uniform(0.6, 1.4)
    x = np.clip(x, 0.0, 1.0) ** math.exp(rng.uniform(math.log(0.6), math.log(1.7)))
    if rng.random() < realistic:  # real scanners: grey (not black) shadow and cartilage, coarse speckle, shading
        lift = rng.uniform(0.0, 0.3)
        grain = ndimage.gaussian_filter(rng.normal(0.0, 1.0, x.shape), rng.uniform(0.7, 1.5))
        x = lift * (1.0 + rng.uniform(0.3, 1.0) * grain / (grain.std() + 1e-6)).clip(0.0, None) + (1.0 - lift) * x
        field = ndimage.gaussian_filter(rng.normal(0.0, 1.0, (8, 8)), 1.5)
        field = ndimage.zoom(field / (field.std() + 1e-6), (x.shape[0] / 8, x.shape[1] / 8), order=1)
        x = x * np.exp(rng.uniform(0.0, 0.3) * field[: x.shape[0], : x.shape[1]])
    if rng.random() < 0.3:
        x = ndimage.gaussian_filter(x, (rng.uniform(0.0, 1.0), rng.uniform(0.0, 1.5)))
    if rng.random() < 0.5:
        x = x + rng.normal(0.0, rng.uniform(0.0, 0.04), x.shape)
    y = target.copy()
    if rng.random() < 0.25:  # black border on one side
        k = int(rng.integers(5, x.shape[0] // 3))
        side = int(rng.integers(4))
        sl = [(slice(0, k), slice(None)), (slice(-k, None), slice(None)), (slice(None), slice(0, k)),
              (slice(None), slice(-k, None))][side]
        x[sl] = 0.0
        y[sl] = 0.0
    if rng.random() < 0.15:  # lost contact: a dark column below the probe face
        c0 = int(rng.integers(0, x.shape[1] - 10))
        c1 = c0 + int(rng.integers(10, x.shape[1] // 2))
        x[:, c0:c1] *= rng.uniform(0.0, 0.1)
        y[:, c0:c1] = 0.0
    return np.clip(x, 0.0, 1.0).astype(np.float32), y.astype(np.float32)


def sample_batch(data: TrainingSet, rng: np.random.Generator, batch: int, patch: int = PATCH,
                 realistic: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, 1, patch, patch) image and target tensors; 70 % of patches are centred on cartilage."""
    xs, ys = [], []
    for _ in range(batch):
        i = int(rng.integers(len(data.images)))
        img, tgt = data.images[i], data.targets[i]
        rows, cols = img.shape
        if rng.random() < 0.7 and len(data.cartilage[i]):
            r, c = data.cartilage[i][int(rng.integers(len(data.cartilage[i])))]
            r += int(rng.integers(-patch // 3, patch // 3 + 1))
            c += int(rng.integers(-patch // 3, patch // 3 + 1))
        else:
            r, c = int(rng.integers(rows)), int(rng.integers(cols))
        r0 = int(np.clip(r - patch // 2, 0, rows - patch))
        c0 = int(np.clip(c - patch // 2, 0, cols - patch))
        x = normalise_frame(img[r0:r0 + patch, c0:c0 + patch])
        y = tgt[r0:r0 + patch, c0:c0 + patch].astype(np.float32)
        if rng.random() < 0.5:  # left knees are the mirror image of right knees
            x, y = x[:, ::-1], y[:, ::-1]
        x, y = augment(np.ascontiguousarray(x), np.ascontiguousarray(y), rng, realistic)
        xs.append(x)
        ys.append(y)
    return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys)[:, None])


@dataclass
class TrainConfig:
    """Time-boxed training: the learning rate follows a cosine over the time budget, not over a step count."""

    seed: int = 0
    batch: int = 8
    lr: float = 2e-3
    budget_s: float = 35 * 60.0
    checkpoint_every_s: float = 120.0
    log_every: int = 50
    realistic: float = 0.0


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE on soft targets (a proper score: calibrated probabilities) + soft Dice (cartilage is a thin band)."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(1, 2, 3))
    dice = 1.0 - (2.0 * inter + 1.0) / (p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1.0)
    return bce + 0.5 * dice.mean()


def train(data: TrainingSet, checkpoint: Path, config: TrainConfig, log: Callable[[str], None] = print,
          init: Path | None = None) -> torch.nn.Module:
    """Train (or resume from ``checkpoint``) until ``config.budget_s`` seconds of training time are spent.

    ``init`` starts a new run (fine-tuning stage) from another checkpoint's weights with a fresh optimiser.

    The checkpoint (model, optimiser, step, elapsed seconds, loss history) is rewritten atomically every
    ``checkpoint_every_s`` and at the end.
    """
    torch.manual_seed(config.seed)
    net = build_network()
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    step, elapsed, history = 0, 0.0, []
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, elapsed, history = int(state["step"]), float(state["elapsed_s"]), list(state["history"])
        log(f"resumed at step {step} ({elapsed:.0f} s of {config.budget_s:.0f} s)")
    elif init is not None:
        net.load_state_dict(torch.load(init, map_location="cpu", weights_only=False)["model"])
        log(f"initialised from {init.name}")

    def save() -> None:
        tmp = checkpoint.with_suffix(".tmp")
        torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "step": step, "elapsed_s": elapsed,
                    "history": history, "config": vars(config)}, tmp)
        tmp.replace(checkpoint)

    net.train()
    last_save = time.monotonic()
    running = 0.0
    while elapsed < config.budget_s:
        t0 = time.monotonic()
        lr = config.lr * 0.5 * (1.0 + math.cos(math.pi * min(elapsed / config.budget_s, 1.0)))
        for group in opt.param_groups:
            group["lr"] = max(lr, config.lr * 0.01)
        x, y = sample_batch(data, np.random.default_rng((config.seed, step)), config.batch,
                            realistic=config.realistic)
        loss = _loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        running += float(loss.detach())
        elapsed += time.monotonic() - t0
        if step % config.log_every == 0:
            history.append((step, elapsed, running / config.log_every))
            log(f"step {step:6d}  {elapsed:7.0f} s  lr {lr:.2e}  loss {running / config.log_every:.4f}")
            running = 0.0
        if time.monotonic() - last_save > config.checkpoint_every_s:
            save()
            last_save = time.monotonic()
    save()
    net.eval()
    return net
