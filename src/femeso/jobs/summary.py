"""The lines ``femeso`` prints after a job: the error table and the summary."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["table_lines", "summary_lines"]


def _f(x: Any) -> str:
    """Format a number of the summary (``-`` for a missing one)."""
    return "-" if x is None else f"{x:.2e}" if isinstance(x, float) else str(x)


def table_lines(
    table: dict[str, dict[str, Any]], *, steps: tuple[int, ...] | None = None
) -> list[str]:
    """Return an error table (mean ± std over the test trajectories at each step) as text.

    ``table``: model -> :func:`~femeso.evaluation.error_table` row (either metric). ``steps``
    selects the columns (default: every step of the rows); a selected step beyond the rows'
    last one is replaced by that last one. The last column counts the failed rollouts; a line
    below the table names the first step at which a row counts errors as diverged. A missing
    number prints as ``-``, never as ``nan``.
    """
    from femeso.evaluation import format_value

    have = sorted({k for t in table.values() for k in t["steps"]})
    columns = have
    if steps is not None:
        columns = [k for k in have if k in steps]
        if have and any(k > have[-1] for k in steps) and have[-1] not in columns:
            columns.append(have[-1])
    order = ["onsager", "classical", "baseline"]
    names = [n for n in order if n in table]
    names += [n for n in table if n not in names and n != "persistence"]
    names += [n for n in ("persistence",) if n in table]
    lines = [f"{'step':<17}" + "".join(f"{k:>20}" for k in columns) + f"{'failed':>9}"]
    notes = []
    for name in names:
        t = table[name]
        cells = {}
        for k, m, s in zip(t["steps"], t["mean"], t["std"], strict=True):
            mean = format_value(m, ".2e", missing="")
            cells[k] = f"{mean} ± {format_value(s, '.1e')}" if mean else "-"
        n_failed, n_traj = t.get("n_failed"), t.get("n_trajectories")
        failed = "-" if n_failed is None else f"{n_failed}/{n_traj}" if n_failed else "0"
        lines.append(
            f"{name:<17}" + "".join(f"{cells.get(k, '-'):>20}" for k in columns) + f"{failed:>9}"
        )
        if t.get("failed_at"):
            notes.append(
                f"  {name}: {n_failed} of {n_traj} rollouts failed (first at step "
                f"{t['failed_at'][0]}); a failed rollout counts as 1 from its failing step on"
            )
        if t.get("diverged_from") is not None:
            notes.append(f"  {name}: errors count as diverged (1) from step {t['diverged_from']}")
    return lines + notes


def _reached(summary: dict[str, Any]) -> str:
    """``[min, max]`` of the nodal values a model's rollouts reached (``-`` when not measured)."""
    low, high = summary.get("state_min"), summary.get("state_max")
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "-"
    return f"[{low:.3g}, {high:.3g}]"


