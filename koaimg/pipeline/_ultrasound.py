"""Measure one ultrasound file (DICOM US or a PNG/JPEG screenshot) and write the per-scan outputs atomically.

out_dir receives ``measures.csv`` (tidy rows, modality US), ``ultrasound.json`` (per-site values, confidence,
interfaces' summary), ``overlay.png`` (the measured frame with the bone line, the superficial interface, the cartilage
band and the three measurement lines) and ``provenance.json`` (versions, inputs' sha256, calibration source, method,
frame index and the frame scores, speed-of-sound factor, model sha256).
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..core import KneeSide, KoaimgError, OptionError, UltrasoundImage
from ..export import MEASURE_COLUMNS, write_json, write_rows_csv
from ..io import FileKind, atomic_path, read_header, read_ultrasound_dicom, read_ultrasound_screenshot, sniff
from ..measure.ultrasound import (
    DEFAULT_METHOD,
    SITES,
    UltrasoundMeasurement,
    choose_frame,
    measure_ultrasound,
)

__all__ = ["load_ultrasound", "measure_ultrasound_file", "ultrasound_overlay"]

_SITE_COLOURS = {"LC": (0, 200, 255), "IN": (255, 0, 255), "MC": (0, 255, 140)}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_ultrasound(path: Path, *, pixel_spacing_mm: float | None = None
                    ) -> tuple[UltrasoundImage, str, KneeSide | None]:
    """Read a US file: (image, where its calibration came from, knee side from the DICOM header or None).

    A screenshot's spacing is ``pixel_spacing_mm`` or, failing that, the ``pixel_spacing_mm`` of a JSON sidecar
    ``<file>.json`` (what ``koaimg synth us`` writes); never a guess.
    """
    kind = sniff(path)
    if kind in (FileKind.PNG, FileKind.JPEG):
        source = "option --pixel-spacing"
        spacing: Any = pixel_spacing_mm
        sidecar = path.with_name(path.name + ".json")
        if spacing is None and sidecar.is_file():
            try:
                spacing = json.loads(sidecar.read_text())["pixel_spacing_mm"]
                source = f"sidecar {sidecar.name}"
            except (ValueError, KeyError, OSError):
                spacing = None
        return read_ultrasound_screenshot(path, pixel_spacing_mm=spacing), source, None
    image = read_ultrasound_dicom(path)
    if pixel_spacing_mm is not None:
        raise OptionError("--pixel-spacing is for screenshots only; a DICOM file is calibrated from its ultrasound "
                          "regions", path=path)
    side = None
    try:
        header = read_header(path)
        for value in (header.image_laterality, header.laterality):
            if value and KneeSide(value) in (KneeSide.RIGHT, KneeSide.LEFT):
                side = KneeSide(value)
                break
    except (KoaimgError, ValueError):
        side = None
    region = image.region
    source = f"DICOM ultrasound region {region.index}" if region is not None else "DICOM"
    return image, source, side


def ultrasound_overlay(pixels: np.ndarray, measurement: UltrasoundMeasurement, *, grey_max: float = 255.0,
                       side_source: str | None = None) -> np.ndarray:
    """(rows, cols, 3) uint8 picture: frame, tinted cartilage band, interfaces and the three caliper lines."""
    from PIL import Image, ImageDraw, ImageFont

    grey = np.clip(np.asarray(pixels, dtype=np.float64) / max(grey_max, 1e-6) * 255.0, 0, 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float64)
    mask = measurement.cartilage_mask()
    rgb[mask] = 0.6 * rgb[mask] + 0.4 * np.array([255.0, 200.0, 0.0])
    scale = 2 if max(grey.shape) < 700 else 1  # small frames are upsampled so labels stay legible
    img = Image.fromarray(rgb.astype(np.uint8)).resize((grey.shape[1] * scale, grey.shape[0] * scale),
                                                       Image.NEAREST)
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=max(12, img.size[0] // 60))
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        font = ImageFont.load_default()
    itf = measurement.interfaces

    def pt(r: float, c: float) -> tuple[float, float]:
        return ((c + 0.5) * scale - 0.5, (r + 0.5) * scale - 0.5)

    for rows, colour in ((itf.bone_row, (255, 60, 60)), (itf.surface_row, (255, 255, 80))):
        cols = np.flatnonzero(np.isfinite(rows))
        if cols.size > 1:
            breaks = np.flatnonzero(np.diff(cols) > 1) + 1
            for seg in np.split(cols, breaks):
                if seg.size > 1:
                    draw.line([pt(rows[c], c) for c in seg], fill=colour, width=1)
    for name in SITES:
        site = measurement.sites[name]
        colour = _SITE_COLOURS[name]
        if all(math.isfinite(v) for v in (*site.bone_px, *site.surface_px)):
            draw.line([pt(*site.bone_px), pt(*site.surface_px)], fill=colour, width=2 * scale)
        for end in site.window_px:
            x, y = pt(*end)
            draw.ellipse([x - 2 * scale, y - 2 * scale, x + 2 * scale, y + 2 * scale], outline=colour)
        label = f"{name} {site.thickness_mm:.2f} mm" + ("" if site.confidence == "high" else " (low)")
        x, y = pt(*site.surface_px) if math.isfinite(site.surface_px[0]) else pt(*site.bone_px)
        draw.text((x - 40, max(y - 6 * scale - getattr(font, "size", 11), 0)), label, fill=colour, font=font)
    sos = f"  SoS x{measurement.speed_of_sound_factor:g}" if measurement.speed_of_sound_factor != 1.0 else ""
    draw.text((4, 4), f"koaimg {measurement.method}, frame {measurement.frame_index}, {measurement.side.value} knee "
                      f"({side_source or measurement.side_source}){sos}; mean {measurement.mean_mm:.2f} mm",
              fill=(255, 255, 255), font=font)
    return np.asarray(img)


def _probability(image: UltrasoundImage, frame_index: int, bundle: str | Path | None, grey_max: float
                 ) -> tuple[np.ndarray, dict[str, Any]]:
    from ..segment.ultrasound import cartilage_probability, load_us_model

    model = load_us_model(bundle)
    pixels = image.frames[frame_index] if image.n_frames > 1 else image.frames[0]
    prob = cartilage_probability(model, pixels, image.spacing_mm, grey_max=grey_max)
    return prob, {"bundle": model.path.name, "version": model.version, "sha256": model.sha256}


def measure_ultrasound_file(path: str | Path, out_dir: str | Path, *, subject: str = "", visit: str = "",
                            pixel_spacing_mm: float | None = None, method: str = "auto",
                            speed_of_sound_factor: float = 1.0, side: str | None = None, frame: int | None = None,
                            trust_region_overflow: bool = False, cross_check: bool = True,
                            bundle: str | Path | None = None, window_half_mm: float = 2.5) -> Path:
    """``koaimg us-measure``: read, choose the frame, measure LC/IN/MC, write the four outputs; returns out_dir.

    ``cross_check`` runs the other method too (when the model bundle is available) and lowers a site's confidence
    where the two disagree by more than 0.3 mm. Errors are one-line ``KoaimgError``s naming the file.
    """
    path, out = Path(path), Path(out_dir)
    try:
        image, calibration, header_side = load_ultrasound(path, pixel_spacing_mm=pixel_spacing_mm)
        resolved = DEFAULT_METHOD if method == "auto" else method
        grey_max = float(image.meta.get("grey_max") or 255.0)
        if frame is not None:
            choice_scores: dict[int, float] = {}
            index = frame % image.n_frames if -image.n_frames <= frame < image.n_frames else frame
        else:
            if float(image.frames.max()) <= 0.01 * grey_max:
                index, choice_scores = 0, {}
            else:
                choice = choose_frame(image.frames, image.spacing_mm, grey_max=grey_max)
                index, choice_scores = choice.index, choice.scores
        prob, model_info, notes = None, None, []
        # the model runs only on a frame that measurement will accept; otherwise measurement refuses it below with
        # the real reason (suspect calibration, no such frame, all black)
        measurable = (not image.meta.get("calibration_warning") or trust_region_overflow) \
            and 0 <= index < image.n_frames and float(image.frames[index].max()) > 0.01 * grey_max
        if measurable and (resolved == "model" or cross_check):
            try:
                prob, model_info = _probability(image, index, bundle, grey_max)
            except KoaimgError as exc:
                if resolved == "model":
                    raise
                notes.append(f"model cross-check unavailable: {exc.one_line()}")
            except ImportError as exc:
                if resolved == "model":
                    raise OptionError(f"method 'model' needs torch and monai ({exc})") from None
                notes.append(f"model cross-check unavailable: {exc}")
        chosen_side = side if side is not None else header_side
        measurement = measure_ultrasound(image, method=method, speed_of_sound_factor=speed_of_sound_factor,
                                         probability=prob, side=chosen_side, window_half_mm=window_half_mm,
                                         frame=index, trust_region_overflow=trust_region_overflow)
    except KoaimgError as exc:
        if exc.path:
            raise
        raise type(exc)(exc.problem, path=path, hint=exc.hint) from None

    out.mkdir(parents=True, exist_ok=True)
    write_rows_csv(measurement.rows(subject=subject, visit=visit), out / "measures.csv", columns=MEASURE_COLUMNS)
    summary = measurement.to_dict()
    summary["frame_choice"]["scores"] = {str(k): round(v, 5) for k, v in choice_scores.items()}
    summary["frame_choice"]["method"] = "given" if frame is not None else summary["frame_choice"]["method"]
    side_source = "DICOM Laterality" if side is None and header_side is not None else measurement.side_source
    summary["side_source"] = side_source
    summary.update({"subject": subject, "visit": visit, "input": path.name, "source": image.source,
                    "calibration": calibration, "n_frames": image.n_frames,
                    "notes": [*summary["notes"], *notes]})
    write_json(summary, out / "ultrasound.json")
    pixels = image.frames[measurement.frame_index] if image.n_frames > 1 else image.frames[0]
    from PIL import Image

    with atomic_path(out / "overlay.png") as tmp:
        Image.fromarray(ultrasound_overlay(pixels, measurement, grey_max=grey_max, side_source=side_source)).save(
            tmp, format="PNG")
    write_json({"koaimg": __version__, "python": platform.python_version(), "subject": subject, "visit": visit,
                "inputs": {path.name: _sha256(path)},
                "config": {"method_requested": method, "method": measurement.method,
                           "speed_of_sound_factor": measurement.speed_of_sound_factor,
                           "assumed_speed_of_sound_m_s": 1540.0, "frame_index": measurement.frame_index,
                           "frame_selection": "given" if frame is not None else "best (bone-echo sharpness)",
                           "frame_scores": {str(k): round(v, 5) for k, v in choice_scores.items()},
                           "window_half_mm": window_half_mm, "spacing_mm": list(image.spacing_mm),
                           "calibration": calibration, "trust_region_overflow": trust_region_overflow,
                           "side": measurement.side.value, "side_source": side_source},
                "model": model_info}, out / "provenance.json")
    return out
