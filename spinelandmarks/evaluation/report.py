"""The evaluation written for people: ``report.md`` with the figures of :func:`evaluate`
(step 2 and step 1 beside the reference study, tails, level identification, clinical
measurements), ``metrics.json``, Bland-Altman, scatter and per-level error plots, and the
short summary table printed by ``evaluate`` and ``demo``."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_write, atomic_write_text
from .._types import StrPath
from ..anatomy.angles import defined_parameters, schema_parameters
from ..anatomy.measurements import SCREEN_SPECIFICITY
from ..data.annotations import ImageRecord
from ..measurement_table import ANGLE_LABELS
from ..metrics import normalized_errors
from ..schema import LandmarkSchema
from .clinical import CLINICAL_REFERENCE
from .errors import metrics_to_json, pair_records

__all__ = ["clinical_markdown", "mask_markdown", "summary_table", "write_report"]


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    f = float(v)
    if not math.isfinite(f):
        return "n/a"
    if f.is_integer() and digits == 0:
        return str(int(f))
    return f"{f:.{digits}f}"


def _pct(v: Any) -> str:
    if v is None or not math.isfinite(float(v)):
        return "n/a"
    return f"{100.0 * float(v):.1f} %"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _steps(metrics: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    out: list[tuple[str, Mapping[str, Any]]] = [("step 2", metrics["step2"])]
    if metrics.get("step1") is not None:
        out.append(("step 1", metrics["step1"]))
    return out


def _markdown(metrics: Mapping[str, Any], plots: Mapping[str, str]) -> str:
    ref = metrics["reference"]
    lines = ["# Evaluation report", "",
             f"Schema `{metrics['schema']}`: {metrics['n_images']} ground-truth image(s), "
             f"{metrics['n_predicted']} with a prediction"
             + (f", {len(metrics['missing_images'])} missed entirely"
                if metrics["missing_images"] else "")
             + (f"; {metrics['n_unmatched_predictions']} prediction(s) without ground truth "
                "ignored" if metrics["n_unmatched_predictions"] else "") + ".", "",
             "## Headline", ""]
    rows = []
    for c in metrics["comparison"].values():
        better = c["better_than_reference"]
        rows.append([c["label"], _fmt(c["ours_step2"]), _fmt(c["ours_step1"]),
                     _fmt(c["reference"]), "n/a" if better is None else _fmt(bool(better))])
    lines += _table(["Figure", "ours (step 2)", "ours (step 1)", ref["study"],
                     "step 2 better"], rows)
    lines += ["", f"Reference: {ref['study']} (test-set medians). Normalized error in percent of "
              "the ground-truth vertebra width (x) / height (y); angle errors in degrees.", ""]
    lines += ["## Tails and level identification", ""]
    lines += _table(["Figure", "ours (step 2)", "ours (step 1)"],
                    [[t["label"], _fmt(t["ours_step2"]), _fmt(t["ours_step1"])]
                     for t in metrics.get("tails", {}).values()])
    lines += ["", "A level is identified when its centre lies within half the true body height "
              "of the true centre of the same level; medians hide a spine drawn one level off, "
              "these figures do not.", ""]
    wrong = metrics["step2"].get("identification", {}).get("wrong_levels", {})
    if wrong:
        lines += [f"Images with a level not identified (step 2): {len(wrong)}", ""]
        lines += [f"- `{n}`: {', '.join(lv)}" for n, lv in list(wrong.items())[:50]] + [""]

    for title, step in _steps(metrics):
        # normalized errors where the schema has bodies, else radial errors (evaluate)
        lines += (_nle_section(step, title) if "median_nle_x_pct" in metrics["comparison"]
                  else _radial_section(step, title))
        e, s = step["euclidean"], step["sdr"]
        lines += ["", f"### Distances ({title})", ""]
        rows = [["pixels", _fmt(e["median_px"]), _fmt(e["mean_px"]), _fmt(e["n_px"], 0)],
                ["millimetres", _fmt(e["median_mm"]), _fmt(e["mean_mm"]), _fmt(e["n_mm"], 0)]]
        lines += _table(["Unit", "median", "mean", "points"], rows)
        sdr_keys = [k for k in s if k.startswith("sdr@")]
        lines += [""]
        lines += _table([k.replace("sdr@", "SDR ") for k in sdr_keys] + ["points"],
                        [[_pct(s[k]) for k in sdr_keys] + [_fmt(s["n"], 0)]])
        lines += ["", "SDR: fraction of labelled points of images with known pixel spacing "
                  "within the radius; points not found count as failures.", ""]
        d = step["detection"]
        lines += [f"### Detection ({title})", "",
                  f"- point detection rate: {_pct(d['point_detection_rate'])}",
                  f"- levels reported (presence only, wherever placed): "
                  f"{_pct(d['level_detection_rate'])} "
                  f"({_fmt(d['levels_missed'], 0)} of {_fmt(d['levels_labelled'], 0)} labelled "
                  "levels missed)",
                  f"- levels identified (on the right vertebra): "
                  f"{_pct(step.get('identification', {}).get('rate'))}; images with every "
                  f"level identified: {_pct(step.get('identification', {}).get('image_rate'))}",
                  f"- images without any prediction: {d['images_without_prediction']}", ""]

        lines += [f"## Angles ({title})", ""]
        rows = []
        for blocks in (step["angles"], step["segmental_angles"]):
            for name, a in blocks.items():
                rows.append([ANGLE_LABELS.get(name, name), _fmt(a["n"], 0), _fmt(a["missed"], 0),
                             _fmt(a["median_abs"]), _fmt(a["mean_abs"]), _fmt(a["pearson_r"], 3),
                             _fmt(a["bias"]), f"[{_fmt(a['loa_low'])}, {_fmt(a['loa_high'])}]"])
        lines += _table(["Parameter", "n", "missed", "median abs. error (deg)",
                         "mean abs. error (deg)", "Pearson r", "bias (deg)",
                         "95 % limits of agreement (deg)"], rows)
        lines += ["", "Error = predicted - ground truth; Bland-Altman limits = bias -/+ 1.96 SD.",
                  ""]

    if plots:
        lines += ["## Plots", ""]
        for label, fname in plots.items():
            lines += [f"### {label}", "", f"![{label}]({fname})", ""]
    if metrics["missing_images"]:
        lines += ["## Images without a prediction", ""]
        lines += [f"- `{n}`" for n in metrics["missing_images"]] + [""]
    return "\n".join(lines)


def _nle_section(step: Mapping[str, Any], title: str) -> list[str]:
    """Normalized localization error, overall and per level."""
    loc = step["localization"]
    lines = [f"## Localization ({title})", "",
             f"Normalized error over {_fmt(loc['n'], 0)} of {_fmt(loc['n_labelled'], 0)} "
             f"labelled points (the rest were not found).", ""]
    rows = [["all", _fmt(loc["median_x"]), _fmt(loc["median_y"]), _fmt(loc["mean_x"]),
             _fmt(loc["mean_y"]), _pct(loc["detection_rate"]), "", ""]]
    for lv, b in step["per_level"].items():
        rows.append([lv, _fmt(b["median_x"]), _fmt(b["median_y"]), _fmt(b["mean_x"]),
                     _fmt(b["mean_y"]), _pct(b["detection_rate"]),
                     f"{_fmt(b['levels_missed'], 0)} / {_fmt(b['levels_labelled'], 0)}",
                     _pct(b["level_detection_rate"])])
    lines += _table(["Level", "median x (%)", "median y (%)", "mean x (%)", "mean y (%)",
                     "point detection", "levels missed", "level detection"], rows)
    return lines


def _radial_section(step: Mapping[str, Any], title: str) -> list[str]:
    """Mean radial error and success detection rates, overall and per point (schemas
    without vertebral bodies)."""
    r = step["radial"]
    unit = r["unit"]
    sdr_keys = [k for k in r if k.startswith("sdr@")]
    lines = [f"## Localization ({title})", "",
             f"Radial error over {_fmt(r['n'], 0)} of {_fmt(r['n_labelled'], 0)} labelled "
             f"points (the rest were not found), in {unit}.", ""]
    rows = [["all", _fmt(r["mre"]), _fmt(r["sd"]), _fmt(r["median"]),
             *[_pct(r[k]) for k in sdr_keys]]]
    rows += [[name, _fmt(b["mre"]), _fmt(b["sd"]), _fmt(b["median"]),
              *[_pct(b[k]) for k in sdr_keys]] for name, b in r["per_point"].items()]
    lines += _table(["Point", f"MRE ({unit})", f"SD ({unit})", f"median ({unit})",
                     *[f"SDR {k[4:]} {unit}" for k in sdr_keys]], rows)
    lines += ["", "SDR: fraction of labelled points within the radius; points not found "
              "count as failures.", ""]
    return lines


def _save_figure(fig: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def _plots(out: Path, metrics: Mapping[str, Any], pred_records: Sequence[ImageRecord],
           gt_records: Sequence[ImageRecord], schema: LandmarkSchema,
           step1_records: Sequence[ImageRecord] | None) -> dict[str, str]:
    """Write the PNG plots; returns ``label -> file name``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p2 = pair_records(pred_records, gt_records, schema)
        p1 = pair_records(step1_records, gt_records, schema) if step1_records is not None else None
    plots: dict[str, str] = {}
    gt_params = schema_parameters(p2.gt, schema)
    pred_params = schema_parameters(p2.pred, schema)
    s1_params = schema_parameters(p1.pred, schema) if p1 is not None else None
    for name in defined_parameters(schema):
        label = ANGLE_LABELS.get(name, name)
        g, pr = gt_params[name].numpy(), pred_params[name].numpy()
        s1 = s1_params[name].numpy() if s1_params is not None else None
        r1 = (metrics.get("step1") or {}).get("angles", {}).get(name, {}).get("pearson_r")
        a = metrics["step2"]["angles"].get(name, {})
        _save_figure(_bland_altman(g, pr, a, label), out / f"bland_altman_{name}.png")
        plots[f"Bland-Altman: {label}"] = f"bland_altman_{name}.png"
        _save_figure(_scatter(g, pr, s1, a.get("pearson_r"), r1, label),
                     out / f"scatter_{name}.png")
        plots[f"Predicted vs true: {label}"] = f"scatter_{name}.png"
    if schema.body_levels:  # normalized errors are defined
        err = normalized_errors(p2.pred, p2.gt, schema, p2.visibility).numpy()  # (B, P, 2)
        _save_figure(_error_per_level(err, schema, metrics["reference"]),
                     out / "error_per_level.png")
        plots["Normalized error per level"] = "error_per_level.png"
    return plots


