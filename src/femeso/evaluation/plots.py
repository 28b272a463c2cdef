"""Figures for evaluations: fields side by side, curves over time, learned against true factors.

matplotlib (Agg backend) is imported inside the functions, so ``import femeso`` does not need it.
Every function writes a PNG (dpi 120) on rank 0 of the communicator and returns its path on every
rank. Field plots need the whole mesh on one process (``firedrake.pyplot``): on several ranks
:func:`plot_fields` logs a warning and writes nothing (it returns ``None``); the curves and
densities are plain arrays and are plotted in parallel too (by rank 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import firedrake as fd
import numpy as np
from mpi4py import MPI

from femeso._log import logger
from femeso.data.trajectories import mesh_of

__all__ = ["color_limits", "plot_curves", "plot_density", "plot_fields", "plot_mobility"]

DPI = 120

#: How far beyond the base range (in units of its span) an extra field may widen the scale.
SLACK = 0.5


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    _pyplot().close(fig)
    logger.debug("wrote %s", path)
    return path


def _scalar(f: fd.Function, component: int) -> fd.Function:
    """Return the scalar field to draw: ``f`` itself, or one component of a vector-valued ``f``."""
    if f.ufl_shape == ():
        return f
    V = f.function_space()
    mesh = mesh_of(V)
    element = V.ufl_element()
    sub = element.sub_elements[0] if element.sub_elements else element
    return fd.Function(fd.FunctionSpace(mesh, sub)).interpolate(f[component])


def _line_data(f: fd.Function) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``(x, f(x))`` of a 1-D field, sorted by ``x`` (periodic meshes included)."""
    mesh = mesh_of(f.function_space())
    degree = max(f.function_space().ufl_element().embedded_superdegree, 1)
    # Discontinuous nodes: on a periodic interval x then runs over [0, L] without wrapping.
    D = fd.FunctionSpace(mesh, "DG", degree)
    x = fd.Function(D).interpolate(fd.SpatialCoordinate(mesh)[0]).dat.data_ro.copy()
    y = fd.Function(D).interpolate(f).dat.data_ro.copy()
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


def color_limits(
    ranges: Mapping[str, tuple[float, float]],
    base: Sequence[str],
    extra: Sequence[str] = (),
    *,
    slack: float = SLACK,
) -> tuple[float, float, list[str]]:
    """Return the colour (or axis) limits of a group of fields and the fields they clip.

    The limits span the ranges of ``base`` (e.g. the data). A field of ``extra`` (e.g. the
    learned model) widens them only as far as ``slack`` times the base span on either side: if
    its range reaches further, it is left out of the scale. So one diverging model cannot flatten
    the others; it is clipped instead, and its plot should say so (with its own range).

    Parameters
    ----------
    ranges
        Name -> ``(min, max)`` of every field of the group.
    base
        Names whose ranges always set the limits (the finite ones among them; all finite ranges
        when none of them is finite).
    extra
        Names whose ranges widen the limits when they stay close to the base range.
    slack
        The widening an extra field may ask for, as a fraction of the base span.

    Returns
    -------
    lo, hi : float
        The limits, ``hi > lo``.
    clipped : list of str
        The names in ``ranges`` (in order) whose range is not finite or exceeds ``[lo, hi]``
        (by more than ``1e-6`` of the span).

    """
    finite = {
        k: (float(a), float(b)) for k, (a, b) in ranges.items() if math.isfinite(a + b) and a <= b
    }
    chosen = [finite[k] for k in base if k in finite] or list(finite.values()) or [(0.0, 1.0)]
    lo, hi = min(a for a, _ in chosen), max(b for _, b in chosen)
    span = hi - lo
    reach_lo, reach_hi = lo - slack * span, hi + slack * span
    for k in extra:
        if k in finite and reach_lo <= finite[k][0] and finite[k][1] <= reach_hi:
            lo, hi = min(lo, finite[k][0]), max(hi, finite[k][1])
    if hi <= lo:
        hi = lo + max(1e-12, 1e-12 * abs(lo))
    tol = 1e-6 * (hi - lo)
    clipped = [
        k for k in ranges if k not in finite or finite[k][0] < lo - tol or finite[k][1] > hi + tol
    ]
    return lo, hi, clipped


