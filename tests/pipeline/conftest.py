"""Fixtures for the batch engine: one reduced-size phantom subject (MR + US, two visits, DICOM, true label maps),
made once and cached between test sessions, copied into small trial-like exports."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: bump when the phantom recipe changes so the cache is rebuilt
PHANTOM_VERSION = "batch-phantom-v1"


def _make_phantom(out: Path) -> None:
    from koaimg.synth._cohort import Arm, make_subject, plan_cohort

    plan = plan_cohort((Arm("two_dose_admsc", 1, 0.25, 0.05, 0.1, 0.02),), seed=3)[0]
    make_subject(plan, out, mr_scale=5.0, truth_formats=("labels",), us_frames=1)


@pytest.fixture(scope="session")
def phantom_subject(request, tmp_path_factory) -> Path:
    """Folder with ``KOA-001/<visit>/{MR,US}`` DICOM and ``ground_truth/KOA-001/<visit>/MR/labels.nii.gz``.

    Kept in pytest's cache between sessions when the cache plugin is on; CI runs with ``-p no:cacheprovider``, and
    then it is built once per session in a temporary folder."""
    provider = getattr(request.config, "cache", None)
    cache = (Path(provider.mkdir(PHANTOM_VERSION)) if provider is not None
             else tmp_path_factory.mktemp(PHANTOM_VERSION))
    ready = cache / "ready"
    if not ready.exists():
        work = cache / "work"
        shutil.rmtree(work, ignore_errors=True)
        _make_phantom(work)
        for name in ("KOA-001", "ground_truth"):
            shutil.rmtree(cache / name, ignore_errors=True)
            os.replace(work / name, cache / name)
        ready.write_text("ok")
    return cache


def make_trial(root: Path, phantom: Path, subjects: tuple[str, ...] = ("KOA-001", "KOA-002"), *,
               with_us: bool = True) -> Path:
    """A trial export: one copy of the phantom subject per name, true labels, and an allocation table."""
    root.mkdir(parents=True, exist_ok=True)
    for name in subjects:
        shutil.copytree(phantom / "KOA-001", root / name,
                        ignore=None if with_us else lambda d, names: [n for n in names if n == "US"])
        shutil.copytree(phantom / "ground_truth" / "KOA-001", root / "ground_truth" / name)
    with (root / "allocation.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["subject", "arm"])
        for n, name in enumerate(subjects):
            writer.writerow([name, ("two_dose_admsc", "hyaluronic_acid")[n % 2]])
    return root


@pytest.fixture
def trial(tmp_path, phantom_subject) -> Path:
    """Two subjects (the same knee under two pseudonyms), baseline + month6, MR + US."""
    return make_trial(tmp_path / "export", phantom_subject)


@pytest.fixture
def mr_trial(tmp_path, phantom_subject) -> Path:
    """As ``trial`` without the ultrasound (keeps the engine tests fast: US measurement is tested on its own)."""
    return make_trial(tmp_path / "export", phantom_subject, with_us=False)


def output_hashes(out: Path) -> dict[str, str]:
    """Content hash of every output file except the manifest (which holds timings)."""
    result = {}
    for path in sorted(out.rglob("*")):
        if path.is_file() and not path.name.startswith("koaimg_manifest.sqlite"):
            result[str(path.relative_to(out))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


def leftovers(out: Path) -> list[str]:
    """Staging folders, folders moved aside and temporary files: none may survive a finished run."""
    return [str(p.relative_to(out)) for p in out.rglob(".*") if not p.name.startswith(".koaimg")]


def koaimg_cli(*args: str, env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """Run the koaimg CLI in a fresh process (for kill -9 tests), plain log lines."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-c", "from koaimg.cli import main; main()", *args],
                          env=full_env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode not in (0, 1):
        raise AssertionError(f"koaimg {' '.join(args)} -> {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


class _Tools:
    """Helpers for the tests of this folder (test modules here are not a package, so they take them as a fixture)."""

    output_hashes = staticmethod(output_hashes)
    leftovers = staticmethod(leftovers)
    koaimg_cli = staticmethod(koaimg_cli)
    make_trial = staticmethod(make_trial)


@pytest.fixture(scope="session")
def tools() -> type[_Tools]:
    """``output_hashes``, ``leftovers``, ``koaimg_cli``, ``make_trial``."""
    return _Tools
