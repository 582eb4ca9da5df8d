"""Landmark schemas: which structures (levels) a task has and which points each carries.

A schema is pure data. Everything that touches points (losses, metrics, file readers, the
pipeline) asks the schema for indices instead of hard-coding them, so a new task (cervical
C2-C7, T12 added, femoral heads, AP views) is a new schema, not a new code path.

Points are stored flat, level by level, in the order of the schema: for the default
``LUMBAR_SAGITTAL`` schema, index 0..3 are the four corners of L1, ..., 20..21 are the two
superior corners of S1.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import torch

__all__ = [
    "CORNERS",
    "FEMORAL_HEADS",
    "LUMBAR_MORPHOMETRY",
    "LUMBAR_SAGITTAL",
    "LUMBOPELVIC_SAGITTAL",
    "NON_VERTEBRAL_LEVEL",
    "SCHEMAS",
    "WHOLE_SPINE_BODIES",
    "WHOLE_SPINE_SAGITTAL",
    "Endplate",
    "LandmarkSchema",
    "Level",
    "resolve_schema",
]

#: Names of the four corners of a vertebral body, in the order of the conventions.
CORNERS: tuple[str, str, str, str] = (
    "anterior_superior",
    "posterior_superior",
    "posterior_inferior",
    "anterior_inferior",
)


@dataclass(frozen=True)
class Level:
    """One structure of a schema (a vertebra, a femoral head, ...) and its ordered points."""

    name: str
    points: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.name or "_" in self.name:
            raise ValueError(f"level name {self.name!r} must be non-empty and contain no '_'")
        if not self.points:
            raise ValueError(f"level {self.name!r} has no points")
        if len(set(self.points)) != len(self.points):
            raise ValueError(f"level {self.name!r} has duplicate point names: {self.points}")

    @property
    def has_body(self) -> bool:
        """Whether the level carries all four corners of a vertebral body."""
        return all(c in self.points for c in CORNERS)


@dataclass(frozen=True)
class Endplate:
    """An endplate line of one level, from its posterior point to its anterior point.

    Attributes
    ----------
    level : str
        Level name, e.g. ``"L1"``.
    side : {"superior", "inferior"}
        Which endplate of the level.
    posterior, anterior : int
        Flat point indices in the schema.
    """

    level: str
    side: Literal["superior", "inferior"]
    posterior: int
    anterior: int


#: The level of the femoral heads: not a vertebra (no crop refinement, no body).
NON_VERTEBRAL_LEVEL = "FH"


@dataclass(frozen=True)
class LandmarkSchema:
    """Ordered levels, each with its ordered point names.

    Parameters
    ----------
    name : str
        Identifier of the schema, saved with checkpoints and predictions.
    levels : sequence of Level
        Levels in cranio-caudal order.

    Examples
    --------
    >>> from spinelandmarks.schema import LUMBAR_SAGITTAL as S
    >>> S.num_points, S.index("L2", "anterior_superior"), S.level_point(21)
    (22, 4, ('S1', 'posterior_superior'))
    """

    name: str
    levels: tuple[Level, ...]
    _index: dict[tuple[str, str], int] = field(init=False, repr=False, compare=False)
    _level_index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(self.levels))
        if not self.levels:
            raise ValueError(f"schema {self.name!r} has no levels")
        names = [lv.name for lv in self.levels]
        if len(set(names)) != len(names):
            raise ValueError(f"schema {self.name!r} has duplicate level names: {names}")
        index: dict[tuple[str, str], int] = {}
        for lv in self.levels:
            for p in lv.points:
                index[(lv.name, p)] = len(index)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_level_index", {n: i for i, n in enumerate(names)})

    # -- sizes and names -------------------------------------------------------------------
    @property
    def num_levels(self) -> int:
        return len(self.levels)

    @property
    def num_points(self) -> int:
        return len(self._index)

    @property
    def level_names(self) -> tuple[str, ...]:
        return tuple(lv.name for lv in self.levels)

    @property
    def point_names(self) -> tuple[str, ...]:
        """Flat names ``<LEVEL>_<point>`` in flat index order."""
        return tuple(f"{lv}_{p}" for (lv, p) in self._index)

    @property
    def max_points_per_level(self) -> int:
        return max(len(lv.points) for lv in self.levels)

    # -- index helpers ---------------------------------------------------------------------
    def index(self, level: str, point: str) -> int:
        """Flat index of ``point`` of ``level``; KeyError names what is unknown."""
        try:
            return self._index[(level, point)]
        except KeyError:
            if level not in self._level_index:
                raise KeyError(f"unknown level {level!r} in schema {self.name!r}; "
                               f"known: {list(self.level_names)}") from None
            raise KeyError(f"unknown point {point!r} of level {level!r} in schema {self.name!r}; "
                           f"known: {list(self.level(level).points)}") from None

    def level_point(self, index: int) -> tuple[str, str]:
        """Inverse of :meth:`index`: ``(level, point)`` of a flat index."""
        if not 0 <= index < self.num_points:
            raise IndexError(f"point index {index} out of range for {self.num_points} points")
        lv = self.levels[int(self.point_level[index])]
        return lv.name, lv.points[index - self.level_offset(lv.name)]

    def parse_point_name(self, flat_name: str) -> tuple[str, str]:
        """Split a flat ``<LEVEL>_<point>`` name (the single-category COCO form)."""
        level, _, point = flat_name.partition("_")
        self.index(level, point)
        return level, point

    def level(self, name: str) -> Level:
        return self.levels[self.level_index(name)]

    def level_index(self, name: str) -> int:
        try:
            return self._level_index[name]
        except KeyError:
            raise KeyError(f"unknown level {name!r} in schema {self.name!r}; "
                           f"known: {list(self.level_names)}") from None

    def level_offset(self, name: str) -> int:
        """Flat index of the first point of a level."""
        return self._index[(name, self.level(name).points[0])]

    def level_indices(self, name: str) -> list[int]:
        """Flat indices of all points of a level, in order."""
        off = self.level_offset(name)
        return list(range(off, off + len(self.level(name).points)))

    @property
    def point_level(self) -> torch.Tensor:
        """(P,) long tensor: level index of every flat point."""
        return torch.tensor([self._level_index[lv] for (lv, _) in self._index], dtype=torch.long)

    def level_point_table(self) -> torch.Tensor:
        """(num_levels, max_points_per_level) long tensor of flat indices, -1 where a level has fewer."""
        table = torch.full((self.num_levels, self.max_points_per_level), -1, dtype=torch.long)
        for i, lv in enumerate(self.levels):
            idx = self.level_indices(lv.name)
            table[i, : len(idx)] = torch.tensor(idx)
        return table

    # -- anatomy helpers -------------------------------------------------------------------
    @property
    def refined_levels(self) -> tuple[str, ...]:
        """Levels the step-2 refiner predicts in an oriented crop: every level but the
        femoral heads (``FH``), whose two centres lie too close together to orient and size
        a crop; their step-1 points stand."""
        return tuple(lv.name for lv in self.levels if lv.name != NON_VERTEBRAL_LEVEL)

    @property
    def body_levels(self) -> tuple[str, ...]:
        """Levels with all four corners of a vertebral body."""
        return tuple(lv.name for lv in self.levels if lv.has_body)

    def corner_indices(self) -> torch.Tensor:
        """(num_body_levels, 4) flat indices of the corners, in ``CORNERS`` order."""
        rows = [[self.index(lv, c) for c in CORNERS] for lv in self.body_levels]
        return torch.tensor(rows, dtype=torch.long).reshape(-1, 4)

    def endplates(self) -> tuple[Endplate, ...]:
        """Every endplate the schema can draw, cranio-caudal, superior before inferior."""
        out: list[Endplate] = []
        for lv in self.levels:
            pts = lv.points
            if "posterior_superior" in pts and "anterior_superior" in pts:
                out.append(Endplate(lv.name, "superior", self.index(lv.name, "posterior_superior"),
                                    self.index(lv.name, "anterior_superior")))
            if "posterior_inferior" in pts and "anterior_inferior" in pts:
                out.append(Endplate(lv.name, "inferior", self.index(lv.name, "posterior_inferior"),
                                    self.index(lv.name, "anterior_inferior")))
        return tuple(out)

    def endplate(self, level: str, side: Literal["superior", "inferior"]) -> Endplate:
        for e in self.endplates():
            if e.level == level and e.side == side:
                return e
        raise KeyError(f"schema {self.name!r} has no {side} endplate for level {level!r}")

    def has_endplate(self, level: str, side: Literal["superior", "inferior"]) -> bool:
        return any(e.level == level and e.side == side for e in self.endplates())

    # -- serialization ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name,
                "levels": [{"name": lv.name, "points": list(lv.points)} for lv in self.levels]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LandmarkSchema:
        """Build from ``{"name": ..., "levels": [{"name": "L1", "points": [...]}, ...]}``."""
        try:
            levels = tuple(Level(str(lv["name"]), tuple(str(p) for p in lv["points"]))
                           for lv in data["levels"])
            return cls(str(data["name"]), levels)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"invalid schema description: missing or malformed {exc}") from exc

    def save(self, path: str | PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | PathLike[str]) -> LandmarkSchema:
        p = Path(path)
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except (json.JSONDecodeError, ValueError) as exc:
            raise ValueError(f"{p}: {exc}") from exc

    @classmethod
    def from_levels(cls, name: str, levels: Iterable[str],
                    points: Sequence[str] = CORNERS,
                    overrides: Mapping[str, Sequence[str]] | None = None) -> LandmarkSchema:
        """Schema whose levels share one point list, with per-level ``overrides``."""
        overrides = overrides or {}
        return cls(name, tuple(Level(lv, tuple(overrides.get(lv, points))) for lv in levels))


#: The 22-point lumbar schema of the reference study (L1-L5 four corners, S1 superior plate).
LUMBAR_SAGITTAL = LandmarkSchema.from_levels(
    "lumbar_sagittal", ["L1", "L2", "L3", "L4", "L5", "S1"],
    overrides={"S1": ("anterior_superior", "posterior_superior")},
)

#: The two femoral head centres (level ``FH``); their midpoint is the hip axis.
FEMORAL_HEADS = Level("FH", ("centre_1", "centre_2"))

#: Lumbar schema plus the femoral head centres: spinopelvic balance (PI, PT, SS, LL).
LUMBOPELVIC_SAGITTAL = LandmarkSchema("lumbopelvic_sagittal",
                                      (*LUMBAR_SAGITTAL.levels, FEMORAL_HEADS))

#: Six points per lumbar body (corners and the middle of each endplate): morphometry.
LUMBAR_MORPHOMETRY = LandmarkSchema.from_levels(
    "lumbar_morphometry", ["L1", "L2", "L3", "L4", "L5", "S1"],
    points=(*CORNERS, "middle_superior", "middle_inferior"),
    overrides={"S1": ("anterior_superior", "posterior_superior")},
)

#: Vertebrae of :data:`WHOLE_SPINE_SAGITTAL` with four corners, cranio-caudal: C7 to L5.
WHOLE_SPINE_BODIES: tuple[str, ...] = (
    "C7", *(f"T{i}" for i in range(1, 13)), "L1", "L2", "L3", "L4", "L5")

#: A standing full-length lateral radiograph (76 points): the four corners of C7 to L5, the
#: S1 superior plate and the two femoral head centres. C7 carries all four corners (its body
#: centre is the origin of the C7 plumb line, :func:`~spinelandmarks.anatomy.alignment.sagittal_alignment`).
WHOLE_SPINE_SAGITTAL = LandmarkSchema("whole_spine_sagittal", (
    *(Level(lv, CORNERS) for lv in WHOLE_SPINE_BODIES),
    Level("S1", ("anterior_superior", "posterior_superior")), FEMORAL_HEADS))

#: Schemas known by name (``resolve_schema("lumbar_sagittal")``).
SCHEMAS: dict[str, LandmarkSchema] = {
    s.name: s for s in (LUMBAR_SAGITTAL, LUMBOPELVIC_SAGITTAL, LUMBAR_MORPHOMETRY,
                        WHOLE_SPINE_SAGITTAL)}


def resolve_schema(schema: LandmarkSchema | Mapping[str, Any] | str | PathLike[str] | None
                   ) -> LandmarkSchema:
    """A schema from an instance, its dict form, a registered name or a JSON file path.

    ``None`` gives :data:`LUMBAR_SAGITTAL`. Modules store the dict form in their
    hyper-parameters, so checkpoints stay plain data.
    """
    if schema is None:
        return LUMBAR_SAGITTAL
    if isinstance(schema, LandmarkSchema):
        return schema
    if isinstance(schema, Mapping):
        return LandmarkSchema.from_dict(schema)
    if isinstance(schema, str) and schema in SCHEMAS:
        return SCHEMAS[schema]
    if not Path(schema).is_file():
        raise ValueError(f"unknown schema {str(schema)!r}: neither a registered name "
                         f"({', '.join(SCHEMAS)}) nor a schema JSON file")
    return LandmarkSchema.load(schema)
