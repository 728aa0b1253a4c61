"""Stage functions the CLI calls: inspect a folder, describe the environment (batch stages arrive with later work)."""

from ..io import DiscoveryReport, discover
from ._change import run_change
from ._cohort import run_cohort
from ._environment import environment_report
from ._segment import segment_file
from ._ultrasound import measure_ultrasound_file

__all__ = ["DiscoveryReport", "discover", "environment_report", "run_change", "run_cohort",
           "segment_file"]
__all__ += ["measure_ultrasound_file"]
