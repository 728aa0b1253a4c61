"""koaimg's internal label schema and the presets that translate other tools' label maps into it.

A preset maps *every* value it expects; a value the preset does not know is an error listing the values, never
silently dropped. Values a preset deliberately discards (e.g. bone-lesion labels merged into their bone, menisci
kept) are part of the preset, so the translation is explicit and reviewable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from ._errors import LabelSchemaError


class Structure(IntEnum):
    """Internal label values (OAI-ZIB order for 1-4, as DESIGN.md fixes; 7-8 are optional context structures)."""

    BACKGROUND = 0
    FEMUR = 1
    FEMORAL_CARTILAGE = 2
    TIBIA = 3
    TIBIAL_CARTILAGE = 4
    PATELLA = 5
    PATELLAR_CARTILAGE = 6
    #: context only: decides knee side from anatomy (the fibula is lateral)
    FIBULA = 7
    #: context only: both menisci
    MENISCUS = 8

    @property
    def key(self) -> str:
        """str: snake_case name used in tables and JSON, e.g. ``femoral_cartilage``."""
        return self.name.lower()

    @classmethod
    def from_key(cls, key: str) -> Structure:
        """Parse ``'femoral_cartilage'``, ``'femoral cartilage'`` or ``'FEMORAL_CARTILAGE'``."""
        norm = re.sub(r"[\s\-]+", "_", key.strip()).upper()
        try:
            return cls[norm]
        except KeyError:
            raise LabelSchemaError(f"unknown structure name {key!r}",
                                   hint=f"use one of {[s.key for s in cls]} or 'ignore'") from None


#: bones and the cartilage plate that sits on each (thickness is anchored on these interfaces)
CARTILAGE_ON_BONE = {
    Structure.FEMORAL_CARTILAGE: Structure.FEMUR,
    Structure.TIBIAL_CARTILAGE: Structure.TIBIA,
    Structure.PATELLAR_CARTILAGE: Structure.PATELLA,
}

#: display colours (RGB 0-255) for label tables in Slicer / ITK-SNAP / NiiVue
STRUCTURE_COLOURS = {
    Structure.FEMUR: (241, 214, 145),
    Structure.FEMORAL_CARTILAGE: (30, 144, 255),
    Structure.TIBIA: (177, 122, 101),
    Structure.TIBIAL_CARTILAGE: (50, 205, 50),
    Structure.PATELLA: (216, 101, 79),
    Structure.PATELLAR_CARTILAGE: (255, 215, 0),
    Structure.FIBULA: (128, 174, 128),
    Structure.MENISCUS: (186, 85, 211),
}


@dataclass(frozen=True)
class LabelPreset:
    """How one tool's label values map onto ``Structure``.

    ``mapping`` gives, for every source value the preset knows, the internal structure or ``None`` (discard to
    background on purpose). ``name_patterns`` instead resolve values by the names in a colour table shipped with
    the label map (used for atlases whose numbering differs between releases).
    """

    name: str
    description: str
    mapping: Mapping[int, Structure | None] = field(default_factory=dict)
    name_patterns: Mapping[str, Structure | None] = field(default_factory=dict)

    def resolve(self, names: Mapping[int, str] | None = None) -> dict[int, Structure | None]:
        """The value mapping, using ``names`` (value -> label name) for name-based presets."""
        if not self.name_patterns:
            return dict(self.mapping)
        if not names:
            raise LabelSchemaError(f"preset {self.name!r} maps labels by name and needs the atlas colour table",
                                   hint="pass --label-table with the atlas's colour/label description file")
        resolved: dict[int, Structure | None] = {0: None}
        for value, label_name in names.items():
            for pattern, structure in self.name_patterns.items():
                if re.search(pattern, label_name, flags=re.IGNORECASE):
                    resolved[value] = structure
                    break
        return resolved


_B = Structure
PRESETS: dict[str, LabelPreset] = {
    "koaimg": LabelPreset("koaimg", "koaimg internal schema (identity)", {int(s): s for s in Structure}),
    "oai-zib": LabelPreset(
        "oai-zib", "OAI-ZIB: 1 femur, 2 femoral cartilage, 3 tibia, 4 tibial cartilage",
        {0: None, 1: _B.FEMUR, 2: _B.FEMORAL_CARTILAGE, 3: _B.TIBIA, 4: _B.TIBIAL_CARTILAGE}),
    "pymskt": LabelPreset(
        "pymskt", "pymskt DESS labels: 1 FC, 2/3 medial/lateral TC, 4 PC, 5 femur, 6 tibia, 7 patella, 8 fibula, "
                  "9/10 lateral/medial meniscus",
        {0: None, 1: _B.FEMORAL_CARTILAGE, 2: _B.TIBIAL_CARTILAGE, 3: _B.TIBIAL_CARTILAGE, 4: _B.PATELLAR_CARTILAGE,
         5: _B.FEMUR, 6: _B.TIBIA, 7: _B.PATELLA, 8: _B.FIBULA, 9: _B.MENISCUS, 10: _B.MENISCUS}),
    "woo-oai": LabelPreset(
        "woo-oai", "Woo et al. OAI-ZIB-UQ: 1-6 as koaimg; 7/8/9 femoral/tibial/patellar bone lesions merged into "
                   "their bone",
        {0: None, 1: _B.FEMUR, 2: _B.FEMORAL_CARTILAGE, 3: _B.TIBIA, 4: _B.TIBIAL_CARTILAGE, 5: _B.PATELLA,
         6: _B.PATELLAR_CARTILAGE, 7: _B.FEMUR, 8: _B.TIBIA, 9: _B.PATELLA}),
    "clair": LabelPreset(
        "clair", "CartiMorph CLAIR-Knee-103R: 1 femur, 2 FC, 3 tibia, 4/5 medial/lateral TC",
        {0: None, 1: _B.FEMUR, 2: _B.FEMORAL_CARTILAGE, 3: _B.TIBIA, 4: _B.TIBIAL_CARTILAGE, 5: _B.TIBIAL_CARTILAGE}),
    "spl": LabelPreset(
        "spl", "SPL/OpenAnatomy knee atlas: values resolved by name from the atlas colour table (numbering differs "
               "between atlas releases, so no numbers are assumed)",
        name_patterns={
            r"femor\w*\s+cartilage|cartilage.*femur": _B.FEMORAL_CARTILAGE,
            r"tibia\w*\s+cartilage|cartilage.*tibia": _B.TIBIAL_CARTILAGE,
            r"patell\w*\s+cartilage|cartilage.*patell": _B.PATELLAR_CARTILAGE,
            r"menisc": _B.MENISCUS,
            r"^\s*(left|right)?\s*femur\b|\bfemur\s*$|femoral\s+bone": _B.FEMUR,
            r"^\s*(left|right)?\s*tibia\b|\btibia\s*$|tibial\s+bone": _B.TIBIA,
            r"^\s*(left|right)?\s*patella\b|\bpatella\s*$|patellar\s+bone": _B.PATELLA,
            r"fibula": _B.FIBULA,
        }),
}


def load_preset_json(text: str, *, name: str = "user") -> LabelPreset:
    """A preset from JSON ``{"labels": {"1": "femoral_cartilage", "5": "femur", "9": "ignore"}}``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabelSchemaError(f"label mapping is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, dict) or not labels:
        raise LabelSchemaError('label mapping JSON needs a non-empty "labels" object',
                               hint='e.g. {"labels": {"1": "femoral_cartilage", "5": "femur"}}')
    mapping: dict[int, Structure | None] = {0: None}
    for raw_value, target in labels.items():
        try:
            value = int(raw_value)
        except ValueError:
            raise LabelSchemaError(f"label mapping key {raw_value!r} is not an integer label value") from None
        if not isinstance(target, str):
            raise LabelSchemaError(f"label mapping value for {value} must be a structure name or 'ignore'")
        mapping[value] = None if target.strip().lower() in {"ignore", "background"} else Structure.from_key(target)
    return LabelPreset(str(data.get("name", name)), str(data.get("description", "user JSON mapping")), mapping)


def parse_label_table(text: str) -> dict[int, str]:
    """Value -> name from a Slicer colour table (``value name r g b a``) or ITK-SNAP label description file."""
    names: dict[int, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        quoted = re.match(r'^(\d+)\s+.*"(.*)"\s*$', line)  # ITK-SNAP: IDX R G B A VIS MSH "LABEL"
        if quoted:
            names[int(quoted.group(1))] = quoted.group(2)
            continue
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            names[int(parts[0])] = parts[1].replace("_", " ")
    if not names:
        raise LabelSchemaError("label table has no 'value name ...' lines")
    return names


def apply_preset(array: np.ndarray, preset: LabelPreset | str, *,
                 names: Mapping[int, str] | None = None) -> np.ndarray:
    """Translate a label array into the internal schema (uint8). Unknown values raise, listing them."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise LabelSchemaError(f"unknown label preset {preset!r}", hint=f"choose one of {sorted(PRESETS)}")
        preset = PRESETS[preset]
    mapping = preset.resolve(names)
    arr = np.asarray(array)
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        else:
            raise LabelSchemaError(f"label map has non-integer values (dtype {arr.dtype})",
                                   hint="this looks like an image or probability map, not a label map")
    values = np.unique(arr)
    unknown = sorted(int(v) for v in values if int(v) not in mapping and int(v) != 0)
    if unknown:
        raise LabelSchemaError(f"label values {unknown} are not covered by preset {preset.name!r} "
                               f"({preset.description})",
                               hint="choose the matching --preset or give a JSON mapping that lists every value")
    lut_size = int(max(values.max(initial=0), max(mapping, default=0))) + 1
    if values.min(initial=0) < 0:
        raise LabelSchemaError(f"label map has negative values ({int(values.min())})")
    lut = np.zeros(lut_size, dtype=np.uint8)
    for value, structure in mapping.items():
        if structure is not None and value < lut_size:
            lut[value] = int(structure)
    return lut[arr]
