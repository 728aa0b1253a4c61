"""Reading and writing: folder discovery, DICOM MR and US, NIfTI/NRRD/MHA, PNG/JPEG screenshots, atomic writers.

The only package that opens files, and the only place where DICOM/ITK LPS is converted to koaimg's RAS.
"""

from ._atomic import atomic_path, atomic_write_bytes, atomic_write_text
from ._codecs import codec_status, ensure_decodable
from ._convert import from_nibabel, from_simpleitk, to_nibabel, to_simpleitk
from ._dicom_headers import InstanceHeader, pseudonym, read_header
from ._dicom_mr import load_mr_stack
from ._dicom_us import choose_bmode_region, describe_ultrasound, parse_ultrasound_regions, read_ultrasound_dicom
from ._dicom_us_write import write_ultrasound_dicom
from ._dicom_write import MRSeriesTags, write_dicom_series
from ._discover import DiscoveryReport, FileProblem, SeriesInfo, discover, summarise_spacing
from ._files import FileKind, sniff
from ._images import read_image, read_labels, write_volume
from ._load import load_dicom_file, load_series
from ._us_screenshot import read_ultrasound_screenshot

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
    "choose_bmode_region",
    "codec_status",
    "describe_ultrasound",
    "discover",
    "ensure_decodable",
    "from_nibabel",
    "from_simpleitk",
    "load_dicom_file",
    "load_mr_stack",
    "load_series",
    "parse_ultrasound_regions",
    "pseudonym",
    "read_header",
    "read_image",
    "read_labels",
    "read_ultrasound_dicom",
    "read_ultrasound_screenshot",
    "sniff",
    "summarise_spacing",
    "to_nibabel",
    "to_simpleitk",
    "write_dicom_series",
    "write_ultrasound_dicom",
    "write_volume",
]
