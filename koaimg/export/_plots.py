"""Report figures (matplotlib, Agg): segmentation overlays, thickness and change maps with colour bars, arm plots.

Every function returns PNG bytes, so reports embed them and DICOM Secondary Capture wraps them without temp files.
Slices are shown the way radiologists read them: sagittal with anterior on the left, coronal with the patient's
right on the left, superior up, at the true aspect ratio of the voxels.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np

from ..core import STRUCTURE_COLOURS, LabelVolume, Structure, Volume

_CARTILAGE = (Structure.FEMORAL_CARTILAGE, Structure.TIBIAL_CARTILAGE, Structure.PATELLAR_CARTILAGE)
_BONES = (Structure.FEMUR, Structure.TIBIA, Structure.PATELLA, Structure.FIBULA)
_DPI = 110


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, facecolor=fig.get_facecolor())
    _plt().close(fig)
    return buf.getvalue()


def _rgb(structure: Structure) -> tuple[float, float, float]:
    return tuple(c / 255.0 for c in STRUCTURE_COLOURS[structure])


def display_slice(array: np.ndarray, affine: np.ndarray, view: str, index: int) -> tuple[np.ndarray, float]:
    """A 2D slice in reading orientation and its display aspect (row spacing / column spacing).

    ``view`` is ``"sagittal"`` (normal ~ R-L; anterior left) or ``"coronal"`` (normal ~ A-P; patient's right
    left); superior is up in both.
    """
    direction = np.asarray(affine, float)[:3, :3]
    spacing = np.linalg.norm(direction, axis=0)
    world = {"sagittal": 0, "coronal": 1}[view]
    normal_axis = int(np.argmax(np.abs(direction[world])))
    rest = [a for a in range(3) if a != normal_axis]
    row_axis = max(rest, key=lambda a: abs(direction[2, a]))
    col_axis = rest[0] if rest[1] == row_axis else rest[1]
    plane = np.take(array, index, axis=normal_axis)
    # axes of `plane` keep the order of `rest`
    plane = plane if rest.index(row_axis) == 0 else plane.T
    if direction[2, row_axis] > 0:  # row 0 must be the most superior
        plane = plane[::-1]
    # sagittal columns run anterior -> posterior; coronal columns run patient's right -> left (RAS x decreasing)
    col_world = 1 if view == "sagittal" else 0
    if direction[col_world, col_axis] > 0:
        plane = plane[:, ::-1]
    return plane, float(spacing[row_axis] / spacing[col_axis])


def overlay_slices(labels: LabelVolume) -> dict[str, int]:
    """Slice indices through the femoral cartilage: sagittal with the most femoral cartilage (a condyle),
    coronal through the tibial cartilage centroid (weight-bearing zone) or else the femoral one."""
    arr = np.asarray(labels.array)
    direction = labels.affine[:3, :3]
    out = {}
    fem = arr == int(Structure.FEMORAL_CARTILAGE)
    if not fem.any():
        fem = arr > 0
    for view, world in (("sagittal", 0), ("coronal", 1)):
        axis = int(np.argmax(np.abs(direction[world])))
        other = tuple(a for a in range(3) if a != axis)
        if view == "sagittal":
            counts = fem.sum(axis=other)
            out[view] = int(np.argmax(counts))
        else:
            tib = arr == int(Structure.TIBIAL_CARTILAGE)
            ref = tib if tib.any() else fem
            counts = ref.sum(axis=other)
            out[view] = round(float(np.average(np.arange(len(counts)), weights=counts))) if counts.sum() else \
                arr.shape[axis] // 2
    return out


def _crop_box(mask2d: np.ndarray, margin: int = 12) -> tuple[slice, slice]:
    rows, cols = np.nonzero(mask2d)
    if rows.size == 0:
        return slice(None), slice(None)
    return (slice(max(rows.min() - margin, 0), rows.max() + margin + 1),
            slice(max(cols.min() - margin, 0), cols.max() + margin + 1))


def overlay_figure(labels: LabelVolume, image: Volume | None = None, *, title: str = "") -> bytes:
    """Sagittal and coronal slices through the femoral cartilage: image (when given) with cartilage filled and
    bone outlines, or the label map alone."""
    plt = _plt()
    from matplotlib.patches import Patch

    arr = np.asarray(labels.array)
    use_image = image is not None and tuple(image.shape[:3]) == tuple(arr.shape)
    indices = overlay_slices(labels)
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 5.0), facecolor="white", layout="constrained")
    present = []
    for ax, view in zip(axes, ("sagittal", "coronal"), strict=True):
        lab2d, aspect = display_slice(arr, labels.affine, view, indices[view])
        rows, cols = _crop_box(lab2d > 0)
        lab2d = lab2d[rows, cols]
        ax.set_facecolor("black")
        if use_image:
            img2d = display_slice(np.asarray(image.array, float)[..., 0] if image.array.ndim > 3
                                  else np.asarray(image.array, float), image.affine, view, indices[view])[0][rows, cols]
            lo, hi = np.percentile(img2d, [1, 99.5]) if img2d.size else (0, 1)
            ax.imshow(img2d, cmap="gray", vmin=lo, vmax=max(hi, lo + 1e-6), aspect=aspect, interpolation="bilinear")
        rgba = np.zeros((*lab2d.shape, 4))
        for s in _BONES + _CARTILAGE + (Structure.MENISCUS,):
            m = lab2d == int(s)
            if not m.any():
                continue
            present.append(s)
            is_cart = s in _CARTILAGE
            alpha = (0.65 if is_cart else 0.0) if use_image else (1.0 if is_cart else 0.55)
            rgba[m] = (*_rgb(s), alpha)
            if use_image or not is_cart:
                ax.contour(m.astype(float), levels=[0.5], colors=[_rgb(s)], linewidths=0.9 if is_cart else 0.7)
        ax.imshow(rgba, aspect=aspect, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        left, right = ("A", "P") if view == "sagittal" else ("R", "L")
        ax.set_title(f"{view} (slice {indices[view] + 1})", fontsize=10)
        for x, text in ((0.01, left), (0.99, right)):
            ax.text(x, 0.5, text, transform=ax.transAxes, color="white", fontsize=10, weight="bold",
                    ha="left" if x < 0.5 else "right", va="center")
        ax.text(0.5, 0.99, "S", transform=ax.transAxes, color="white", fontsize=10, weight="bold", ha="center",
                va="top")
    handles = [Patch(facecolor=_rgb(s), edgecolor="none", label=s.key.replace("_", " "))
               for s in dict.fromkeys(present)]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=9.5, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return _png(fig)


def map_figure(grid: np.ndarray, axes: Mapping | None = None, *, title: str = "", lo: float | None = None,
               hi: float | None = None, diverging: bool = False, label: str = "thickness (mm)") -> bytes:
    """Unrolled femoral map with a labelled colour bar; ``diverging`` for change (red thinning, blue thickening)."""
    plt = _plt()
    import matplotlib

    grid = np.asarray(grid, float)
    finite = grid[np.isfinite(grid)]
    if diverging:
        bound = hi if hi is not None else max(0.25, float(np.percentile(np.abs(finite), 98)) if finite.size else 1.0)
        lo, hi, cmap = -bound, bound, matplotlib.colormaps["RdBu"]
    else:
        lo = 0.0 if lo is None else lo
        hi = (max(1.0, float(np.percentile(finite, 99.5))) if finite.size else 4.0) if hi is None else hi
        cmap = matplotlib.colormaps["viridis"]
    cmap = cmap.with_extremes(bad="#d9d9d9")
    fig, ax = plt.subplots(figsize=(5.6, 5.2), facecolor="white", layout="constrained")
    extent = None
    if axes and {"x0_mm", "mm_per_px", "alpha_top_deg", "deg_per_px"} <= set(axes):
        x0, dx = float(axes["x0_mm"]), float(axes["mm_per_px"])
        a0, da = float(axes["alpha_top_deg"]), float(axes["deg_per_px"])
        extent = (x0, x0 + dx * grid.shape[1], a0 - da * grid.shape[0], a0)
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=lo, vmax=hi, extent=extent, aspect="auto",
                   interpolation="nearest")
    bar = fig.colorbar(im, ax=ax, shrink=0.85, extend="both" if diverging else "max")
    bar.set_label(label)
    if extent is not None:
        ax.set_xlabel("medial  ←  position (mm)  →  lateral")
        ax.set_ylabel("posterior  ←  sagittal angle (°)  →  trochlea")
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    return _png(fig)


def box_strip_figure(groups: Mapping[str, Sequence[float]], *, title: str = "", ylabel: str = "Δ (mm)") -> bytes:
    """Box plot with every knee as a point (deterministic jitter), one box per arm, and a zero line."""
    plt = _plt()
    names = [k for k, v in groups.items() if len(v)]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * max(len(names), 1), 3.8), facecolor="white", layout="constrained")
    data = [np.asarray(groups[k], float) for k in names]
    if names:
        ax.boxplot(data, positions=range(1, len(names) + 1), widths=0.55, showfliers=False,
                   medianprops={"color": "#b2182b", "linewidth": 1.6}, boxprops={"color": "#404040"},
                   whiskerprops={"color": "#404040"}, capprops={"color": "#404040"})
        rng = np.random.default_rng(0)
        for i, values in enumerate(data, start=1):
            ax.scatter(i + rng.uniform(-0.16, 0.16, len(values)), values, s=16, color="#2166ac", alpha=0.75,
                       zorder=3, edgecolors="none")
        ax.set_xticks(range(1, len(names) + 1), labels=names, rotation=15 if len(names) > 3 else 0)
    ax.axhline(0.0, color="#808080", linewidth=0.8, linestyle="--")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", color="#e6e6e6", linewidth=0.6)
    ax.set_axisbelow(True)
    if title:
        ax.set_title(title, fontsize=10)
    return _png(fig)


def moaks_grid_figure(grades: Mapping[str, tuple[int | None, int | None]], *, title: str = "MOAKS-style cartilage "
                      "grades (area.FT)") -> bytes:
    """The 14-subregion MOAKS grid as a picture (for the Secondary Capture; the HTML report uses a table)."""
    plt = _plt()
    from matplotlib.colors import ListedColormap

    layout = [("PM", "PL", None), ("FMT", "FLT", None), ("FMC", "FLC", None), ("FMP", "FLP", None),
              ("TMA", "TLA", None), ("TMC", "TLC", None), ("TMP", "TLP", None)]
    cmap = ListedColormap(GRADE_COLOURS)
    fig, ax = plt.subplots(figsize=(4.2, 4.6), facecolor="white", layout="constrained")
    for r, (medial, lateral, _) in enumerate(layout):
        for c, code in enumerate((medial, lateral)):
            any_g, ft_g = grades.get(code, (None, None))
            colour = cmap(int(any_g)) if any_g is not None else (0.9, 0.9, 0.9, 1)
            ax.add_patch(plt.Rectangle((c, -r - 1), 1, 1, facecolor=colour, edgecolor="white", linewidth=2))
            text = f"{code}\n{'–' if any_g is None else f'{any_g}.{ft_g}'}"
            ax.text(c + 0.5, -r - 0.5, text, ha="center", va="center", fontsize=9,
                    color="white" if (any_g or 0) >= 3 else "black")
    ax.set_xlim(0, 2)
    ax.set_ylim(-len(layout), 0)
    ax.set_xticks([0.5, 1.5], labels=["medial", "lateral"])
    ax.xaxis.tick_top()
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=10)
    return _png(fig)


#: grade 0..3 colours shared by the HTML grid and the picture
GRADE_COLOURS = ("#e8f5e9", "#fff3b0", "#fdae61", "#d7301f")
