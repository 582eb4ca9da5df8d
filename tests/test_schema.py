"""Landmark schema: index helpers, anatomy helpers, serialization, errors."""

from __future__ import annotations

import pytest
import torch

from spinelandmarks.schema import CORNERS, LUMBAR_SAGITTAL, LandmarkSchema, Level


def test_lumbar_schema_layout() -> None:
    s = LUMBAR_SAGITTAL
    assert s.num_points == 22 and s.num_levels == 6
    assert s.level_names == ("L1", "L2", "L3", "L4", "L5", "S1")
    assert s.index("L1", "anterior_superior") == 0
    assert s.index("L5", "anterior_inferior") == 19
    assert s.index("S1", "posterior_superior") == 21
    assert s.body_levels == ("L1", "L2", "L3", "L4", "L5")
    assert s.point_names[5] == "L2_posterior_superior"
    for i in range(s.num_points):
        assert s.index(*s.level_point(i)) == i
    assert s.point_level.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4 + [5] * 2
    table = s.level_point_table()
    assert table.shape == (6, 4) and table[5].tolist() == [20, 21, -1, -1]
    assert s.corner_indices()[1].tolist() == [4, 5, 6, 7]


def test_endplates() -> None:
    eps = LUMBAR_SAGITTAL.endplates()
    assert len(eps) == 11  # 5 bodies x 2 + S1 superior
    s1 = LUMBAR_SAGITTAL.endplate("S1", "superior")
    assert (s1.posterior, s1.anterior) == (21, 20)
    l5 = LUMBAR_SAGITTAL.endplate("L5", "inferior")
    assert (l5.posterior, l5.anterior) == (18, 19)
    assert not LUMBAR_SAGITTAL.has_endplate("S1", "inferior")
    with pytest.raises(KeyError, match="no inferior endplate for level 'S1'"):
        LUMBAR_SAGITTAL.endplate("S1", "inferior")


def test_json_round_trip(tmp_path) -> None:
    femoral = LandmarkSchema("hips", (Level("L5", CORNERS), Level("FH", ("centre", "edge"))))
    path = tmp_path / "hips.json"
    femoral.save(path)
    loaded = LandmarkSchema.load(path)
    assert loaded == femoral
    assert loaded.index("FH", "edge") == 5
    assert LandmarkSchema.from_dict(LUMBAR_SAGITTAL.to_dict()) == LUMBAR_SAGITTAL


def test_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(KeyError, match="unknown level 'T12'"):
        LUMBAR_SAGITTAL.index("T12", "anterior_superior")
    with pytest.raises(KeyError, match="unknown point 'anterior_inferior' of level 'S1'"):
        LUMBAR_SAGITTAL.index("S1", "anterior_inferior")
    with pytest.raises(ValueError, match="duplicate level names"):
        LandmarkSchema("x", (Level("A", ("p",)), Level("A", ("q",))))
    with pytest.raises(ValueError, match="contain no '_'"):
        Level("L_1", ("p",))
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x"}')
    with pytest.raises(ValueError, match=r"bad\.json"):
        LandmarkSchema.load(bad)
    assert LUMBAR_SAGITTAL.parse_point_name("L3_posterior_inferior") == ("L3", "posterior_inferior")
    assert isinstance(LUMBAR_SAGITTAL.point_level, torch.Tensor)
