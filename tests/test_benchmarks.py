"""The benchmark scripts run (tiny smoke settings); their figures live in BENCHMARKS.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def run(*args: str) -> str:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_accuracy_smoke_mode(tmp_path: Path) -> None:
    run(str(BENCH / "accuracy.py"), "--mode", "smoke", "--out", str(tmp_path),
        "--train-fracture-rate", "1.0", "--deformity-weight", "2", "--time-budget", "60,60,60")
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["mode"] == "smoke" and res["headline"]["n_images"] == 4
    assert res["train_fracture_rate"] == 1.0 and res["deformity_weight"] == 2.0
    assert res["time_budget_s"] == {"detector": 60.0, "landmark": 60.0, "refiner": 60.0}
    assert "training seconds 60/60/60" in (tmp_path / "results.md").read_text()

    def fractured(split: str) -> list[bool]:
        images = json.loads((tmp_path / split / "annotations.json").read_text())["images"]
        return [bool(im["synthetic"]["fractures"]) for im in images]

    assert all(fractured("train"))  # enriched: every training phantom has a fracture
    assert not all(fractured("test"))  # the test phantoms keep the generator's 15 %
    assert set(res["slices"]) == {"fracture", "listhesis", "implants", "low_dose",
                                  "strong_rotation"}
    assert 0.0 <= res["level_presence_rate"] <= 1.0
    assert "levels_identified_images" in res["headline"]["tails"]
    assert "Cina et al. 2021" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
def test_cross_style_smoke_mode(tmp_path: Path) -> None:
    run(str(BENCH / "accuracy.py"), "--mode", "cross-smoke", "--out", str(tmp_path),
        "--runs", "A,mix", "--test-images", "3")
    res = json.loads((tmp_path / "cross_results.json").read_text())
    assert set(res["rows"]) == {f"{m} -> {t}" for m in ("A", "mix") for t in "ABC"}
    for key in ("A -> B", "mix -> C"):  # C: the held-out style, never trained on
        row = res["rows"][key]
        assert row["n_images"] == 3 and row["failures"] + row["good"] == 3
    assert row["failures_flagged"] is not None  # the current pipeline writes needs_review
    assert "train -> test" in (tmp_path / "cross_results.md").read_text()


def test_dsnt_speed_reports_parity() -> None:
    out = run(str(BENCH / "dsnt_speed.py"), "--shape", "4", "3", "16", "12", "--repeats", "2")
    diff = float(out.split("max |coords diff| = ")[1].split(",")[0])
    assert diff < 1e-6 and "ratio" in out


def test_adapt_grid_order_and_size() -> None:
    sys.path.insert(0, str(BENCH))
    from adapt import Cell, cells

    grid = cells([("A", "C")], [0, 10], 3, ["random", "select"], [False, True])
    # K = 0 once (nothing to choose); K = 10: three random draws and one selection, each
    # without and then with the unlabeled images
    assert grid[:4] == [Cell("A", "C", 0, "random", 0, False),
                        Cell("A", "C", 0, "random", 0, True),
                        Cell("A", "C", 10, "random", 0, False),
                        Cell("A", "C", 10, "random", 0, True)]
    assert len(grid) == 2 + 2 * (3 + 1)
    assert grid[-1].name == "k10_select0_unlabeled"
    full = cells([(s, t) for s in "ABC" for t in "ABC" if s != t], [0, 5, 10, 20], 3,
                 ["random", "select"], [False, True])
    assert len(full) == 6 * (2 + 3 * 2 * 4)


def _adapt_row(k: int, how: str, draw: int, unlabeled: bool, levels: float, ss: float,
               **extra: object) -> dict[str, object]:
    row: dict[str, object] = {
        "source": "A", "target": "C", "k": k, "how": how, "draw": draw, "unlabeled": unlabeled,
        "levels_identified_images": levels, "median_nle_x": 0.5, "median_nle_y": 0.8,
        "p95_mm": 1.2, "failures": 1, "refused": None, **extra}
    for a in ("l1_l5_lordosis", "l1_s1_lordosis", "sacral_slope"):
        row[f"{a}_mean_abs"], row[f"{a}_pearson_r"] = (ss if a == "sacral_slope" else 1.0), 0.99
    return row


def test_adapt_summary_merges_runs_averages_draws_and_names_misses(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    from adapt_summary import curve_table, load, target_table

    old = {"commit": "aaa", "unlabeled_rounds": 1,
           "rows": [_adapt_row(10, "select", 0, True, 90.0, 9.0)]}
    new = {"commit": "bbb", "unlabeled_rounds": 1, "rows": [
        _adapt_row(10, "select", 0, True, 100.0, 1.6),  # the same cell again: replaces aaa's
        _adapt_row(10, "random", 0, False, 96.0, 1.0),
        _adapt_row(10, "random", 1, False, 100.0, 2.0),
        _adapt_row(0, "random", 0, True, 92.0, 3.0, unlabeled_rounds=2)]}
    files = []
    for name, res in (("old.json", old), ("new.json", new)):
        files.append(tmp_path / name)
        files[-1].write_text(json.dumps(res))
    grouped = load(files)
    assert [r["commit"] for r in grouped[("A", "C", 10, "select", True, 1)]] == ["bbb"]
    assert len(grouped[("A", "C", 10, "random", False, 0)]) == 2
    assert ("A", "C", 0, "-", True, 2) in grouped  # the row's own rounds, not the file's
    curve = curve_table(grouped)
    # two draws: levels 98.0 (96.0-100.0), SS 1.50 (1.00-2.00)
    assert "| A -> C | 10 | random | without | 2 | 98.0 (96.0-100.0) |" in curve
    assert "1.50 (1.00-2.00)" in curve
    assert target_table(grouped).splitlines()[-1] == (
        "| A -> C | missed: sacral_slope_mean_abs 1.60 | all met |")