def _range_text(values: np.ndarray) -> str:
    """``"range [a, b], clipped"`` for a plot title (``"not finite"`` when it is not)."""
    v = np.asarray(values, dtype=float)
    if not np.isfinite(v).all():
        return "not finite, clipped"
    return f"range [{v.min():.3g}, {v.max():.3g}], clipped"


def _value_range(values: np.ndarray) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return (float(v.min()), float(v.max())) if v.size else (math.nan, math.nan)


def _select_rows(n: int, rows: int | Sequence[int] | None) -> list[int]:
    if rows is None:
        rows = min(n, 4)
    if isinstance(rows, int | np.integer):
        if rows < 1:
            raise ValueError(f"rows must be >= 1, got {rows}")
        return sorted({int(round(r)) for r in np.linspace(0, n - 1, min(int(rows), n))})
    rows = [int(r) for r in rows]
    if not rows or any(not -n <= r < n for r in rows):
        raise ValueError(f"row indices must be in [{-n}, {n}), got {rows}")
    return [r % n for r in rows]


def plot_fields(
    path: str | Path,
    fields: Mapping[str, Sequence[fd.Function]],
    times: Sequence[float],
    labels: Mapping[str, str] | None = None,
    *,
    rows: int | Sequence[int] | None = None,
    reference: str | None = None,
    scale_with: Sequence[str] = (),
    errors: bool = True,
    component: int = 0,
    title: str | None = None,
    cmap: str = "viridis",
) -> Path | None:
    """Draw fields side by side at selected times: true, learned, (black box), errors.

    On a 2-D mesh every panel is ``firedrake.pyplot.tripcolor``; a row (one time) shares one
    colour scale over the field columns, and the error columns (``field - reference``, signed,
    ``RdBu_r``) share a symmetric scale of their own; each group has a colour bar. On a 1-D mesh
    a row has two panels: all fields as lines, and all errors as lines.

    The scales stay readable when a model diverges (:func:`color_limits`): the field scale is
    the reference's range, widened by the fields of ``scale_with`` only while they stay close to
    it; the error scale is that of the errors of ``scale_with`` (default: of the first column
    after the reference), widened by the others under the same rule. A field or error outside
    its scale is clipped (saturated colours; on a 1-D mesh the axis limits clip its line), and
    its title (1-D: its legend entry) gives its own range.

    Parameters
    ----------
    path
        The PNG file.
    fields
        Column name -> one ``Function`` per time (all on one mesh), e.g.
        ``{"true": data.states, "learned": report.rollouts[0].states}``.
    times
        The times of the entries (titles of the rows).
    labels
        Optional display names for the columns (default: the keys).
    rows
        Number of evenly spread times to show (default ``min(4, len(times))``), or the indices.
    reference
        The key the errors are taken against (default: the first key).
    scale_with
        Keys (e.g. the learned model) whose fields and errors set the scales besides the
        reference, as long as they stay close to it.
    errors
        Draw the error columns.
    component
        The component drawn for vector-valued fields.
    title
        Figure title.
    cmap
        Colour map of the fields.

    Returns
    -------
    pathlib.Path or None
        ``path``; ``None`` (nothing written, a warning logged) on several ranks or a 3-D mesh.

    Raises
    ------
    ValueError
        If ``fields`` is empty, the lists do not all have ``len(times)`` entries, ``reference``
        is not a key, or the row selection is invalid.

    """
    path = Path(path)
    if not fields:
        raise ValueError("plot_fields: no fields")
    n = len(times)
    for name, seq in fields.items():
        if len(seq) != n:
            raise ValueError(f"plot_fields: {name!r} has {len(seq)} entries for {n} times")
    names = list(fields)
    reference = names[0] if reference is None else reference
    if reference not in fields:
        raise ValueError(f"plot_fields: reference {reference!r} is not one of {names}")
    mesh = mesh_of(fields[reference][0].function_space())
    if mesh.comm.size > 1:
        logger.warning("plot_fields: field plots need the whole mesh on one rank; skipped")
        return None
    dim = mesh.geometric_dimension
    if dim not in (1, 2):
        logger.warning("plot_fields: no field plots for %d-D meshes; skipped", dim)
        return None
    labels = {k: (labels or {}).get(k, k) for k in names}
    others = [k for k in names if k != reference] if errors else []
    selected = _select_rows(n, rows)
    plt = _pyplot()
    # What sets the scales: the reference field (and close ones); the errors of scale_with.
    field_extra = [k for k in scale_with if k in names and k != reference]
    error_base = [k for k in scale_with if k in others] or others[:1]
    error_extra = [k for k in others if k not in error_base]

    def scalar(name: str, r: int) -> fd.Function:
        return _scalar(fields[name][r], component)

    def difference(name: str, r: int) -> fd.Function:
        a, b = scalar(name, r), scalar(reference, r)
        return fd.Function(a.function_space()).interpolate(a - b)

    if dim == 1:
        ncols = 2 if others else 1
        fig, axes = plt.subplots(
            len(selected),
            ncols,
            figsize=(5 * ncols, 2.6 * len(selected)),
            squeeze=False,
            layout="constrained",
        )

        def lines(ax: Any, data: dict[str, tuple], base: list[str], extra: list[str]) -> None:
            ranges = {k: _value_range(y) for k, (_, y, _) in data.items()}
            lo, hi, clipped = color_limits(ranges, base, extra)
            for k, (x, y, label) in data.items():
                ax.plot(x, y, label=f"{label} ({_range_text(y)})" if k in clipped else label)
            margin = 0.05 * (hi - lo)
            ax.set_ylim(lo - margin, hi + margin)

        for row, r in enumerate(selected):
            ax = axes[row, 0]
            curves = {k: (*_line_data(scalar(k, r)), labels[k]) for k in names}
            lines(ax, curves, [reference], field_extra)
            ax.set_title(f"t = {times[r]:.4g}")
            ax.set_ylabel("u")
            if others:
                ax_e = axes[row, 1]
                diffs = {
                    k: (*_line_data(difference(k, r)), f"{labels[k]} - {labels[reference]}")
                    for k in others
                }
                lines(ax_e, diffs, error_base, error_extra)
                ax_e.axhline(0.0, color="0.6", lw=0.5)
                ax_e.set_title(f"error, t = {times[r]:.4g}")
        axes[0, 0].legend(fontsize="small")
        if others:
            axes[0, 1].legend(fontsize="small")
        for ax in axes[-1]:
            ax.set_xlabel("x")
    else:
        from firedrake.pyplot import tripcolor

        ncols = len(names) + len(others)
        fig, axes = plt.subplots(
            len(selected),
            ncols,
            figsize=(3.0 * ncols + 1.2, 2.8 * len(selected)),
            squeeze=False,
            layout="constrained",
        )
        for row, r in enumerate(selected):
            values = [scalar(name, r) for name in names]
            ranges = {k: _value_range(v.dat.data_ro) for k, v in zip(names, values, strict=True)}
            lo, hi, clipped = color_limits(ranges, [reference], field_extra)
            for col, (name, v) in enumerate(zip(names, values, strict=True)):
                art = tripcolor(v, axes=axes[row, col], vmin=lo, vmax=hi, cmap=cmap)
                text = f"{labels[name]}, t = {times[r]:.4g}"
                if name in clipped:
                    text += f"\n{_range_text(v.dat.data_ro)}"
                axes[row, col].set_title(text, fontsize="small")
            fig.colorbar(
                art,
                ax=list(axes[row, : len(names)]),
                shrink=0.85,
                extend="both" if clipped else "neither",
            )
            if others:
                diffs = [difference(name, r) for name in others]
                bounds = {}
                for name, d in zip(others, diffs, strict=True):
                    b = float(np.abs(d.dat.data_ro).max()) if d.dat.data_ro.size else math.nan
                    bounds[name] = (-b, b)
                _, bound, clipped_e = color_limits(bounds, error_base, error_extra)
                for j, (name, d) in enumerate(zip(others, diffs, strict=True)):
                    ax = axes[row, len(names) + j]
                    art = tripcolor(d, axes=ax, vmin=-bound, vmax=bound, cmap="RdBu_r")
                    text = f"{labels[name]} - {labels[reference]}, t = {times[r]:.4g}"
                    if name in clipped_e:
                        text += f"\n{_range_text(d.dat.data_ro)}"
                    ax.set_title(text, fontsize="small")
                fig.colorbar(
                    art,
                    ax=list(axes[row, len(names) :]),
                    shrink=0.85,
                    extend="both" if clipped_e else "neither",
                )
            for ax in axes[row]:
                ax.set_aspect("equal")
                ax.set_xticks([])
                ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _finite(x: np.ndarray, y: np.ndarray, logy: bool) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(x) & np.isfinite(y)
    if logy:
        ok &= y > 0
    return x[ok], y[ok]