def _bland_altman(g: np.ndarray, pr: np.ndarray, a: Mapping[str, Any], label: str) -> Any:
    """Bland-Altman figure of one angle (step 2): differences against means, bias and LoA."""
    from matplotlib.figure import Figure

    ok = np.isfinite(g) & np.isfinite(pr)
    fig = Figure(figsize=(5, 4), dpi=100)
    ax = fig.add_subplot()
    mean, diff = (pr[ok] + g[ok]) / 2, pr[ok] - g[ok]
    ax.scatter(mean, diff, s=12, alpha=0.7, color="tab:blue", label="step 2")
    for key, style in (("bias", "-"), ("loa_low", "--"), ("loa_high", "--")):
        v = a.get(key)
        if v is not None and math.isfinite(float(v)):
            ax.axhline(float(v), color="tab:red", linestyle=style, linewidth=1)
    ax.axhline(0.0, color="grey", linewidth=0.5)
    ax.set_xlabel("mean of predicted and true (deg)")
    ax.set_ylabel("predicted - true (deg)")
    ax.set_title(f"{label}: bias {_fmt(a.get('bias'))}, "
                 f"LoA [{_fmt(a.get('loa_low'))}, {_fmt(a.get('loa_high'))}]", fontsize=9)
    if not ok.any():
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    return fig


