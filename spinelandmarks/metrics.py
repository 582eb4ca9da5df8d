"""Localization metrics, batched and vectorized in torch; the clinical definitions they use
are in :mod:`spinelandmarks.anatomy`.

Every function works on a batch of point sets ``points`` of shape ``(B, P, 2)`` in pixel
coordinates ``(x, y)`` (conventions section 1), ordered as the flat points of a
:class:`~spinelandmarks.schema.LandmarkSchema`. An absent point is a NaN coordinate and/or a
zero in an optional visibility mask ``(B, P)`` (0 = absent, 1 or 2 = labelled). Absent inputs
propagate as NaN: a quantity that needs an absent point is NaN, never a number computed from a
placeholder.

Functional API

- :func:`normalized_errors`, :func:`euclidean_errors`.
- :func:`level_identification` -- each level on the right vertebra?
Metric classes (:class:`torchmetrics.Metric`). They buffer per-sample values in flat (1-D) list
states reduced with ``dist_reduce_fx="cat"``, so ``compute()`` after a DDP sync sees the samples
of every process and medians / correlations are exact, not averages of per-process figures (a
process without samples contributes an empty tensor). States are kept in the metric's dtype
(float32 unless changed with ``metric.set_dtype(torch.float64)``), whatever the input dtype.
``compute()`` returns ``dict[str, Tensor]`` ready for ``LightningModule.log_dict``.

- :class:`NormalizedLocalizationError` -- median / mean of x and y normalized errors, per level,
  and the detection rate.
- :class:`EuclideanError` -- median / mean Euclidean error in pixels and mm.
- :class:`SuccessDetectionRate` -- fraction of points within 2, 2.5, 3, 4 mm.
- :class:`RadialError` -- mean radial error and success detection rates per point and
  overall, in mm (pixels without spacing): schemas of points without vertebral bodies.
- :class:`AngleError` -- angle errors, Pearson r and Bland-Altman limits of agreement.
- :class:`LevelIdentification` -- levels on the right vertebra, per level and per image.

Tails. Next to every median the classes report the mean, the 95th percentile and an outlier
rate (points more than :data:`OUTLIER_MM` or :data:`OUTLIER_PCT` of the body size away): a few
gross failures (a level on the wrong vertebra) barely move a median.

Missed detections. A predicted point that is NaN (the model did not find its level) is a *miss*.
It has no error: error figures are taken over the points with a finite prediction, and misses are
reported separately as a detection rate (``NormalizedLocalizationError``), a ``missed`` count
(``AngleError``) or as failures (``SuccessDetectionRate``), never dropped silently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from ._deprecation import moved_names
from .anatomy._points import _check_points, _masked, _nan, _present
from .anatomy.angles import LUMBAR_PARAMETERS as _LUMBAR_PARAMETERS
from .anatomy.angles import wrap_angle as _wrap_angle
from .anatomy.vertebrae import level_centres as _level_centres
from .anatomy.vertebrae import vertebra_size as _vertebra_size
from .schema import LUMBAR_SAGITTAL, LandmarkSchema

__all__ = [
    "OUTLIER_MM",
    "OUTLIER_PCT",
    "RADIAL_THRESHOLDS",
    "AngleError",
    "EuclideanError",
    "LevelIdentification",
    "NormalizedLocalizationError",
    "RadialError",
    "SuccessDetectionRate",
    "euclidean_errors",
    "level_identification",
    "normalized_errors",
]

#: Names that moved to :mod:`spinelandmarks.anatomy` in 0.2 (served here until 0.3).
__getattr__ = moved_names(__name__, {
    **dict.fromkeys(("LUMBAR_PARAMETERS", "LUMBAR_PARAMETER_ENDPLATES", "defined_parameters",
                     "endplate_tilts", "facing", "lordosis", "lumbar_parameters",
                     "lumbar_parameters_or_nan", "schema_parameters", "segmental_angle_names",
                     "segmental_angles", "wrap_angle"), "spinelandmarks.anatomy.angles"),
    **dict.fromkeys(("level_centres", "vertebra_size"), "spinelandmarks.anatomy.vertebrae")})


#: A point further than this from the truth is an outlier (:class:`EuclideanError`), mm.
OUTLIER_MM: float = 5.0
#: A point whose x or y error exceeds this share of its vertebra's width / height is an
#: outlier (:class:`NormalizedLocalizationError`), percent.
OUTLIER_PCT: float = 10.0




# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _median(x: Tensor) -> Tensor:
    """Median of the finite values of ``x`` (mean of the two middle ones, like NumPy); NaN if none."""
    x = x[torch.isfinite(x)]
    n = x.numel()
    if n == 0:
        return _nan(x)
    s = torch.sort(x).values
    return (s[(n - 1) // 2] + s[n // 2]) / 2


def _quantile(x: Tensor, q: float) -> Tensor:
    """``q``-quantile of the finite values of ``x`` (linear interpolation, like NumPy); NaN if none."""
    x = x[torch.isfinite(x)]
    if x.numel() == 0:
        return _nan(x)
    return torch.quantile(x, q)


def _share(flags: Tensor, counted: Tensor) -> Tensor:
    """Fraction of ``counted`` entries whose flag is set; NaN when nothing is counted."""
    n = counted.sum()
    if int(n) == 0:
        return torch.full((), math.nan, dtype=torch.float64, device=flags.device)
    return (flags & counted).sum().double() / n


def _mean(x: Tensor) -> Tensor:
    """Mean of the finite values of ``x``; NaN if none."""
    x = x[torch.isfinite(x)]
    return x.mean() if x.numel() else _nan(x)


def _cat_state(state: list[Tensor] | Tensor, like: Tensor) -> Tensor:
    """Concatenate a 1-D list state (empty list -> empty tensor)."""
    if isinstance(state, Tensor):
        return state.reshape(-1)
    if len(state) == 0:
        return like.new_empty((0,))
    return dim_zero_cat([s.reshape(-1) for s in state])



# ---------------------------------------------------------------------------------------------
# localization errors
# ---------------------------------------------------------------------------------------------
def normalized_errors(pred: Tensor, gt: Tensor, schema: LandmarkSchema = LUMBAR_SAGITTAL,
                      visibility: Tensor | None = None) -> Tensor:
    """Normalized localization error of every point, in percent of its vertebra's size.

    Parameters
    ----------
    pred : Tensor, shape (B, P, 2)
        Predicted pixel coordinates; NaN where the model did not find the point.
    gt : Tensor, shape (B, P, 2)
        Ground-truth pixel coordinates; NaN where not labelled.
    schema : LandmarkSchema
        Schema of the points.
    visibility : Tensor, shape (B, P), optional
        Ground-truth visibility; 0 marks an unlabelled point (also excluded from the sizes).

    Returns
    -------
    Tensor, shape (B, P, 2)
        ``100 * |x_pred - x_gt| / W`` and ``100 * |y_pred - y_gt| / H`` with W, H of the point's
        own ground-truth level (:func:`~spinelandmarks.anatomy.vertebrae.vertebra_size`). NaN where the ground truth is absent,
        where the size cannot be measured and where the prediction is NaN. Callers count a
        NaN prediction of a labelled point as *missed* (detection rate), not as an error.
    """
    _check_points(pred, schema, "pred")
    _check_points(gt, schema, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} differ in shape")
    gt = _masked(gt, visibility)
    width, height = _vertebra_size(gt, schema)
    lvl = schema.point_level.to(gt.device)
    size = torch.stack([width[:, lvl], height[:, lvl]], dim=-1)  # (B, P, 2)
    return 100.0 * (pred.to(gt.dtype) - gt).abs() / size


def euclidean_errors(pred: Tensor, gt: Tensor, pixel_spacing: Tensor | None = None,
                     visibility: Tensor | None = None) -> Tensor:
    """Euclidean distance between predicted and ground-truth points.

    Parameters
    ----------
    pred, gt : Tensor, shape (B, P, 2)
        Pixel coordinates ``(x, y)``; NaN where absent / not found.
    pixel_spacing : Tensor, shape (B, 2), optional
        ``(row_mm, col_mm)`` per image (the DICOM / COCO order): x is scaled by ``col_mm`` and
        y by ``row_mm``. NaN rows give NaN distances.
    visibility : Tensor, shape (B, P), optional
        Ground-truth visibility; 0 marks an unlabelled point.

    Returns
    -------
    Tensor, shape (B, P)
        Pixels, or millimetres when ``pixel_spacing`` is given; NaN where either point is absent.
    """
    _check_points(pred, None, "pred")
    _check_points(gt, None, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} differ in shape")
    gt = _masked(gt, visibility)
    d = pred.to(gt.dtype) - gt
    if pixel_spacing is not None:
        sp = pixel_spacing.to(device=gt.device, dtype=gt.dtype)
        if sp.shape != (gt.shape[0], 2):
            raise ValueError(f"pixel_spacing must have shape ({gt.shape[0]}, 2), "
                             f"got {tuple(sp.shape)}")
        d = d * sp.flip(-1).unsqueeze(1)  # (col_mm, row_mm) multiplies (dx, dy)
    return torch.linalg.vector_norm(d, dim=-1)


def level_identification(pred: Tensor, gt: Tensor, schema: LandmarkSchema = LUMBAR_SAGITTAL,
                         visibility: Tensor | None = None) -> Tensor:
    """Whether each labelled level was identified: found, and on the right vertebra.

    A predicted level is *identified* when its centre (:func:`~spinelandmarks.anatomy.vertebrae.level_centres`) lies within half
    the ground-truth body height (:func:`~spinelandmarks.anatomy.vertebrae.vertebra_size`; L5's for S1) of the ground-truth centre
    of the same level. A level predicted on the neighbouring vertebra is about one body height
    plus a disc away, so it fails, as does a level not found (NaN prediction).

    Parameters
    ----------
    pred, gt : Tensor, shape (B, P, 2)
        Predicted and ground-truth pixel coordinates, NaN where absent / not found.
    schema : LandmarkSchema
        Schema of the points.
    visibility : Tensor, shape (B, P), optional
        Ground-truth visibility; 0 marks an unlabelled point.

    Returns
    -------
    Tensor, shape (B, num_levels)
        1.0 identified, 0.0 not identified (missed or misplaced), NaN where the ground truth
        cannot judge it (the level is not fully labelled or its height is unknown).
    """
    _check_points(pred, schema, "pred")
    _check_points(gt, schema, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} differ in shape")
    gt = _masked(gt, visibility)
    _, height = _vertebra_size(gt, schema)
    c_gt = _level_centres(gt, schema)
    c_pred = _level_centres(pred.to(gt.dtype), schema)
    dist = torch.linalg.vector_norm(c_pred - c_gt, dim=-1)  # NaN if the prediction is missing
    judged = torch.isfinite(c_gt).all(dim=-1) & torch.isfinite(height) & (height > 0)
    ok = (dist <= 0.5 * height).to(gt.dtype)  # NaN compares False: a miss is not identified
    return ok.masked_fill(~judged, math.nan)


# ---------------------------------------------------------------------------------------------
# torchmetrics classes
# ---------------------------------------------------------------------------------------------
class NormalizedLocalizationError(Metric):
    """Normalized localization error (percent of vertebra width / height) and detection rate.

    Parameters
    ----------
    schema : LandmarkSchema
        Schema of the points.
    **kwargs
        Passed to :class:`torchmetrics.Metric` (``sync_on_compute``, ``process_group``, ...).

    Notes
    -----
    ``update(pred, gt, visibility=None)`` takes ``(B, P, 2)`` pixel coordinates and an optional
    ``(B, P)`` ground-truth visibility. ``compute()`` returns, over every labelled point of every
    image seen (by every process under DDP):

    - ``median_x``, ``median_y``, ``mean_x``, ``mean_y``, ``p95_x``, ``p95_y`` (95th
      percentiles) -- percent, over labelled points with a finite prediction and a measurable
      vertebra size (the headline figures are the medians);
    - ``outlier_rate`` -- fraction of those points whose x or y error exceeds
      :data:`OUTLIER_PCT` (10 % of the vertebra's width or height);
    - ``detection_rate`` -- fraction of labelled points whose prediction is finite;
    - ``n`` -- number of points in the error figures, ``n_labelled`` -- labelled points;
    - per level ``<LEVEL>/median_x`` ... ``<LEVEL>/outlier_rate`` and
      ``<LEVEL>/detection_rate``.

    Figures without any sample are NaN.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    errors: list[Tensor]
    labelled: list[Tensor]
    detected: list[Tensor]

    def __init__(self, schema: LandmarkSchema = LUMBAR_SAGITTAL, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.schema = schema
        # All states are flat (1-D) so that an empty state on one process concatenates cleanly.
        self.add_state("errors", default=[], dist_reduce_fx="cat")
        self.add_state("labelled", default=[], dist_reduce_fx="cat")
        self.add_state("detected", default=[], dist_reduce_fx="cat")

    def update(self, pred: Tensor, gt: Tensor, visibility: Tensor | None = None) -> None:
        """Add a batch: ``pred``, ``gt`` (B, P, 2) pixels, ``visibility`` (B, P) optional."""
        pred, gt = pred.detach().to(self.dtype), gt.detach().to(self.dtype)
        gt = _masked(gt, None if visibility is None else visibility.detach())
        err = normalized_errors(pred, gt, self.schema)
        labelled = _present(gt)
        detected = _present(pred) & labelled
        self.errors.append(err.reshape(-1))
        self.labelled.append(labelled.reshape(-1).to(err.dtype))
        self.detected.append(detected.reshape(-1).to(err.dtype))

    def compute(self) -> dict[str, Tensor]:
        """Dict of median / mean errors (percent) and detection rates; see the class notes."""
        ref = torch.zeros((), dtype=self.dtype, device=self.device)
        p = self.schema.num_points
        err = _cat_state(self.errors, ref).reshape(-1, p, 2)
        labelled = _cat_state(self.labelled, ref).reshape(-1, p) > 0
        detected = _cat_state(self.detected, ref).reshape(-1, p) > 0
        ref = err.new_zeros(())

        def figures(e: Tensor, lab: Tensor, det: Tensor, prefix: str) -> dict[str, Tensor]:
            ex, ey = e[..., 0][lab], e[..., 1][lab]
            n_lab = lab.sum()
            rate = det.sum().to(ref.dtype) / n_lab if int(n_lab) > 0 else _nan(ref)
            ok = lab & torch.isfinite(e).all(dim=-1)
            outlier = (e > OUTLIER_PCT).any(dim=-1)
            return {f"{prefix}median_x": _median(ex), f"{prefix}median_y": _median(ey),
                    f"{prefix}mean_x": _mean(ex), f"{prefix}mean_y": _mean(ey),
                    f"{prefix}p95_x": _quantile(ex, 0.95), f"{prefix}p95_y": _quantile(ey, 0.95),
                    f"{prefix}outlier_rate": _share(outlier, ok).to(ref.dtype),
                    f"{prefix}detection_rate": rate}

        out = figures(err, labelled, detected, "")
        ok = labelled & torch.isfinite(err).all(dim=-1)
        out["n"] = ok.sum().to(ref.dtype)
        out["n_labelled"] = labelled.sum().to(ref.dtype)
        lvl = self.schema.point_level.to(err.device)
        for i, name in enumerate(self.schema.level_names):
            cols = lvl == i
            out.update(figures(err[:, cols], labelled[:, cols], detected[:, cols], f"{name}/"))
        return out


class EuclideanError(Metric):
    """Euclidean localization error in pixels and, where pixel spacing is known, millimetres.

    Notes
    -----
    ``update(pred, gt, pixel_spacing=None, visibility=None)``: ``pred``, ``gt`` (B, P, 2) pixels,
    ``pixel_spacing`` (B, 2) ``(row_mm, col_mm)`` with NaN (or non-positive) rows for images of
    unknown spacing. ``compute()`` returns ``median_px``, ``mean_px``, ``p95_px`` (95th
    percentile), ``n_px`` over labelled points with a finite prediction, and ``median_mm``,
    ``mean_mm``, ``p95_mm``, ``n_mm`` and ``outlier_rate_mm`` (fraction further than
    :data:`OUTLIER_MM`, 5 mm) over those of images with a known spacing. Missed points are
    counted by :class:`NormalizedLocalizationError`.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    px: list[Tensor]
    mm: list[Tensor]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("px", default=[], dist_reduce_fx="cat")
        self.add_state("mm", default=[], dist_reduce_fx="cat")

    def update(self, pred: Tensor, gt: Tensor, pixel_spacing: Tensor | None = None,
               visibility: Tensor | None = None) -> None:
        """Add a batch; see the class notes for shapes."""
        pred, gt = pred.detach().to(self.dtype), gt.detach().to(self.dtype)
        px = euclidean_errors(pred, gt, visibility=visibility)
        ok = torch.isfinite(px)
        self.px.append(px[ok])
        if pixel_spacing is not None:
            sp = pixel_spacing.detach().to(device=gt.device, dtype=gt.dtype)
            sp = sp.masked_fill(~(torch.isfinite(sp) & (sp > 0)), math.nan)
            mm = euclidean_errors(pred, gt, pixel_spacing=sp, visibility=visibility)
            self.mm.append(mm[torch.isfinite(mm)])

    def compute(self) -> dict[str, Tensor]:
        """Dict of the figures in px and mm; see the class notes."""
        ref = torch.zeros((), dtype=self.dtype, device=self.device)
        px = _cat_state(self.px, ref)
        mm = _cat_state(self.mm, px)
        far = mm > OUTLIER_MM
        return {"median_px": _median(px), "mean_px": _mean(px), "p95_px": _quantile(px, 0.95),
                "n_px": torch.tensor(float(px.numel()), dtype=px.dtype, device=px.device),
                "median_mm": _median(mm), "mean_mm": _mean(mm), "p95_mm": _quantile(mm, 0.95),
                "outlier_rate_mm": _share(far, torch.ones_like(far)).to(px.dtype),
                "n_mm": torch.tensor(float(mm.numel()), dtype=px.dtype, device=px.device)}


class SuccessDetectionRate(Metric):
    """Fraction of labelled points localized within given distances (millimetres).

    Parameters
    ----------
    thresholds_mm : sequence of float
        Radii in mm; a point succeeds when its Euclidean error is ``<=`` the radius.
    **kwargs
        Passed to :class:`torchmetrics.Metric`.

    Notes
    -----
    ``update(pred, gt, pixel_spacing, visibility=None)``: ``pred``, ``gt`` (B, P, 2) pixels,
    ``pixel_spacing`` (B, 2) ``(row_mm, col_mm)``. Images whose spacing is unknown (a NaN or
    non-positive entry) are skipped: they have no error in mm. A labelled point with a NaN
    prediction (missed) counts as a failure at every radius. ``compute()`` returns
    ``sdr@2.0mm``, ``sdr@2.5mm``, ... (fractions in [0, 1]) and ``n`` (points counted).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    distances: list[Tensor]

    def __init__(self, thresholds_mm: Sequence[float] = (2.0, 2.5, 3.0, 4.0),
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.thresholds_mm = tuple(float(t) for t in thresholds_mm)
        self.add_state("distances", default=[], dist_reduce_fx="cat")

    def update(self, pred: Tensor, gt: Tensor, pixel_spacing: Tensor,
               visibility: Tensor | None = None) -> None:
        """Add a batch; see the class notes for shapes."""
        pred = pred.detach().to(self.dtype)
        gt = _masked(gt.detach().to(self.dtype), visibility)
        sp = pixel_spacing.detach().to(device=gt.device, dtype=gt.dtype)
        known = (torch.isfinite(sp) & (sp > 0)).all(dim=-1)  # (B,)
        dist = euclidean_errors(pred, gt, pixel_spacing=sp.masked_fill(~known[:, None], 1.0))
        counted = _present(gt) & known[:, None]
        dist = dist.masked_fill(~torch.isfinite(dist), math.inf)  # missed -> failure
        self.distances.append(dist[counted])

    def compute(self) -> dict[str, Tensor]:
        """Dict ``sdr@<t>mm`` for every threshold, and ``n``."""
        ref = torch.zeros((), dtype=self.dtype, device=self.device)
        d = _cat_state(self.distances, ref)
        out: dict[str, Tensor] = {}
        for t in self.thresholds_mm:
            out[f"sdr@{t}mm"] = (d <= t).to(d.dtype).mean() if d.numel() else _nan(d)
        out["n"] = torch.tensor(float(d.numel()), dtype=d.dtype, device=d.device)
        return out


class AngleError(Metric):
    """Agreement of predicted and ground-truth angles (degrees), per named parameter.

    Parameters
    ----------
    names : sequence of str
        Keys of the parameter dicts to evaluate (default: :data:`~spinelandmarks.anatomy.angles.LUMBAR_PARAMETERS`).
    **kwargs
        Passed to :class:`torchmetrics.Metric`.

    Notes
    -----
    ``update(pred_params, gt_params)`` takes two dicts ``name -> (B,)`` tensor, e.g. the outputs
    of :func:`lumbar_parameters`. With the error ``d = pred - gt`` over the images where both are
    finite, ``compute()`` returns for every name:

    - ``{name}/median_abs``, ``{name}/mean_abs``, ``{name}/p95_abs``, ``{name}/max_abs`` --
      median, mean, 95th percentile and maximum of ``|d|`` (``d`` wrapped to (-180, 180]);
    - ``{name}/pearson_r`` -- Pearson correlation of pred and gt (NaN below 2 pairs or for a
      constant series);
    - ``{name}/bias``, ``{name}/loa_low``, ``{name}/loa_high`` -- Bland-Altman bias ``mean(d)``
      and 95 % limits of agreement ``bias -/+ 1.96 * SD(d)`` (SD with ddof = 1; NaN below 2
      pairs);
    - ``{name}/n`` -- pairs with both finite, ``{name}/missed`` -- images whose ground truth is
      finite but prediction NaN (a level was not found).
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    preds: list[Tensor]
    targets: list[Tensor]

    def __init__(self, names: Sequence[str] = _LUMBAR_PARAMETERS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.names = tuple(names)
        if not self.names:
            raise ValueError("AngleError needs at least one parameter name")
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def _stack(self, params: Mapping[str, Tensor], what: str) -> Tensor:
        missing = [n for n in self.names if n not in params]
        if missing:
            raise KeyError(f"{what} lacks parameters {missing}; has {sorted(params)}")
        cols = [params[n].detach().reshape(-1) for n in self.names]
        return torch.stack(torch.broadcast_tensors(*cols), dim=-1)  # (B, K)

    def update(self, pred_params: Mapping[str, Tensor], gt_params: Mapping[str, Tensor]) -> None:
        """Add a batch: dicts ``name -> (B,)`` degrees; NaN marks a missing value."""
        p = self._stack(pred_params, "pred_params")
        g = self._stack(gt_params, "gt_params").to(device=p.device)
        if p.shape != g.shape:
            raise ValueError(f"pred_params {tuple(p.shape)} and gt_params {tuple(g.shape)} "
                             "have different batch sizes")
        self.preds.append(p.to(self.dtype).reshape(-1))
        self.targets.append(g.to(self.dtype).reshape(-1))

    def compute(self) -> dict[str, Tensor]:
        """Dict of ``{name}/<figure>``; see the class notes."""
        ref = torch.zeros((), dtype=self.dtype, device=self.device)
        k = len(self.names)
        preds = _cat_state(self.preds, ref).reshape(-1, k)
        targets = _cat_state(self.targets, preds).reshape(-1, k)
        out: dict[str, Tensor] = {}
        for j, name in enumerate(self.names):
            p, g = preds[:, j], targets[:, j]
            both = torch.isfinite(p) & torch.isfinite(g)
            missed = torch.isfinite(g) & ~torch.isfinite(p)
            pb, gb = p[both], g[both]
            d = _wrap_angle(pb - gb)  # 179 vs -179 deg is a 2 deg error, not 358
            n = d.numel()
            nan = _nan(d)
            bias = d.mean() if n else nan
            sd = d.std(correction=1) if n > 1 else nan
            if n > 1:
                pc, gc = pb - pb.mean(), gb - gb.mean()
                den = torch.sqrt((pc * pc).sum() * (gc * gc).sum())
                r = (pc * gc).sum() / den if float(den) > 0 else nan
            else:
                r = nan
            out[f"{name}/median_abs"] = _median(d.abs())
            out[f"{name}/mean_abs"] = _mean(d.abs())
            out[f"{name}/p95_abs"] = _quantile(d.abs(), 0.95)
            out[f"{name}/max_abs"] = d.abs().max() if n else nan
            out[f"{name}/pearson_r"] = r
            out[f"{name}/bias"] = bias
            out[f"{name}/loa_low"] = bias - 1.96 * sd
            out[f"{name}/loa_high"] = bias + 1.96 * sd
            out[f"{name}/n"] = torch.tensor(float(n), dtype=d.dtype, device=d.device)
            out[f"{name}/missed"] = missed.sum().to(d.dtype)
        return out


class LevelIdentification(Metric):
    """Level identification: each labelled level found on the right vertebra, per level and image.

    Parameters
    ----------
    schema : LandmarkSchema
        Schema of the points.
    **kwargs
        Passed to :class:`torchmetrics.Metric`.

    Notes
    -----
    ``update(pred, gt, visibility=None)`` takes ``(B, P, 2)`` pixel coordinates. Each fully
    labelled level is judged by :func:`level_identification`. ``compute()`` returns

    - ``rate`` -- fraction of judged levels identified;
    - ``image_rate`` -- fraction of images (with at least one judged level) whose judged levels
      are all identified: the share of spines with every level right;
    - ``extra_levels`` -- predicted levels whose level has no labelled point at all (e.g. a
      level outside the field of view drawn anyway);
    - ``n_levels``, ``n_images`` -- what was judged;
    - per level ``<LEVEL>/rate``.

    Unlike a detection rate, which only counts that a level was reported, a level shifted onto
    its neighbour counts as wrong here.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    status: list[Tensor]
    extra: list[Tensor]

    def __init__(self, schema: LandmarkSchema = LUMBAR_SAGITTAL, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.schema = schema
        self.add_state("status", default=[], dist_reduce_fx="cat")
        self.add_state("extra", default=[], dist_reduce_fx="cat")

    def update(self, pred: Tensor, gt: Tensor, visibility: Tensor | None = None) -> None:
        """Add a batch: ``pred``, ``gt`` (B, P, 2) pixels, ``visibility`` (B, P) optional."""
        pred, gt = pred.detach().to(self.dtype), gt.detach().to(self.dtype)
        gt = _masked(gt, None if visibility is None else visibility.detach())
        status = level_identification(pred, gt, self.schema)
        table = self.schema.level_point_table().to(gt.device)
        valid = table >= 0
        labelled = (_present(gt)[:, table.clamp_min(0)] & valid).any(dim=-1)  # (B, L)
        found = torch.isfinite(_level_centres(pred, self.schema)).all(dim=-1)
        self.status.append(status.reshape(-1))
        self.extra.append((found & ~labelled).reshape(-1).to(status.dtype))

    def compute(self) -> dict[str, Tensor]:
        """Dict of identification rates; see the class notes."""
        ref = torch.zeros((), dtype=self.dtype, device=self.device)
        nl = self.schema.num_levels
        status = _cat_state(self.status, ref).reshape(-1, nl)
        extra = _cat_state(self.extra, ref).reshape(-1, nl)
        judged = torch.isfinite(status)
        hit = status == 1
        img_judged = judged.any(dim=1)
        img_ok = (hit | ~judged).all(dim=1)
        out = {"rate": _share(hit, judged).to(ref.dtype),
               "image_rate": _share(img_ok, img_judged).to(ref.dtype),
               "extra_levels": extra.sum().to(ref.dtype),
               "n_levels": judged.sum().to(ref.dtype),
               "n_images": img_judged.sum().to(ref.dtype)}
        for i, name in enumerate(self.schema.level_names):
            out[f"{name}/rate"] = _share(hit[:, i], judged[:, i]).to(ref.dtype)
        return out


#: Radii of :class:`RadialError`'s success detection rates (mm, or pixels without spacing).
RADIAL_THRESHOLDS: tuple[float, ...] = (2.0, 2.5, 3.0, 4.0)


class RadialError(Metric):
    """Mean radial error and success detection rates, per point and overall: the localization
    figures of point-landmark tasks (points without a vertebral body to normalize by).

    Parameters
    ----------
    schema : LandmarkSchema
        Schema of the points (names the per-point figures).
    thresholds : sequence of float
        Radii of the success detection rates, in the unit of the errors (default
        :data:`RADIAL_THRESHOLDS`: 2, 2.5, 3 and 4).
    **kwargs
        Passed to :class:`torchmetrics.Metric`.

    Notes
    -----
    ``update(pred, gt, pixel_spacing=None, visibility=None)``: ``pred``, ``gt`` (B, P, 2)
    pixels; ``pixel_spacing`` (B, 2) ``(row_mm, col_mm)``, NaN (or non-positive) rows for
    images of unknown spacing; ``visibility`` (B, P), 0 for points not labelled.

    The radial error of a point is its Euclidean distance to the truth. It is in millimetres
    when every image with a labelled point has a known spacing, else in pixels for all of
    them (one unit per figure, never a mix; ``unit_mm`` says which). ``compute()`` returns:

    - ``mre``, ``sd``, ``median`` -- mean, standard deviation (ddof 1) and median of the
      radial error over the labelled points with a finite prediction;
    - ``sdr@2.0`` ... -- success detection rate: the fraction of labelled points within the
      radius; a labelled point with a NaN prediction (missed) is a failure;
    - ``detection_rate`` (found / labelled), ``n`` (points in ``mre``), ``n_labelled``,
      ``unit_mm`` (1.0 for mm, 0.0 for pixels);
    - per point ``<LEVEL>_<point>/mre``, ``.../sdr@2.0`` ..., ``.../n_labelled``.

    Figures without any sample are NaN (a point labelled in no image, or no labelled point).
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    px: list[Tensor]
    mm: list[Tensor]
    labelled: list[Tensor]

    def __init__(self, schema: LandmarkSchema = LUMBAR_SAGITTAL,
                 thresholds: Sequence[float] = RADIAL_THRESHOLDS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.schema = schema
        self.thresholds = tuple(float(t) for t in thresholds)
        # flat (B * P) states: NaN distances where not labelled, missed, or (mm) no spacing
        self.add_state("px", default=[], dist_reduce_fx="cat")
        self.add_state("mm", default=[], dist_reduce_fx="cat")
        self.add_state("labelled", default=[], dist_reduce_fx="cat")

    def update(self, pred: Tensor, gt: Tensor, pixel_spacing: Tensor | None = None,
               visibility: Tensor | None = None) -> None:
        """Add a batch; see the class notes for shapes."""
        _check_points(gt, self.schema, "gt")
        pred = pred.detach().to(self.dtype)
        gt = _masked(gt.detach().to(self.dtype), None if visibility is None
                     else visibility.detach())
        b = gt.shape[0]
        sp = (torch.full((b, 2), math.nan, dtype=gt.dtype, device=gt.device)
              if pixel_spacing is None
              else pixel_spacing.detach().to(device=gt.device, dtype=gt.dtype).reshape(b, 2))
        sp = sp.masked_fill(~(torch.isfinite(sp) & (sp > 0)), math.nan)
        self.px.append(euclidean_errors(pred, gt).reshape(-1))
        self.mm.append(euclidean_errors(pred, gt, pixel_spacing=sp).reshape(-1))
        self.labelled.append(_present(gt).reshape(-1).to(gt.dtype))

    def compute(self) -> dict[str, Tensor]:
        """Dict of the radial-error figures; see the class notes."""
        ref = torch.zeros((), dtype=self.dtype, device=self.device)
        p = self.schema.num_points
        px = _cat_state(self.px, ref).reshape(-1, p)
        mm = _cat_state(self.mm, ref).reshape(-1, p)
        labelled = _cat_state(self.labelled, ref).reshape(-1, p) > 0
        found = labelled & torch.isfinite(px)
        # mm only when every image with a labelled point has a spacing (then every found
        # point has a finite mm distance)
        use_mm = bool(labelled.any()) and bool((torch.isfinite(mm) | ~found).all())
        dist = mm if use_mm else px
        out = self._figures(dist, labelled, found, "")
        out["detection_rate"] = _share(found, labelled).to(ref.dtype)
        out["n"] = found.sum().to(ref.dtype)
        out["unit_mm"] = torch.tensor(float(use_mm), dtype=ref.dtype, device=ref.device)
        for j, name in enumerate(self.schema.point_names):
            col = slice(j, j + 1)
            out.update(self._figures(dist[:, col], labelled[:, col], found[:, col], f"{name}/"))
        return out

    def _figures(self, dist: Tensor, labelled: Tensor, found: Tensor, prefix: str
                 ) -> dict[str, Tensor]:
        d = dist[found]
        sd = d.std() if d.numel() > 1 else _nan(dist)
        out = {f"{prefix}mre": _mean(d), f"{prefix}sd": sd, f"{prefix}median": _median(d),
               f"{prefix}n_labelled": labelled.sum().to(dist.dtype)}
        for t in self.thresholds:
            out[f"{prefix}sdr@{t}"] = _share(found & (dist <= t), labelled).to(dist.dtype)
        return out
