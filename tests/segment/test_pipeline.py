"""``segment_file`` input handling: a multi-echo DICOM folder picks the shortest echo and says so."""

from __future__ import annotations

import pytest
from koaimg_testdata import realdata

from koaimg.core import DicomSeriesError, OptionError
from koaimg.pipeline._segment import load_image


@pytest.mark.realdata
def test_multi_echo_folder_picks_shortest_echo_with_a_note() -> None:
    folder = realdata("pymskt_mese_t2", "dicom")
    volume, notes = load_image(folder)
    assert volume.spatial_shape == (256, 256, 24)
    assert notes and "shortest-echo" in notes[0]
    with pytest.raises(OptionError, match="out of range"):
        load_image(folder, series=99)


def test_folder_without_mr_is_refused(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(DicomSeriesError, match="no readable MR series"):
        load_image(tmp_path)
