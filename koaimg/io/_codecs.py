"""Which compressed DICOM transfer syntaxes can be decoded here, and a check that names the missing codec."""

from __future__ import annotations

from pathlib import Path

from pydicom.pixels import get_decoder
from pydicom.uid import UID

from ..core import MissingCodecError, UnsupportedTransferSyntaxError

#: transfer syntaxes a knee export may use, checked by ``koaimg doctor``
KNOWN_COMPRESSED = (
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless P14
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
)

_INSTALL_HINT = "install the codec extra: pip install 'koaimg[dicom-codecs]'"


def codec_status() -> list[dict[str, object]]:
    """One row per known compressed transfer syntax: name, uid, whether decodable, plugins, what is missing."""
    rows = []
    for uid in KNOWN_COMPRESSED:
        ts = UID(uid)
        try:
            decoder = get_decoder(ts)
        except NotImplementedError:
            rows.append({"uid": uid, "name": ts.name, "available": False, "plugins": [], "missing": ["no decoder"]})
            continue
        rows.append({"uid": uid, "name": ts.name, "available": bool(decoder.is_available),
                     "plugins": list(decoder.available_plugins), "missing": list(decoder.missing_dependencies)})
    return rows


def ensure_decodable(transfer_syntax: str | None, *, path: str | Path) -> None:
    """Raise a one-line error naming the missing codec before pixel data is touched."""
    if not transfer_syntax:
        return
    ts = UID(str(transfer_syntax))
    if not ts.is_transfer_syntax:
        raise UnsupportedTransferSyntaxError(f"transfer syntax {ts} is not a DICOM transfer syntax", path=path,
                                             hint="re-export the series uncompressed")
    if not ts.is_compressed:
        return
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise UnsupportedTransferSyntaxError(
            f"pixel data uses {ts.name} ({ts}), which no DICOM decoder supports",
            path=path, hint="re-export the series uncompressed (explicit VR little endian)") from None
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
        raise MissingCodecError(f"pixel data is compressed with {ts.name} and no decoder is installed "
                                f"(needs {needs})", path=path, hint=_INSTALL_HINT)
