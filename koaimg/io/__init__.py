"""Reading and writing: folder discovery, DICOM MR and US, NIfTI/NRRD/MHA, PNG/JPEG screenshots, atomic writers.

The only package that opens files, and the only place where DICOM/ITK LPS is converted to koaimg's RAS.
"""

from ._atomic import atomic_path, atomic_write_bytes, atomic_write_text
from ._codecs import codec_status, ensure_decodable
from ._convert import from_nibabel, from_simpleitk, to_nibabel, to_simpleitk
from ._dicom_headers import InstanceHeader, pseudonym, read_header
from ._dicom_mr import load_mr_stack
from ._dicom_write import MRSeriesTags, write_dicom_series
from ._discover import DiscoveryReport, FileProblem, SeriesInfo, discover, summarise_spacing
from ._files import FileKind, sniff
from ._images import read_image, read_labels, write_volume
from ._load import load_dicom_file, load_series

__all__ = [
    "DiscoveryReport",
    "FileKind",
    "FileProblem",
    "InstanceHeader",
    "MRSeriesTags",
    "SeriesInfo",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "codec_status",
    "discover",
    "ensure_decodable",
    "from_nibabel",
    "from_simpleitk",
    "load_dicom_file",
    "load_mr_stack",
    "load_series",
    "pseudonym",
    "read_header",
    "read_image",
    "read_labels",
    "sniff",
    "summarise_spacing",
    "to_nibabel",
    "to_simpleitk",
    "write_dicom_series",
    "write_volume",
]