def plot_curves(
    path: str | Path,
    times: Sequence[float] | np.ndarray | Mapping[str, Any],
    series: Mapping[str, Any],
    ylabel: str = "",
    logy: bool = False,
    title: str | None = None,
    *,
    xlabel: str = "t",
    train_end: float | None = None,
    comm: Any = MPI.COMM_WORLD,
) -> Path:
    """Plot curves over time: energies, errors, mass drift.

    Non-finite points (and non-positive ones with ``logy``) are left out of each curve, so the
    ``nan`` entries of a :class:`~femeso.evaluation.RolloutReport` (steps between data frames,
    steps beyond the data) do not break a line. A 2-D series ``(n_trajectories, n_times)`` is
    drawn as its mean over the trajectories with a band of one standard deviation.

    Parameters
    ----------
    path
        The PNG file.
    times
        The times, shared by every series, or a mapping series name -> its own times.
    series
        Name -> values ``(n_times,)`` or ``(n_trajectories, n_times)``.
    ylabel, xlabel, title
        Axis labels and title.
    logy
        Logarithmic y axis.
    train_end
        If given, a vertical dashed line marks the end of the training window.
    comm
        Only rank 0 of it writes.

    Returns
    -------
    pathlib.Path
        ``path`` (on every rank).

    Raises
    ------
    ValueError
        If ``series`` is empty or a series' length differs from its times'.

    """
    path = Path(path)
    if not series:
        raise ValueError("plot_curves: no series")
    data = {}
    for name, values in series.items():
        t = np.asarray(times[name] if isinstance(times, Mapping) else times, dtype=float)
        y = np.asarray(values, dtype=float)
        if y.shape[-1] != t.shape[0] or y.ndim not in (1, 2):
            raise ValueError(
                f"plot_curves: series {name!r} has shape {y.shape}, times have {t.shape[0]} entries"
            )
        data[name] = (t, y)
    if comm.rank != 0:
        return path
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for name, (t, y) in data.items():
        if y.ndim == 2:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=RuntimeWarning)
                mean, std = np.nanmean(y, axis=0), np.nanstd(y, axis=0)
            tm, m = _finite(t, mean, logy)
            (line,) = ax.plot(tm, m, marker="." if tm.size < 40 else None, label=name)
            ok = np.isfinite(t) & np.isfinite(mean) & np.isfinite(std)
            lower = mean - std
            if logy:
                ok &= mean > 0
                lower = np.where(lower > 0, lower, mean)
            ax.fill_between(t[ok], lower[ok], (mean + std)[ok], color=line.get_color(), alpha=0.2)
        else:
            tt, yy = _finite(t, y, logy)
            ax.plot(tt, yy, marker="." if tt.size < 40 else None, label=name)
    if train_end is not None:
        ax.axvline(train_end, color="0.3", ls="--", lw=1, label="end of training window")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_density(
    path: str | Path,
    u_grid: Sequence[float] | np.ndarray,
    curves: Mapping[str, Any],
    *,
    mobility: Mapping[str, Any] | None = None,
    xlabel: str = "u",
    title: str | None = None,
    comm: Any = MPI.COMM_WORLD,
) -> Path:
    """Plot learned against true densities ``F(u)`` (and mobilities ``m(u)``) on a grid of states.

    Typically ``curves = femeso.evaluation.density_curves(model, u_grid, true_density=...,
    fit=density_comparison(...))``: the learned density mapped back through the gauge fit, so
    that it lies on the true one when the dynamics are right.

    Parameters
    ----------
    path
        The PNG file.
    u_grid
        The states ``(n,)``.
    curves
        Name -> ``F`` values ``(n,)`` (left panel).
    mobility
        Optional name -> ``m`` values ``(n,)`` (right panel).
    xlabel, title
        Axis label and title.
    comm
        Only rank 0 of it writes.

    Returns
    -------
    pathlib.Path
        ``path`` (on every rank).

    Raises
    ------
    ValueError
        If ``curves`` is empty or a curve's length differs from the grid's.

    """
    path = Path(path)
    u = np.asarray(u_grid, dtype=float).ravel()
    panels = [("F(u)", curves)] + ([("m(u)", mobility)] if mobility else [])
    if not curves:
        raise ValueError("plot_density: no curves")
    for _, group in panels:
        for name, values in group.items():
            if np.asarray(values).ravel().shape != u.shape:
                raise ValueError(
                    f"plot_density: {name!r} has {np.asarray(values).size} values for "
                    f"{u.size} grid points"
                )
    if comm.rank != 0:
        return path
    plt = _pyplot()
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False, layout="constrained"
    )
    styles = ["-", "--", ":", "-."]
    for ax, (ylabel, group) in zip(axes[0], panels, strict=True):
        for j, (name, values) in enumerate(group.items()):
            ax.plot(u, np.asarray(values, dtype=float).ravel(), styles[j % 4], label=name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_mobility(
    path: str | Path,
    true: Sequence[float] | np.ndarray,
    learned: Sequence[float] | np.ndarray,
    *,
    profiles: Mapping[str, tuple[Any, Any, Any]] | None = None,
    xlabel: str = "x_1",
    title: str | None = None,
    max_points: int = 20000,
    comm: Any = MPI.COMM_WORLD,
) -> Path:
    """Plot a learned mobility against the true one at samples, and along a coordinate.

    For mobilities of the state and the position, which no single curve ``m(u)`` shows.

    Parameters
    ----------
    path
        The PNG file.
    true, learned
        The true and the learned (gauge-scaled) coefficients at the same samples (left panel:
        learned against true, with the identity line).
    profiles
        Optional name -> ``(coordinate, true m, learned m)`` point sets (right panel, one colour
        each: true dots, learned crosses), e.g. ``m(u, x)`` at the quadrature points against
        ``x_1`` for a few fixed states ``u``.
    xlabel, title
        Label of the profiles' coordinate, and the title.
    max_points
        At most this many samples are drawn (evenly strided).
    comm
        Only rank 0 of it writes.

    Returns
    -------
    pathlib.Path
        ``path`` (on every rank).

    Raises
    ------
    ValueError
        If ``true`` and ``learned`` differ in size or are empty.

    """
    path = Path(path)
    t = np.asarray(true, dtype=float).ravel()
    m = np.asarray(learned, dtype=float).ravel()
    if t.shape != m.shape or t.size == 0:
        raise ValueError(
            f"plot_mobility: {t.size} true and {m.size} learned values (same number, > 0 needed)"
        )
    if comm.rank != 0:
        return path
    stride = max(1, t.size // max_points)
    plt = _pyplot()
    panels = 2 if profiles else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4.2), squeeze=False)
    ax = axes[0, 0]
    ax.plot(t[::stride], m[::stride], ".", ms=1.5, alpha=0.4)
    lo, hi = float(min(t.min(), m.min())), float(max(t.max(), m.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="identity")
    ax.set_xlabel("true m(u, x)")
    ax.set_ylabel("learned m (gauge-scaled)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    if profiles:
        ax = axes[0, 1]
        for j, (name, (coordinate, true_values, learned_values)) in enumerate(profiles.items()):
            c = np.asarray(coordinate, dtype=float).ravel()
            k = max(1, c.size // max_points)
            colour = f"C{j % 10}"
            for values, marker, label in (
                (true_values, ".", "true"),
                (learned_values, "x", "learned"),
            ):
                v = np.asarray(values, dtype=float).ravel()
                ax.plot(
                    c[::k], v[::k], marker, color=colour, ms=2, ls="none", label=f"{label}, {name}"
                )
        ax.set_xlabel(xlabel)
        ax.set_ylabel("m")
        ax.legend(fontsize="small", markerscale=3)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
