"""The report's figures: snapshots, energies, and learned against true mobility."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from femeso.config import JobConfig
from femeso.jobs.models import _true_mobility
from femeso.model.onsager import OnsagerModel

__all__ = []


def _rescaled(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Affinely map ``values`` onto the range of ``like`` (to overlay energies of other gauges)."""
    a, b = np.nanmin(values), np.nanmax(values)
    c, d = np.nanmin(like), np.nanmax(like)
    return c + (values - a) * (d - c) / (b - a) if b > a else values


def _plots(config, data, reports, model, truth, density, mobility, samples) -> list[Path | None]:
    from femeso.evaluation import METRICS, density_curves
    from femeso.evaluation.plots import plot_curves, plot_density, plot_fields

    directory = config.output / "report"
    d = config.data
    horizon = d.frames * d.frame_dt
    paths: list[Path | None] = []
    onsager = reports["onsager"]
    states = onsager.rollouts[0].states
    n = len(states)
    picks = sorted({0, min(d.frames, n - 1), (n - 1) // 2, n - 1})
    truth_states = data["test"].trajectories[0].states
    fields = {"true": [truth_states[i] for i in picks], "onsager": [states[i] for i in picks]}
    labels = {"true": "data", "onsager": "Onsager model"}
    if "baseline" in reports and reports["baseline"].rollouts[0].states:
        base = reports["baseline"].rollouts[0].states
        if len(base) == n:
            fields["baseline"] = [base[i] for i in picks]
            labels["baseline"] = "black-box baseline"
    times = [float(onsager.rollouts[0].times[i]) for i in picks]
    paths.append(
        plot_fields(
            directory / "fields.png",
            fields,
            times,
            labels,
            reference="true",
            scale_with=("onsager",),  # a diverging baseline is clipped, not the scale
            title=f"{config.job.name}: test trajectory 0",
        )
    )
    # the scored means: a failed rollout counts as 1 from its failing step on
    series = {name: r.error_mean for name, r in reports.items()}
    paths.append(
        plot_curves(
            directory / "error.png",
            {name: r.times for name, r in reports.items()},
            series,
            METRICS["l2"],
            logy=True,
            train_end=horizon,
            title="rollout error against the data (mean over test trajectories)",
        )
    )
    paths.append(_energy_plot(directory / "energy.png", reports, horizon, known=truth is not None))
    u_grid = np.linspace(float(samples.min()), float(samples.max()), 200)
    true_density = truth.energy.density if truth is not None else None
    curves = density_curves(model, u_grid, true_density=true_density, fit=density)
    if mobility is None:  # no true model, or a conservative one: F only
        paths.append(plot_density(directory / "density.png", u_grid, curves, title="learned F(u)"))
        return paths
    if mobility.get("position"):  # m(u, x): F on its own, m at the samples and along x_1
        paths.append(
            plot_density(
                directory / "density.png", u_grid, curves, title="learned F(u) after the gauge fit"
            )
        )
        paths.append(_mobility_plot(directory / "mobility.png", config, model, mobility, samples))
        return paths
    u_t = torch.as_tensor(u_grid[:, None])
    scale = mobility.get("scale") or 1.0
    with torch.no_grad():
        learned = model.mobility_values(u_t)
    kind = next(iter(learned))
    true_m = _true_mobility(config, model.mesh)
    mob = {
        "learned / fitted scale": learned[kind][:, 0].numpy() / scale,
        "true": true_m(u_t)[:, 0].numpy() if callable(true_m) else np.full_like(u_grid, true_m),
    }
    paths.append(
        plot_density(
            directory / "density.png",
            u_grid,
            curves,
            mobility=mob,
            title="learned F(u) and m(u) after the gauge fit",
        )
    )
    return paths


#: States at which the mobility profiles along x_1 are drawn (the graded truth is even in u).
PROFILE_STATES = (0.0, 0.5, 1.0)


def _mobility_plot(
    path: Path, config: JobConfig, model: OnsagerModel, mobility: dict, samples: torch.Tensor
) -> Path:
    """Plot a position-dependent mobility comparison: at the data's samples, and along x_1."""
    from femeso.evaluation import mobility_samples
    from femeso.evaluation.plots import plot_mobility

    kind, slope = mobility["kind"], mobility["gauge"]["slope"]
    true_m = _true_mobility(config, model.mesh)
    at_samples = mobility_samples(model, true_m, samples, kind=kind)
    profiles = {}
    for value in PROFILE_STATES:
        u = torch.full((model.x.shape[0], model.n_states), value, dtype=samples.dtype)
        at = mobility_samples(model, true_m, u, kind=kind)
        profiles[f"u = {value:g}"] = (at["x"][:, 0], at["true"][:, 0], slope * at["learned"][:, 0])
    g = mobility["gauge"]
    return plot_mobility(
        path,
        at_samples["true"],
        slope * at_samples["learned"],
        profiles=profiles,
        title=f"learned m(u, x) x {slope:.3g} (the gauge) against the true one: relative L2 error "
        f"{g['relative_l2']:.2e}, R2 {g['r2']:.4f}",
    )


def _mean_of_available(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Return the per-step mean over the trajectories that have a value, and how many lack one.

    A trajectory lacks values after its rollout failed, or everywhere for a model without an
    energy; the legend says how many (no value is averaged away silently).
    """
    finite = np.isfinite(values)
    count = finite.sum(axis=0)
    total = np.where(finite, values, 0.0).sum(axis=0)
    mean = np.divide(total, count, out=np.full(count.shape, np.nan), where=count > 0)
    return mean, int((~finite.all(axis=1)).sum())


def _short_label(short: int, total: int) -> str:
    """Return the legend's note on a mean over fewer trajectories than there are."""
    return f"; {short} of {total} rollouts incomplete" if short else ""


def _energy_plot(path: Path, reports, horizon: float, *, known: bool) -> Path | None:
    """Plot the energies along the rollouts: the true V when known, the models' own V."""
    from femeso.evaluation.plots import plot_curves

    onsager = reports["onsager"]
    energies: dict[str, np.ndarray] = {}
    times: dict[str, np.ndarray] = {}
    if known:
        for name, r in reports.items():
            mean, short = _mean_of_available(r.reference_energies)
            label = f"{name} (true V{_short_label(short, len(r.reference_energies))})"
            energies[label], times[label] = mean, r.times
        energies["data (true V)"], _ = _mean_of_available(onsager.reference_energies_data)
        times["data (true V)"] = onsager.data_times
    own, short = _mean_of_available(onsager.energies)
    rescaled = ", rescaled" if known else ""
    label = f"Onsager model (own V{rescaled}{_short_label(short, len(onsager.energies))})"
    energies[label] = _rescaled(own, energies["data (true V)"]) if known else own
    times[label] = onsager.times
    return plot_curves(
        path,
        times,
        energies,
        "true energy V" if known else "learned energy V",
        train_end=horizon,
        title="energy along the rollouts",
    )
