"""Summarize results of ``benchmarks/adapt.py`` across runs: learning curves and targets.

``adapt.py`` writes one ``results.json`` per invocation (``benchmarks/notes/adapt_*.json`` are
copies). This script merges several, keeps the last file's row where two files measured the
same cell, averages the random draws (mean, with the range over draws), and prints two
Markdown tables: every cell as a learning curve (pair, K, how chosen, with or without the
unlabeled archive), and the issue's targets checked per pair.

Usage
-----
    python benchmarks/adapt_summary.py benchmarks/notes/adapt_A_C_2026-12-05.json ...
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from adapt import _ANGLES as ANGLES  # the benchmark's angles, in its column order

#: The issue's targets for K = 10 chosen by ``select`` with the archive: (key, bound, sense).
TARGETS = (("levels_identified_images", 99.0, ">="),
           *((f"{a}_mean_abs", 1.5, "<=") for a in ANGLES),
           *((f"{a}_pearson_r", 0.95, ">=") for a in ANGLES),
           ("median_nle_x", 1.0, "<="), ("median_nle_y", 1.0, "<="), ("p95_mm", 3.0, "<="))
K0_TARGET = ("levels_identified_images", 90.0, ">=")

Key = tuple[str, str, int, str, bool, int]  # source, target, K, how, unlabeled, rounds


def load(files: list[Path]) -> dict[Key, list[dict[str, Any]]]:
    """Rows by cell (random draws together); a later file's row replaces an earlier one."""
    cells: dict[tuple[Key, int], dict[str, Any]] = {}
    for f in files:
        res = json.loads(f.read_text())
        for r in res["rows"]:  # rows copied between files carry their own rounds
            rounds = int(r.get("unlabeled_rounds", res.get("unlabeled_rounds", 1)))
            key = (r["source"], r["target"], r["k"], r["how"] if r["k"] else "-",
                   bool(r["unlabeled"]), rounds if r["unlabeled"] else 0)
            cells[(key, r["draw"])] = {**r, "commit": res["commit"]}
    grouped: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    for (key, _), row in sorted(cells.items()):
        grouped[key].append(row)
    return grouped


def _values(rows: list[dict[str, Any]], col: str) -> list[float]:
    """The column's finite values over the rows (draws)."""
    vals = [float(r[col]) for r in rows if r.get(col) is not None]
    return [v for v in vals if math.isfinite(v)]


def _value(rows: list[dict[str, Any]], col: str) -> float:
    vals = _values(rows, col)
    return sum(vals) / len(vals) if vals else math.nan


def _cell(rows: list[dict[str, Any]], col: str) -> str:
    v = _value(rows, col)
    if math.isnan(v):
        return "-"
    digits = (3 if col.endswith("pearson_r") else 0 if col == "failures" and len(rows) == 1
              else 1 if col.startswith(("levels", "fail")) else 2)
    text = f"{v:.{digits}f}"
    vals = _values(rows, col)
    if len(vals) > 1:
        text += f" ({min(vals):.{digits}f}-{max(vals):.{digits}f})"
    return text


def _misses(rows: list[dict[str, Any]], targets: tuple[tuple[str, float, str], ...]) -> str:
    out = []
    for col, bound, sense in targets:
        v = _value(rows, col)
        ok = v >= bound if sense == ">=" else v <= bound
        if not ok:
            out.append(f"{col} {v:.2f}" if not math.isnan(v) else f"{col} -")
    return "all met" if not out else "missed: " + ", ".join(out)


def curve_table(grouped: dict[Key, list[dict[str, Any]]]) -> str:
    head = ("| pair | K | chosen | archive (rounds) | draws | levels right % | mean abs. L1-L5 / "
            "L1-S1 / SS (deg) | Pearson r | median NLE x / y (%) | p95 (mm) | failures | "
            "commit |")
    lines = [head, "|" + "---|" * 12]
    for (src, tgt, k, how, unl, rounds), rows in grouped.items():
        refused = " (refused: the source's figures)" if any(r.get("refused") for r in rows) else ""
        lines.append(
            f"| {src} -> {tgt} | {k} | {how} | {'with (' + str(rounds) + ')' if unl else 'without'}"
            f"{refused} | {len(rows)} | {_cell(rows, 'levels_identified_images')} | "
            + " / ".join(_cell(rows, f"{a}_mean_abs") for a in ANGLES) + " | "
            + " / ".join(_cell(rows, f"{a}_pearson_r") for a in ANGLES) + " | "
            + f"{_cell(rows, 'median_nle_x')} / {_cell(rows, 'median_nle_y')} | "
            + f"{_cell(rows, 'p95_mm')} | {_cell(rows, 'failures')} | "
            + ", ".join(sorted({r['commit'] for r in rows})) + " |")
    return "\n".join(lines)


def _levels_right(rows: list[dict[str, Any]]) -> float:
    """Mean levels right of a cell, -inf where not measurable (for choosing the best)."""
    v = _value(rows, K0_TARGET[0])
    return -math.inf if math.isnan(v) else v


def target_table(grouped: dict[Key, list[dict[str, Any]]]) -> str:
    lines = ["| pair | K = 10 `select` + archive | K = 0 + archive (levels right >= 90 %) |",
             "|---|---|---|"]
    for src, tgt in sorted({(k[0], k[1]) for k in grouped}):
        k10 = [rows for key, rows in grouped.items()
               if key[:5] == (src, tgt, 10, "select", True)]
        k0 = [rows for key, rows in grouped.items() if key[:3] == (src, tgt, 0) and key[4]]
        lines.append(f"| {src} -> {tgt} | "
                     + (_misses(k10[-1], TARGETS) if k10 else "not measured") + " | "
                     + (_misses(max(k0, key=_levels_right), (K0_TARGET,)) if k0
                        else "not measured") + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path, help="results JSON of adapt.py")
    args = ap.parse_args()
    grouped = load(args.files)
    print(curve_table(grouped), "", target_table(grouped), sep="\n")


if __name__ == "__main__":
    main()
