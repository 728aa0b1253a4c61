"""Stage functions the CLI calls: inspect a folder, describe the environment (batch stages arrive with later work)."""

from ..io import DiscoveryReport, discover
from ._batch import RunOptions, RunSummary, run_plan
from ._change import run_change
from ._cohort import run_cohort
from ._environment import environment_report
from ._manifest import Manifest, StageRecord, read_manifest
from ._run import run_batch, run_study
from ._segment import segment_file
from ._subjects import Pair, Scan, StudyPlan, discover_batch, discover_study
from ._ultrasound import measure_ultrasound_file

__all__ = ["DiscoveryReport", "discover", "environment_report", "run_change", "run_cohort",
           "segment_file"]
__all__ += ["Manifest", "Pair", "RunOptions", "RunSummary", "Scan", "StageRecord", "StudyPlan", "discover_batch",
            "discover_study", "read_manifest", "run_batch", "run_plan", "run_study"]
__all__ += ["measure_ultrasound_file"]
