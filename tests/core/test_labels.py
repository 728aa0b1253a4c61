import json

import numpy as np
import pytest

from koaimg.core import (
    PRESETS,
    KneeSide,
    LabelSchemaError,
    Structure,
    apply_preset,
    decide_side,
    load_preset_json,
    parse_label_table,
    side_from_anatomy,
    side_from_text,
)


def test_pymskt_preset_maps_every_value():
    src = np.arange(11, dtype=np.uint8).reshape(1, 1, 11)
    out = apply_preset(src, "pymskt").ravel().tolist()
    assert out == [0, 2, 4, 4, 6, 1, 3, 5, 7, 8, 8]


def test_woo_lesions_merge_into_their_bone():
    out = apply_preset(np.array([7, 8, 9]), "woo-oai").tolist()
    assert out == [Structure.FEMUR, Structure.TIBIA, Structure.PATELLA]


def test_unknown_values_are_listed_not_dropped():
    with pytest.raises(LabelSchemaError, match=r"\[11, 12\].*pymskt"):
        apply_preset(np.array([0, 1, 11, 12]), "pymskt")
    with pytest.raises(LabelSchemaError, match="unknown label preset"):
        apply_preset(np.array([0]), "nope")


def test_float_labels_refused_unless_integral():
    assert apply_preset(np.array([0.0, 2.0]), "oai-zib").tolist() == [0, 2]
    with pytest.raises(LabelSchemaError, match="non-integer"):
        apply_preset(np.array([0.5]), "oai-zib")


def test_user_json_mapping():
    preset = load_preset_json(json.dumps({"labels": {"1": "femoral cartilage", "5": "femur", "9": "ignore"}}))
    assert apply_preset(np.array([0, 1, 5, 9]), preset).tolist() == [0, 2, 1, 0]
    with pytest.raises(LabelSchemaError, match="unknown structure"):
        load_preset_json('{"labels": {"1": "meniscus tear"}}')
    with pytest.raises(LabelSchemaError, match="not valid JSON"):
        load_preset_json("{")


def test_spl_preset_resolves_by_colour_table_names():
    table = parse_label_table(
        "# Slicer colour table\n0 background 0 0 0 0\n12 femur 1 2 3 255\n47 femoral_cartilage 1 2 3 255\n"
        '81 0 0 0 1 1 1 "tibial cartilage"\n80 0 0 0 1 1 1 "tibia"\n90 fibula 1 1 1 1\n'
    )
    out = apply_preset(np.array([0, 12, 47, 80, 81, 90]), "spl", names=table).tolist()
    assert out == [0, 1, 2, 3, 4, 7]
    with pytest.raises(LabelSchemaError, match="colour table"):
        apply_preset(np.array([0]), PRESETS["spl"])


@pytest.mark.parametrize(("text", "side"), [
    ("SAG 3D DESS RIGHT", KneeSide.RIGHT), ("sag_dess_rt", KneeSide.RIGHT), ("COR PD FS LT", KneeSide.LEFT),
    ("left knee", KneeSide.LEFT), ("SAG_3D_DESS_RIGHT_bones-label.nrrd", KneeSide.RIGHT), ("T2MAP", KneeSide.UNKNOWN),
    ("bilateral left right", KneeSide.UNKNOWN), ("ALTERNATIVE", KneeSide.UNKNOWN), ("", KneeSide.UNKNOWN),
])
def test_side_from_text(text, side):
    assert side_from_text(text) is side


def test_side_from_anatomy_uses_the_fibula():
    assert side_from_anatomy(np.array([40.0, 0, 0]), np.array([20.0, 0, 0])) is KneeSide.RIGHT
    assert side_from_anatomy(np.array([0.0, 0, 0]), np.array([20.0, 0, 0])) is KneeSide.LEFT
    assert side_from_anatomy(np.array([21.0, 0, 0]), np.array([20.0, 0, 0])) is KneeSide.UNKNOWN


def test_conflicts_are_reported_not_resolved():
    decision = decide_side([("Laterality tag", KneeSide.RIGHT), ("SeriesDescription", KneeSide.LEFT)])
    assert decision.side is KneeSide.RIGHT and decision.conflicting
    assert "SeriesDescription says left" in decision.conflicts[-1]
    assert decide_side([("Laterality tag", KneeSide.UNKNOWN)]).side is KneeSide.UNKNOWN
