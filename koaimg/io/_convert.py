"""Volume <-> nibabel / SimpleITK. The LPS<->RAS flip and the SimpleITK axis reversal happen here and nowhere else."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from ..core import LPS_TO_RAS, GeometryError, LabelVolume, Volume, VolumeMeta


def to_nibabel(volume: Volume) -> nib.Nifti1Image:
    """A NIfTI-1 image with the Volume's RAS affine as both qform and sform (code 1, scanner)."""
    img = nib.Nifti1Image(np.asarray(volume.array), volume.affine)
    img.set_qform(volume.affine, code=1)
    img.set_sform(volume.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    return img


def from_nibabel(img: nib.spatialimages.SpatialImage, meta: VolumeMeta | None = None, *,
                 as_labels: bool = False) -> Volume:
    """A Volume from a nibabel image (its ``affine`` is already RAS mm)."""
    data = np.asanyarray(img.dataobj)
    cls = LabelVolume if as_labels else Volume
    return cls(data, img.affine, meta)


def to_simpleitk(volume: Volume) -> sitk.Image:
    """A SimpleITK image in LPS with the same physical placement; index (x, y, z) = Volume index (i, j, k)."""
    arr = np.asarray(volume.array)
    if arr.ndim != 3:
        raise GeometryError(f"SimpleITK conversion needs a 3D volume, got shape {arr.shape}")
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))
    lps = LPS_TO_RAS @ volume.affine  # the flip is its own inverse
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetOrigin(tuple(float(o) for o in lps[:3, 3]))
    img.SetDirection(tuple(float(d) for d in (lps[:3, :3] / spacing).ravel()))
    return img


def from_simpleitk(img: sitk.Image, meta: VolumeMeta | None = None, *, as_labels: bool = False) -> Volume:
    """A Volume (RAS) from a 3D SimpleITK image (LPS)."""
    if img.GetDimension() != 3:
        raise GeometryError(f"expected a 3D image, got {img.GetDimension()}D")
    arr = sitk.GetArrayFromImage(img)
    if img.GetNumberOfComponentsPerPixel() > 1:
        raise GeometryError(f"expected a scalar image, got {img.GetNumberOfComponentsPerPixel()} components per voxel")
    arr = arr.transpose(2, 1, 0)
    direction = np.array(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.array(img.GetSpacing(), dtype=np.float64)
    lps[:3, 3] = img.GetOrigin()
    cls = LabelVolume if as_labels else Volume
    return cls(arr, LPS_TO_RAS @ lps, meta)
