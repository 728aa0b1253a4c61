"""Domain-randomised synthesis from label maps: geometry contract, determinism, volume preservation, randomised yet
consistent contrast, mirroring (knee side), anisotropic resampling, patches. Timings are printed, never asserted."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from koaimg.core import (
    GeometryError,
    KneeSide,
    LabelSchemaError,
    LabelVolume,
    Modality,
    Structure,
    Volume,
    VolumeMeta,
    side_from_anatomy,
)
from koaimg.io import read_labels
from koaimg.synth._from_labels import (
    _AIR,
    _CONTEXT0,
    _CORTEX,
    _FLUID,
    RandomisationSpec,
    SynthesisSpecError,
    _class_means,
    synthesize_from_labels,
)
from koaimg.synth._tissues import Tissue, keep_apart

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"
DESS_LABELS = REALDATA / "pymskt_dess_labels" / "SAG_3D_DESS_RIGHT_bones_cart_men_fib-label.nrrd"
SCHEMA = {int(s) for s in Structure}
#: structures away from the field-of-view border keep their volume tightly (bones run out of the FOV)
INTERIOR = (Structure.FEMORAL_CARTILAGE, Structure.TIBIAL_CARTILAGE, Structure.PATELLAR_CARTILAGE, Structure.PATELLA,
            Structure.MENISCUS)


def phantom_labels(side: KneeSide = KneeSide.RIGHT) -> LabelVolume:
    """A small sagittal knee (PIR grid, 0.5 x 0.5 x 1.0 mm): femur, tibia, patella with cartilage, menisci, fibula.

    The fibula sits lateral: +x (patient right) for a right knee, -x for a left one.
    """
    affine = np.array([[0.0, 0.0, 1.0, -25.0], [-0.5, 0.0, 0.0, 25.0], [0.0, -0.5, 0.0, 22.0], [0, 0, 0, 1]])
    shape = (90, 90, 50)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    x, y, z = np.moveaxis(ijk @ affine[:3, :3].T + affine[:3, 3], -1, 0)
    lateral = 1.0 if side == KneeSide.RIGHT else -1.0
    ell = (x / 14) ** 2 + (y / 11) ** 2 + ((z - 9) / 11) ** 2
    shapes = [
        (Structure.FEMUR, (ell <= 1) | (((x / 8) ** 2 + (y / 7) ** 2 <= 1) & (z > 9))),
        (Structure.FEMORAL_CARTILAGE, ((x / 15.5) ** 2 + (y / 12.5) ** 2 + ((z - 9) / 12.5) ** 2 <= 1) & (z < 7)),
        (Structure.TIBIAL_CARTILAGE, ((x / 15) ** 2 + (y / 11) ** 2 <= 1) & (z >= -6) & (z < -4)),
        (Structure.TIBIA, (((x / 16) ** 2 + (y / 12) ** 2 <= 1) & (z < -6) & (z > -12))
         | (((x / 9) ** 2 + (y / 8) ** 2 <= 1) & (z <= -12))),
        (Structure.PATELLA, (x / 8) ** 2 + ((y - 18) / 3.5) ** 2 + ((z - 6) / 7) ** 2 <= 1),
        (Structure.PATELLAR_CARTILAGE, ((x / 8) ** 2 + ((y - 18) / 5) ** 2 + ((z - 6) / 7) ** 2 <= 1) & (y < 18)),
        (Structure.FIBULA, ((x - 17 * lateral) ** 2 + (y + 5) ** 2 <= 9) & (z < -13)),
        (Structure.MENISCUS, ((x / 15) ** 2 + (y / 11) ** 2 >= 0.7) & ((x / 15) ** 2 + (y / 11) ** 2 <= 1.2)
         & (z >= -4) & (z < -2.5)),
    ]
    arr = np.zeros(shape, np.uint8)
    for structure, mask in shapes:
        arr[mask & (arr == 0)] = int(structure)
    return LabelVolume(arr, affine, VolumeMeta(modality=Modality.SEG, side=side, side_source="test phantom"))


def volumes_ml(labels: LabelVolume) -> dict[Structure, float]:
    counts = np.bincount(labels.array.ravel(), minlength=9)
    return {s: counts[int(s)] * labels.voxel_volume_mm3 / 1000 for s in Structure if s != Structure.BACKGROUND}


def anatomical_side(labels: LabelVolume) -> KneeSide:
    centroids = [labels.index_to_world(np.argwhere(labels.mask(s)).mean(0, keepdims=True))[0]
                 for s in (Structure.FIBULA, Structure.TIBIA)]
    return side_from_anatomy(*centroids)


def timed(labels: LabelVolume, seed: int, spec: RandomisationSpec, **kw) -> tuple[Volume, LabelVolume, float]:
    start = time.perf_counter()
    image, out = synthesize_from_labels(labels, rng=np.random.default_rng(seed), spec=spec, **kw)
    return image, out, time.perf_counter() - start


def interior_stats(image: Volume, labels: LabelVolume, structure: Structure) -> tuple[float, float]:
    """Median and MAD of the image inside a structure, one voxel away from its border (no partial volume)."""
    mask = ndimage.binary_erosion(labels.mask(structure))
    values = image.array[mask]
    median = float(np.median(values))
    return median, float(np.median(np.abs(values - median)))


@pytest.fixture(scope="module")
def phantom() -> LabelVolume:
    return phantom_labels()


@pytest.fixture(scope="module")
def dess_labels() -> LabelVolume:
    if not DESS_LABELS.exists():
        pytest.skip(f"real data not available: {DESS_LABELS} (tests read ../shared/realdata beside the checkout)")
    return read_labels(DESS_LABELS, preset="pymskt")


# contract ------------------------------------------------------------------------------------------------------------
def test_output_contract(phantom):
    image, out, seconds = timed(phantom, 0, RandomisationSpec())
    print(f"phantom {phantom.spatial_shape} -> {image.spatial_shape}: {seconds:.3f} s")
    assert type(image) is Volume and isinstance(out, LabelVolume)
    assert image.array.dtype == np.float32 and np.all(np.isfinite(image.array)) and image.array.min() >= 0
    assert np.issubdtype(out.array.dtype, np.integer) and set(np.unique(out.array).tolist()) <= SCHEMA
    assert image.same_grid(out)
    # the output keeps the input's axis directions; spacing comes from the spec ranges
    np.testing.assert_allclose(image.direction, phantom.direction, atol=1e-9)
    spacing = np.sort(image.spacing)
    assert 0.3 <= spacing[0] <= spacing[1] <= 0.7 + 1e-9 and 0.3 <= spacing[2] <= 3.0
    assert image.meta.modality == Modality.MR and out.meta.modality == Modality.SEG
    assert image.meta.acquisition["synthesis"]["contrast"] in {"dess", "pdfs", "t1", "random"}


def test_deterministic_per_seed(phantom):
    spec = RandomisationSpec(patch_size=(40, 48, 32))
    (a_img, a_lab), (b_img, b_lab) = (synthesize_from_labels(phantom, rng=np.random.default_rng(7), spec=spec)
                                      for _ in range(2))
    np.testing.assert_array_equal(a_img.array, b_img.array)
    np.testing.assert_array_equal(a_lab.array, b_lab.array)
    np.testing.assert_array_equal(a_img.affine, b_img.affine)
    assert a_img.spatial_shape == (40, 48, 32)
    c_img, _ = synthesize_from_labels(phantom, rng=np.random.default_rng(8), spec=spec)
    assert not np.array_equal(a_img.array, c_img.array)


def test_volumes_preserved_and_every_structure_present(phantom):
    spec = RandomisationSpec(in_plane_mm=(0.5, 0.5), slice_mm=(1.0, 1.0), slice_axis=2)
    before = volumes_ml(phantom)
    for seed in range(3):
        _, out = synthesize_from_labels(phantom, rng=np.random.default_rng(seed), spec=spec)
        assert set(out.structures) == set(phantom.structures)
        after = volumes_ml(out)
        for structure in INTERIOR:
            assert after[structure] == pytest.approx(before[structure], rel=0.06), structure


def test_intensity_randomised_between_seeds_but_consistent_within_structure(phantom):
    spec = RandomisationSpec(contrasts=("random",), in_plane_mm=(0.5, 0.5), slice_mm=(1.0, 1.0), slice_axis=2,
                             noise_sigma=(0.01, 0.02), texture_amplitude=(0.0, 0.05), blur_fwhm_mm=(0.0, 0.0),
                             bias_strength=(0.0, 0.1))
    bones_and_plate = (Structure.FEMUR, Structure.TIBIA, Structure.PATELLA, Structure.FEMORAL_CARTILAGE)
    medians = []
    for seed in (1, 2):
        image, out = synthesize_from_labels(phantom, rng=np.random.default_rng(seed), spec=spec)
        stats = {s: interior_stats(image, out, s) for s in bones_and_plate}
        means = image.meta.acquisition["synthesis"]["class_means"]
        for s, (median, mad) in stats.items():
            # within a structure the signal is tight (noise + texture + bias) around its drawn mean
            assert mad < 0.15 * max(means) and abs(median - means[int(s)]) < 0.25 * max(means) + 3 * mad, s
        medians.append(np.array([stats[s][0] for s in bones_and_plate]) / max(means))
    # each structure's mean is drawn independently: the contrast pattern differs between seeds
    assert np.abs(medians[0] - medians[1]).max() > 0.1


def test_dess_contrast_separates_cartilage_from_marrow(phantom):
    spec = RandomisationSpec(contrasts=("dess",), in_plane_mm=(0.5, 0.5), slice_mm=(1.0, 1.0), slice_axis=2)
    image, out = synthesize_from_labels(phantom, rng=np.random.default_rng(3), spec=spec)
    (cart, cart_mad), (bone, bone_mad) = (interior_stats(image, out, s)
                                          for s in (Structure.FEMORAL_CARTILAGE, Structure.FEMUR))
    assert cart - bone > 3 * max(cart_mad, bone_mad)


def test_cartilage_fluid_gap_keeps_the_articular_surface_visible(phantom):
    """Randomised contrasts often make cartilage and fluid equal (about 1 in 5 random or DESS draws within 0.1 of the
    brightest mean); with a gap every cartilage class stays that far from the fluid, and nothing else moves."""
    cartilage = [int(s) for s in (Structure.FEMORAL_CARTILAGE, Structure.TIBIAL_CARTILAGE,
                                  Structure.PATELLAR_CARTILAGE)]

    def closest(gap: float, contrast: str) -> tuple[float, list[np.ndarray]]:
        spec, rng, drawn = RandomisationSpec(cartilage_fluid_gap=gap), np.random.default_rng(11), []
        worst = 1.0
        for _ in range(300):
            m = _class_means(contrast, spec, rng)
            worst = min(worst, float(np.abs(m[cartilage] - m[_FLUID]).min() / m.max()))
            drawn.append(m)
        return worst, drawn

    for contrast in ("random", "dess"):
        free, free_means = closest(0.0, contrast)
        kept, kept_means = closest(0.15, contrast)
        assert free < 0.02 and kept >= 0.15 * 0.999, contrast
        # the same draws: only cartilage classes that were too close moved (cortex and air are set relative to the
        # brightest mean, which a cartilage class moved up can raise)
        dark = (_CORTEX, _AIR, _CONTEXT0 + int(Tissue.AIR))
        others = [c for c in range(free_means[0].size) if c not in cartilage and c not in dark]
        assert all(np.array_equal(a[others], b[others]) for a, b in zip(free_means, kept_means, strict=True))
    image, _ = synthesize_from_labels(phantom, rng=np.random.default_rng(5),
                                      spec=RandomisationSpec(contrasts=("random",), cartilage_fluid_gap=0.3))
    means = np.array(image.meta.acquisition["synthesis"]["class_means"])
    assert np.abs(means[cartilage] - means[_FLUID]).min() >= 0.3 * means.max() - 1e-3
    with pytest.raises(SynthesisSpecError, match="cartilage_fluid_gap"):
        RandomisationSpec(cartilage_fluid_gap=1.0)


def test_keep_apart_moves_only_what_is_too_close():
    means = np.array([0.5, 0.55, 0.45, 0.9, 0.02, 1.0])
    out = keep_apart(means, anchor=0, movable=(1, 2, 3, 4), gap=0.2)
    # above the anchor goes up, below goes down, far ones stay; too dark to go below the anchor: goes above
    np.testing.assert_allclose(out, [0.5, 0.7, 0.3, 0.9, 0.02, 1.0])
    np.testing.assert_allclose(keep_apart(np.array([0.05, 0.1, 1.0]), 0, (1,), 0.2), [0.05, 0.25, 1.0])
    assert np.array_equal(keep_apart(means, 0, (1, 2), 0.0), means)


def test_background_is_not_uniform(phantom):
    image, out = synthesize_from_labels(phantom, rng=np.random.default_rng(4), spec=RandomisationSpec(
        contrasts=("t1",), noise_sigma=(0.0, 0.0), texture_amplitude=(0.0, 0.0), bias_strength=(0.0, 0.0)))
    background = image.array[(out.array == 0) & (image.array > 0)]
    # invented fat / muscle / fluid / skin / air: several distinct levels, not one grey
    levels = np.histogram(background, bins=20, range=(0, background.max()))[0] / background.size
    assert (levels > 0.02).sum() >= 3


# geometry ------------------------------------------------------------------------------------------------------------
def test_anisotropic_resampling_gives_requested_spacing(phantom):
    spec = RandomisationSpec(in_plane_mm=(0.6, 0.6), slice_mm=(2.0, 2.0), slice_axis=0, rotation_deg=0.0)
    image, out = synthesize_from_labels(phantom, rng=np.random.default_rng(5), spec=spec)
    np.testing.assert_allclose(image.spacing, [2.0, 0.6, 0.6], atol=1e-9)
    assert image.same_grid(out) and image.slice_axis == 0
    # the field of view is kept: 90 x 0.5 mm = 45 mm -> 22-23 slices of 2 mm
    assert image.spatial_shape == (22, 75, 83)
    assert image.meta.acquisition["slice_thickness_mm"] == pytest.approx(2.0)


def test_mirroring_flips_side_and_puts_fibula_on_the_other_side(phantom):
    assert anatomical_side(phantom) == KneeSide.RIGHT
    kept_img, kept = synthesize_from_labels(phantom, rng=np.random.default_rng(6),
                                            spec=RandomisationSpec(mirror_probability=0.0))
    image, mirrored = synthesize_from_labels(phantom, rng=np.random.default_rng(6),
                                             spec=RandomisationSpec(mirror_probability=1.0))
    assert kept.meta.side == kept_img.meta.side == KneeSide.RIGHT and anatomical_side(kept) == KneeSide.RIGHT
    assert mirrored.meta.side == image.meta.side == KneeSide.LEFT
    assert anatomical_side(mirrored) == KneeSide.LEFT
    assert "mirrored" in mirrored.meta.side_source
    # same-handed affine as the input: the anatomy is mirrored, not the grid
    assert np.sign(np.linalg.det(mirrored.affine[:3, :3])) == np.sign(np.linalg.det(phantom.affine[:3, :3]))


def test_patch_crops_around_the_anatomy(phantom):
    spec = RandomisationSpec(patch_size=(32, 32, 24))
    for seed in range(4):
        image, out = synthesize_from_labels(phantom, rng=np.random.default_rng(seed), spec=spec)
        assert image.spatial_shape == out.spatial_shape == (32, 32, 24)
        assert out.structures, "a patch is centred on labelled anatomy"


def test_uniform_patch_centres_reach_beyond_the_anatomy(phantom):
    """patch_centre='uniform' also shows the soft tissue and air far from any label (a model must learn those)."""
    spec = RandomisationSpec(patch_size=(12, 12, 8), patch_centre="uniform", rotation_deg=0.0)
    centres = []
    for seed in range(12):
        image, _ = synthesize_from_labels(phantom, rng=np.random.default_rng(seed), spec=spec)
        assert image.spatial_shape == (12, 12, 8)
        centres.append(image.index_to_world(np.array([[5.5, 5.5, 3.5]])).ravel())
    inside = phantom.world_to_index(np.array(centres))
    assert np.all((inside > -1) & (inside < np.array(phantom.spatial_shape))), "centres stay in the field of view"
    labelled = [bool(phantom.array[tuple(np.clip(np.rint(c).astype(int), 0, np.array(phantom.spatial_shape) - 1))])
                for c in inside]
    assert not all(labelled), "some centres fall on unlabelled tissue"
    assert np.ptp(np.array(centres), axis=0).min() > 10.0, "centres spread over the field of view"


def test_context_tissues_replace_invented_background(phantom):
    context = np.full(phantom.spatial_shape, 255, np.uint8)
    context[:, :, :10] = Tissue.FLUID  # patient-left edge of the FOV: fluid instead of invented tissue
    spec = RandomisationSpec(contrasts=("t1",), mirror_probability=0.0, rotation_deg=0.0, elastic_mm=(0.0, 0.0),
                             in_plane_mm=(0.5, 0.5), slice_mm=(1.0, 1.0), slice_axis=2, noise_sigma=(0.0, 0.0),
                             texture_amplitude=(0.0, 0.0), bias_strength=(0.0, 0.0), blur_fwhm_mm=(0.0, 0.0))
    image, _ = synthesize_from_labels(phantom, rng=np.random.default_rng(0), spec=spec, context=context)
    fluid = image.meta.acquisition["synthesis"]["class_means"][16 + Tissue.FLUID]
    region = image.array[:, :, 1:9][phantom.array[:, :, 1:9] == 0]
    np.testing.assert_allclose(np.median(region), fluid, rtol=1e-3)


def test_bad_input_is_refused_with_koaimg_errors(phantom):
    with pytest.raises(SynthesisSpecError, match="slice_mm"):
        RandomisationSpec(slice_mm=(3.0, 1.0))
    with pytest.raises(SynthesisSpecError, match="contrasts"):
        RandomisationSpec(contrasts=("flair",))
    with pytest.raises(SynthesisSpecError, match="patch_centre"):
        RandomisationSpec(patch_centre="edge")
    with pytest.raises(GeometryError, match="context shape"):
        synthesize_from_labels(phantom, rng=np.random.default_rng(0), context=np.zeros((2, 2, 2), np.uint8))
    empty = LabelVolume(np.zeros((8, 8, 8), np.uint8), np.eye(4))
    with pytest.raises(LabelSchemaError, match="no labelled structure"):
        synthesize_from_labels(empty, rng=np.random.default_rng(0))


# real label map ------------------------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_real_map_full_volume(dess_labels):
    before = volumes_ml(dess_labels)
    image, out, seconds = timed(dess_labels, 2, RandomisationSpec())
    print(f"real {dess_labels.spatial_shape} -> {image.spatial_shape} at {np.round(image.spacing, 2)} mm: "
          f"{seconds:.2f} s")
    assert image.same_grid(out) and set(np.unique(out.array).tolist()) <= SCHEMA
    assert set(out.structures) == set(dess_labels.structures)
    after = volumes_ml(out)
    for structure in dess_labels.structures:
        tolerance = 0.04 if structure in INTERIOR else 0.08
        assert after[structure] == pytest.approx(before[structure], rel=tolerance), structure


@pytest.mark.realdata
def test_real_map_mirroring_moves_the_fibula(dess_labels):
    assert dess_labels.meta.side == KneeSide.RIGHT == anatomical_side(dess_labels)
    spec = RandomisationSpec(mirror_probability=1.0, in_plane_mm=(0.7, 0.7), slice_mm=(1.4, 1.4), slice_axis=2)
    image, out, seconds = timed(dess_labels, 3, spec)
    print(f"real mirrored {image.spatial_shape}: {seconds:.2f} s")
    assert image.meta.side == out.meta.side == KneeSide.LEFT
    assert anatomical_side(out) == KneeSide.LEFT
    np.testing.assert_allclose(out.spacing, [0.7, 0.7, 1.4])


@pytest.mark.realdata
def test_real_map_training_patches(dess_labels):
    spec = RandomisationSpec(patch_size=(96, 96, 64))
    seconds = []
    for seed in range(4):
        image, out, dt = timed(dess_labels, seed, spec)
        seconds.append(dt)
        assert image.spatial_shape == out.spatial_shape == (96, 96, 64)
        assert out.structures
    print(f"real 96x96x64 patches: {', '.join(f'{s:.3f}' for s in seconds)} s")
