"""NIfTI bytes for the browser with every free-text header field blanked, and bounded parsing of uploads.

The viewer needs the voxels and the geometry, nothing else; header text (``descrip``, ``aux_file``, ``db_name``,
``intent_name``) and header extensions are where converters leave names, dates and scanner notes, so they never leave
the server. Uploads are decompressed with a hard output limit, so a small gzip bomb cannot exhaust memory.
"""

from __future__ import annotations

import functools
import gzip
import struct
import zlib
from pathlib import Path

from ..core import UnreadableFileError

#: NIfTI-1 free-text fields as (offset, length)
_TEXT_FIELDS_N1 = ((4, 18), (148, 80), (228, 24), (328, 16))
#: NIfTI-2: descrip, aux_file, intent_name
_TEXT_FIELDS_N2 = ((240, 80), (320, 24), (508, 16))


def _header_size(raw: bytes) -> tuple[int, str]:
    if len(raw) < 4:
        raise UnreadableFileError("not a NIfTI file (shorter than its header)")
    for endian in ("<", ">"):
        size = struct.unpack(f"{endian}i", raw[:4])[0]
        if size in (348, 540):
            return size, endian
    raise UnreadableFileError("not a NIfTI-1/NIfTI-2 file (bad header size field)")


def scrub_header(raw: bytes) -> bytes:
    """Blank the free-text fields and drop header extensions of uncompressed NIfTI bytes (voxels untouched)."""
    size, endian = _header_size(raw)
    if len(raw) < size + 4:
        raise UnreadableFileError("NIfTI file is truncated inside its header")
    out = bytearray(raw)
    for offset, length in _TEXT_FIELDS_N1 if size == 348 else _TEXT_FIELDS_N2:
        out[offset:offset + length] = b"\0" * length
    vox_offset = int(struct.unpack(f"{endian}f", raw[108:112])[0]) if size == 348 else \
        int(struct.unpack(f"{endian}q", raw[168:176])[0])
    if out[size] != 0:  # extension flag: blank the extension bytes, keep vox_offset so voxel data stays in place
        out[size:size + 4] = b"\0\0\0\0"
        out[size + 4:max(vox_offset, size + 4)] = b"\0" * max(0, vox_offset - size - 4)
    return bytes(out)


@functools.lru_cache(maxsize=6)
def _scrubbed_gz(path: str, mtime_ns: int, size: int) -> bytes:
    data = Path(path).read_bytes()
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    return gzip.compress(scrub_header(raw), compresslevel=1, mtime=0)


def scrubbed_nifti_gz(path: Path) -> bytes:
    """Gzipped, header-scrubbed bytes of a NIfTI file, cached while the file is unchanged."""
    st = path.stat()
    return _scrubbed_gz(str(path), st.st_mtime_ns, st.st_size)


def bounded_gunzip(data: bytes, *, limit: int) -> bytes:
    """Decompress gzip ``data`` but refuse to produce more than ``limit`` bytes (plain bytes pass through)."""
    if data[:2] != b"\x1f\x8b":
        return data
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        raw = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise UnreadableFileError(f"gzip data is corrupt ({exc})", hint="upload the .nii.gz again") from None
    if len(raw) > limit or inflater.unconsumed_tail:
        raise UnreadableFileError(f"decompressed upload is larger than {limit} bytes, more than a label map on this "
                                  "grid can be", hint="upload the label map of this case, not another image")
    if not inflater.eof:
        raise UnreadableFileError("gzip data is truncated", hint="upload the complete .nii.gz file")
    return raw