def _scatter(g: np.ndarray, pr: np.ndarray, s1: np.ndarray | None, r2: Any, r1: Any,
             label: str) -> Any:
    """Predicted against true for one angle, step 2 (and step 1 when given), with identity."""
    from matplotlib.figure import Figure

    ok = np.isfinite(g) & np.isfinite(pr)
    fig = Figure(figsize=(4.5, 4.5), dpi=100)
    ax = fig.add_subplot()
    vals = [g[ok], pr[ok]]
    if s1 is not None:
        ok1 = np.isfinite(g) & np.isfinite(s1)
        ax.scatter(g[ok1], s1[ok1], s=10, alpha=0.5, color="tab:grey", marker="x",
                   label=f"step 1 (r = {_fmt(r1, 3)})")
        vals.append(s1[ok1])
    ax.scatter(g[ok], pr[ok], s=12, alpha=0.7, color="tab:blue",
               label=f"step 2 (r = {_fmt(r2, 3)})")
    allv = np.concatenate(vals) if vals else np.zeros(0)
    lo, hi = (float(allv.min()), float(allv.max())) if allv.size else (0.0, 1.0)
    pad = 0.05 * (hi - lo) + 1.0
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", linewidth=1,
            label="identity")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal")
    ax.set_xlabel("true (deg)")
    ax.set_ylabel("predicted (deg)")
    ax.set_title(f"{label}", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def _error_per_level(err: np.ndarray, schema: LandmarkSchema, ref: Mapping[str, Any]) -> Any:
    """Box plots of the normalized x and y errors per level, with the study's medians."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    lvl = schema.point_level.numpy()
    fig = Figure(figsize=(max(5.0, 0.9 * schema.num_levels + 2), 4), dpi=100)
    ax = fig.add_subplot()
    data: list[np.ndarray] = []
    positions: list[float] = []
    for i in range(schema.num_levels):
        for k in (0, 1):
            e = err[:, lvl == i, k].reshape(-1)
            e = e[np.isfinite(e)]
            data.append(e if e.size else np.array([math.nan]))
            positions.append(3.0 * i + k)
    bp = ax.boxplot(data, positions=positions, widths=0.8, patch_artist=True, showfliers=True,
                    flierprops={"markersize": 3}, medianprops={"color": "black"})
    for j, box in enumerate(bp["boxes"]):
        box.set_facecolor("tab:blue" if j % 2 == 0 else "tab:orange")
    ax.set_xticks([3.0 * i + 0.5 for i in range(schema.num_levels)])
    ax.set_xticklabels(list(schema.level_names))
    ax.set_ylabel("normalized error (% of vertebra size)")
    ax.set_title("Normalized error per level (step 2)", fontsize=10)
    ax.axhline(float(ref["median_nle_x_pct"]), color="tab:blue", linestyle=":", linewidth=1)
    ax.axhline(float(ref["median_nle_y_pct"]), color="tab:orange", linestyle=":", linewidth=1)
    ax.legend(handles=[Patch(facecolor="tab:blue", label="x (% of width)"),
                       Patch(facecolor="tab:orange", label="y (% of height)"),
                       Line2D([], [], color="grey", linestyle=":",
                              label=f"{ref['study']} median")],
              fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def _ci(block: Mapping[str, Any], name: str) -> str:
    lo, hi = block.get(f"{name}_ci", [math.nan, math.nan])
    ci = f" ({_fmt(lo, 3)}-{_fmt(hi, 3)})" if math.isfinite(lo) and math.isfinite(hi) else ""
    return _fmt(block.get(name), 3) + ci


def clinical_markdown(clinical: Mapping[str, Any]) -> list[str]:
    """The report's section on clinical measurements (markdown lines)."""
    ref = CLINICAL_REFERENCE
    lines = ["", "## Clinical measurements", "",
             "| measurement | n | MAE | median | bias | 95 % LoA | Pearson r | ICC(2,1) | "
             "ICC(3,1) | reference MAE |", "|---|---|---|---|---|---|---|---|---|---|"]
    unit = clinical.get("length_unit", "px")
    rows = [(f"{k} (deg)", a, ref["spinopelvic_mae_deg"].get(k))
            for k, a in clinical["angles"].items()]
    rows += [(f"{k} ({'%' if k == 'slip_pct' else k[-2:] if k.startswith('sva_') else unit})",
              a, None) for k, a in clinical["lengths"].items()]
    for label, a, r in rows:
        lines.append(f"| {label} | {a['n']} | {_fmt(a['mae'])} | {_fmt(a['median_ae'])} | "
                     f"{_fmt(a['bias'])} | {_fmt(a['loa_low'])} to {_fmt(a['loa_high'])} | "
                     f"{_fmt(a['pearson_r'], 3)} | {_fmt(a['icc2_1'], 3)} | "
                     f"{_fmt(a['icc3_1'], 3)} | {_fmt(r, 1)} |")
    notes = {a["icc_note"] for _, a, _ in rows if "icc_note" in a}
    lines += [f"\n{n}." for n in sorted(notes)]
    if "fractures" not in clinical:  # a schema without vertebral bodies
        return lines
    lines += ["", "Fractures (Genant grade from the points; 95 % bootstrap CI):", "",
              "| fracture | level | accuracy | sensitivity | specificity | AUC (height loss) "
              "| reference acc. / sens. / spec. |", "|---|---|---|---|---|---|---|"]
    for key, label in (("fractures", "grade >= 1"), ("fractures_grade2", "grade >= 2")):
        for unit_, name in (("per_vertebra", "vertebra"), ("per_patient", "patient")):
            b, r = clinical[key][unit_], ref["fracture"][unit_]
            lines.append(f"| {label} | {name} (n {b['n']}, {b['positives']} fractured) | "
                         f"{_ci(b, 'accuracy')} | {_ci(b, 'sensitivity')} | "
                         f"{_ci(b, 'specificity')} | {_ci(b, 'auc')} | {r['accuracy']} / "
                         f"{r['sensitivity']} / {r['specificity']} |")
        right = clinical[key]["right_levels"]
        lines.append(f"| {label} | right levels among patients found | "
                     f"{_fmt(right['share'], 3)} (n {right['n']}) | | | | |")
    if "fracture_screen" in clinical:
        screen = clinical["fracture_screen"]
        for unit_, name in (("per_vertebra", "vertebra"), ("per_patient", "patient")):
            b = screen[unit_]
            lines.append(f"| grade >= 2, suspected (screen) | {name} (n {b['n']}, "
                         f"{b['positives']} fractured) | {_ci(b, 'accuracy')} | "
                         f"{_ci(b, 'sensitivity')} | {_ci(b, 'specificity')} | | |")
        lines.append("\nSuspected fractures: bodies whose predicted height loss reaches the "
                     "pipeline's `fracture_screen_loss`, fitted on validation images for a "
                     f"per-vertebra specificity of {SCREEN_SPECIFICITY} (docs/conventions.md).")
    return lines + _fracture_lines(clinical.get("fracture_lines", []))


def _fracture_lines(rows: Sequence[Mapping[str, float]]) -> list[str]:
    """Grade >= 2 fractures read at each height-loss line (choose an operating point)."""
    if not rows:
        return []
    lines = ["", "Grade >= 2 fractures read at other height-loss lines (a body is flagged when "
             "its predicted loss reaches the line):", "",
             "| line | vertebra sensitivity | vertebra specificity | patient accuracy | "
             "patient sensitivity | patient specificity | right levels |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {_fmt(r['threshold'])} | {_fmt(r['sensitivity'], 3)} | "
                     f"{_fmt(r['specificity'], 3)} | {_fmt(r['patient_accuracy'], 3)} | "
                     f"{_fmt(r['patient_sensitivity'], 3)} | "
                     f"{_fmt(r['patient_specificity'], 3)} | {_fmt(r['right_levels'], 3)} |")
    return lines


def mask_markdown(masks: Mapping[str, Any]) -> list[str]:
    """The report's section on vertebral body masks."""
    unit = "mm" if masks["hd95_unit"] == "mm" else "px"
    lines = ["", "## Vertebral body masks", "",
             f"| level | n | Dice mean | Dice median | Dice min | IoU mean | HD95 mean ({unit}) "
             f"| HD95 median ({unit}) |", "|---|---|---|---|---|---|---|---|"]
    for lv, m in masks["per_level"].items():
        d, i, h = m["dice"], m["iou"], m["hd95"]
        lines.append(f"| {lv} | {d['n']} | {_fmt(d['mean'], 3)} | {_fmt(d['median'], 3)} | "
                     f"{_fmt(d['min'], 3)} | {_fmt(i['mean'], 3)} | {_fmt(h['mean'])} | "
                     f"{_fmt(h['median'])} |")
    img = masks["per_image"]
    lines += ["", f"Mean Dice per image {_fmt(img['mean'], 3)} (median {_fmt(img['median'], 3)},"
              f" n {img['n']}); levels with a reference mask and no prediction: "
              f"{masks['missed']} (Dice 0). Published: mean Dice 0.9 on lateral cervical and "
              "lumbar radiographs (U-Net + Mask R-CNN ensemble); 0.78-0.82 for L1-L4 on CT."]
    return lines


def write_report(metrics: Mapping[str, Any], out_dir: StrPath, *,
                 pred_records: Sequence[ImageRecord], gt_records: Sequence[ImageRecord],
                 schema: LandmarkSchema,
                 step1_records: Sequence[ImageRecord] | None = None) -> Path:
    """Write ``metrics.json``, ``report.md`` and the PNG plots of an evaluation.

    Parameters
    ----------
    metrics : dict
        Result of :func:`evaluate` on the same records.
    out_dir : str or PathLike
        Folder (created if needed).
    pred_records, gt_records, step1_records, schema
        The records :func:`evaluate` was given (the plots need per-image values).

    Returns
    -------
    Path
        ``out_dir / "report.md"``. Also written: ``metrics.json`` (strict JSON, NaN as
        ``null``), ``bland_altman_<parameter>.png`` and ``scatter_<parameter>.png`` for
        each of ``l1_l5_lordosis``, ``l1_s1_lordosis``, ``sacral_slope``, and
        ``error_per_level.png``. Every file is written atomically.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", metrics_to_json(metrics))
    plots = _plots(out, metrics, pred_records, gt_records, schema, step1_records)
    report = out / "report.md"
    extra = clinical_markdown(metrics["clinical"]) if metrics.get("clinical") else []
    extra += mask_markdown(metrics["masks"]) if metrics.get("masks") else []
    atomic_write_text(report, _markdown(metrics, plots) + "\n".join(extra) + "\n")
    return report


def summary_table(metrics: dict[str, Any]) -> str:
    """Headline figures next to the reference study's, then the tails and level identification."""
    rows = list(metrics["comparison"].values())

    def fmt(v: float | None) -> str:
        return f"{v:9.2f}" if v is not None and v == v else f"{'-':>9}"

    tails = list(metrics.get("tails", {}).values())
    width = max(len(r["label"]) for r in rows + tails)
    lines = [f"{'':{width}}  {'step 2':>9}  {'step 1':>9}  {'Cina 2021':>9}"]
    for r in rows:
        lines.append(f"{r['label']:{width}}  {fmt(r['ours_step2'])}  {fmt(r['ours_step1'])}  "
                     f"{fmt(r['reference'])}")
    for r in tails:
        lines.append(f"{r['label']:{width}}  {fmt(r['ours_step2'])}  {fmt(r['ours_step1'])}")
    return "\n".join(lines)