def summary_lines(results: dict[str, Any]) -> list[str]:
    """Return the report as lines of text (the command line prints them).

    Both error tables, each titled with its metric (the paper's relative RMSE of nodal values at
    steps 1, 5 and 100; the relative L2 error at steps 1 to 5 and 100), the models' summary,
    warnings about learned models worse than persistence or the classical solver, the
    comparisons of the learned parts and the targets. No number prints as ``nan``.
    """
    from femeso.evaluation import METRICS, format_value

    def num(x: Any, spec: str = ".2e") -> str:
        return format_value(x, spec)

    source = "the test trajectories' first frames (mean ± std over the test trajectories"
    rules = {
        "paper": "; once an error reaches 1 or a rollout fails, every trajectory counts as 1 "
        "from that step on, as in the paper",
        "l2": "; a failed rollout counts as 1 from its failing step on",
    }
    lines = [
        f"job {results['job']}: {results['cells']} cells, {results['dofs']} DoFs, "
        f"{results['ranks']} rank(s); training horizon {results['training_horizon']:g}, "
        f"long horizon {results['long_horizon']:g}",
    ]
    resampled = results.get("resampled")
    if resampled:
        lines.append(
            f"data resampled from {resampled['from']} onto {resampled['to']} "
            f"({resampled['method']}): relative L2 loss per state up to "
            f"{num(resampled['max_relative_l2_loss'])}, mean over trajectories "
            f"{num(resampled['mean_relative_l2_loss'])}; the errors below are against the "
            "resampled data"
        )
    tables = results.get("tables") or {"l2": {"metric": METRICS["l2"], "rows": results["table"]}}
    # the paper's metric at its table's steps (100: or the last one compared), L2 at all
    for metric, steps in (("paper", (1, 5, 100)), ("l2", None)):
        if metric not in tables:
            continue
        lines.append(f"{tables[metric]['metric']} of the rollouts from {source}{rules[metric]}):")
        lines.extend(table_lines(tables[metric]["rows"], steps=steps))
    lines.append(
        f"{'':<17}{'L2@1 step':>11}{'L2@train T':>12}{'L2@10x T':>11}{'max L2':>10}"
        f"{'RMSE@T':>10}{'failed':>8}{'V incr.':>8}{'true V incr.':>13}{'V drift':>10}"
        f"{'mass drift':>11}{'states reached':>22}"
    )
    for name in results.get("models") or ("onsager", "baseline", "classical", "persistence"):
        if name not in results:
            continue
        r = results[name]
        lines.append(
            f"{name:<17}{num(r['error_first']):>11}{num(r['error_at_training_horizon']):>12}"
            f"{num(r['error_last']):>11}{num(r['error_max']):>10}"
            f"{num(r.get('nodal_error_at_training_horizon')):>10}"
            f"{num(r.get('n_failed', r.get('failures'))):>8}{num(r['energy_increases']):>8}"
            f"{num(r['reference_energy_increases']):>13}{num(r['energy_drift']):>10}"
            f"{num(r['max_mass_drift']):>11}{_reached(r):>22}"
        )
    lines.append(
        f"(L2: {METRICS['l2']}; RMSE: {METRICS['paper']}; T: the training horizon, 10x T: the "
        "last step compared with the data)"
    )
    costs = results.get("costs") or {}
    if costs:
        lines.append(f"{'cost':<17}{'parameters':>12}{'training s':>12}{'s per rollout step':>20}")
        for name, c in costs.items():
            lines.append(
                f"{name:<17}{num(c['parameters'], 'd'):>12}{num(c['training_seconds'], '.0f'):>12}"
                f"{num(c['seconds_per_step'], '.2e'):>20}"
            )
    lines.extend(results.get("warnings") or [])
    if results.get("transport"):
        lines.append(f"learned transport velocity: {results['transport']}")
    d, m = results.get("density"), results.get("mobility")
    if d is not None:
        g, d2 = d["gauge"], d["second_derivative"]
        lines.append(
            f"learned F vs true, in the gauge (F ~ {num(g['slope'], '.4g')} F_true + o + e u, "
            f"only o, e fitted): R2={num(g['r2'], '.5f')}; free fit: s={num(d['slope'], '.4g')}, "
            f"R2={num(d['r2'], '.5f')}; F'' slope {num(d2['slope'], '.4g')}, "
            f"R2={num(d2['r2'], '.4f')}"
        )
    if m is not None:
        lines.append(
            f"learned m vs true (m ~ c m_true): c={num(m.get('scale'), '.4g')} "
            f"R2={num(m.get('r2'), '.4f')}; s*c={num(m.get('product'), '.4g')}"
        )
        g = m.get("gauge")
        if g:
            over = "(u, x)" if m.get("position") else "u"
            lines.append(
                f"learned m vs true in the gauge (m ~ m_true / {num(g['slope'], '.4g')}, over "
                f"the data's {over} samples): relative L2 error {num(g['relative_l2'])}, "
                f"R2={num(g['r2'], '.4f')}, max relative error {num(g['max_relative'])}"
            )
    steps = results.get("step_sizes")
    if steps:
        finest = steps.get("reference") == "finest"
        failures = steps.get("failure") or [None] * len(steps["factors"])
        cells = []
        for k, (fac, err, failure) in enumerate(
            zip(steps["factors"], steps["error"], failures, strict=True)
        ):
            if failure is not None:
                text = "failed"
            elif finest and k == 0:
                text = "reference"
            else:
                text = f"err {num(err)}"
            cells.append(f"{fac:g}x dt: {text}")
        against = "the finest" if finest else "the data"
        lines.append(
            f"inference at other steps, error against {against} (t_end={steps['t_end']:g}): "
            + ", ".join(cells)
            + f"; order {num(steps['order'], '.2f')}"
        )
    relations = {
        "error_at_training_horizon": "<=",
        "energy_increases": "==",
        "density_r2": ">=",
        "mobility_r2": ">=",
        "error_at_long_horizon": "<=",
    }
    for key, t in (results.get("targets") or {}).items():
        verdict = "MET" if t["met"] else "NOT MET"
        value = num(t["value"], ".3g")
        lines.append(
            f"target {key}: {value} (needs {relations.get(key, 'vs')} {t['target']}) {verdict}"
        )
    return lines
