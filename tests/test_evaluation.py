"""Evaluation: rollout errors, step-size studies, gauge-aware comparisons, scaling, plots."""

import json
import math

import firedrake as fd
import numpy as np
import pytest
import torch

import femeso
from femeso.data import Dataset, TrajectoryData, export_vtk
from femeso.data.generators import allen_cahn_model, generate_dataset, paper_sine_initial_condition
from femeso.evaluation import (
    METRICS,
    density_comparison,
    density_curves,
    energy_parts_along,
    energy_scaling_exponent,
    error_table,
    mobility_comparison,
    nodal_relative_rmse,
    persistence_errors,
    rollout_errors,
    step_size_study,
    to_jsonable,
    write_json,
)
from femeso.evaluation.plots import color_limits, plot_curves, plot_density, plot_fields
from femeso.model.fields import Expression
from femeso.stepping.energy_stable import StepFailure, StepRecord, Trajectory

FRAME_DT = 0.02
SUBSTEPS = 16  # reference steps per frame in the data


def ac_factory(epsilon=0.5):
    return lambda space: allen_cahn_model(space, epsilon=epsilon)


@pytest.fixture(scope="module")
def setting():
    """1-D Allen-Cahn data (2 trajectories, 6 frames) and the true model on the same space."""
    mesh = fd.PeriodicIntervalMesh(32, 2 * math.pi)
    V = fd.FunctionSpace(mesh, "CG", 1)
    data = generate_dataset(
        V,
        ac_factory(),
        n_trajectories=2,
        n_frames=6,
        frame_dt=FRAME_DT,
        seed=1,
        substeps=SUBSTEPS,
        initial_condition=paper_sine_initial_condition,
        progress=False,
    )
    return V, data, ac_factory()(V)


def stepper_of(model):
    return lambda u0, dt: femeso.EnergyStableStepper(model, u0, dt)


class ReplayStepper:
    """A black box without an energy: replays given states (records hold energy = nan)."""

    def __init__(self, states, dt, fail_after=None):
        self.states, self.dt, self.fail_after = states, dt, fail_after
        self.k, self.t = 0, 0.0

    def reset(self, u, *, t=0.0):
        self.k, self.t = 0, t

    def advance(self):
        if self.fail_after is not None and self.k >= self.fail_after:
            raise StepFailure(f"step from t={self.t:.6g} failed: replay exhausted")
        self.k += 1
        self.t += self.dt
        nan = math.nan
        return StepRecord(self.t, self.dt, nan, {}, nan, nan, [nan], 0, 0)

    def rollout(self, n_steps, *, progress=False):
        traj = Trajectory(np.array([self.t]), [self.states[self.k].copy(deepcopy=True)])
        times = [self.t]
        for _ in range(n_steps):
            traj.records.append(self.advance())
            traj.states.append(self.states[self.k].copy(deepcopy=True))
            times.append(self.t)
        traj.times = np.array(times)
        return traj


# ---------------------------------------------------------------------------------- rollouts
def test_true_model_errors_are_its_time_discretisation_error_only(setting):
    V, data, true = setting
    at_frame = rollout_errors(stepper_of(true), data, reference_energy=true.energy_value)
    # The data were made by the same scheme on the same mesh with dt = frame_dt / SUBSTEPS:
    # at that step the rollout reproduces them to rounding ...
    exact = rollout_errors(stepper_of(true), data, dt=FRAME_DT / SUBSTEPS, keep_states=False)
    assert exact.compared.sum() == 7 and exact.n_steps == 6 * SUBSTEPS
    assert np.nanmax(exact.errors) < 1e-9 and np.nanmax(exact.nodal_errors) < 1e-9
    assert exact.rollouts is None
    # ... and at the frame step the error is the midpoint scheme's O(dt^2): halving dt divides
    # it by ~4 (exactly (1 - 1/256) / (1/4 - 1/256) = 4.05 for an error C dt^2).
    half = rollout_errors(stepper_of(true), data, dt=FRAME_DT / 2, keep_states=False)
    assert at_frame.errors.shape == (2, 7) and half.errors.shape == (2, 13)
    assert np.isnan(half.errors[:, 1::2]).all() and not half.compared[1::2].any()
    ratio = at_frame.error_mean[2:] / half.error_mean[4::2]
    assert np.all((ratio > 3.5) & (ratio < 4.7)), ratio
    assert np.all(at_frame.errors[:, 0] == 0.0)
    assert 1e-3 < np.nanmax(at_frame.errors) < 0.2
    # Energy: the true model never increases it, and the reference energy is its own energy.
    assert at_frame.energy_increases == [0, 0]
    assert at_frame.reference_energy_increases == [0, 0]
    assert at_frame.reference_energy_increases_data == [0, 0]
    np.testing.assert_allclose(at_frame.reference_energies, at_frame.energies, rtol=1e-12)
    assert np.all(np.diff(at_frame.energies, axis=1) < 0)
    assert np.all(at_frame.dissipation > 0)
    np.testing.assert_allclose(
        at_frame.reference_energies_data[0], data[0].metadata["reference_energy"], rtol=1e-12
    )
    # Mean and spread over the trajectories.
    np.testing.assert_allclose(at_frame.error_mean, at_frame.errors.mean(axis=0))
    np.testing.assert_allclose(at_frame.error_std, at_frame.errors.std(axis=0))
    np.testing.assert_allclose(at_frame.nodal_error_mean, at_frame.nodal_errors.mean(axis=0))
    # The paper's metric is the RMSE of the nodal values, not the L2 error: on this coarse mesh
    # they differ by up to 27% (measured; the consistent against the lumped mass matrix).
    for i, k in ((0, 3), (1, 6)):
        u, truth = at_frame.rollouts[i].states[k].dat.data_ro, data[i].states[k].dat.data_ro
        expected = np.sqrt(np.mean((u - truth) ** 2) / np.mean(truth**2))
        assert at_frame.nodal_errors[i, k] == pytest.approx(expected, rel=1e-12)
    ratio = at_frame.nodal_errors[:, 1:] / at_frame.errors[:, 1:]
    assert np.all((ratio > 0.8) & (ratio < 1.4)) and ratio.max() > 1.05
    summary = at_frame.summary()
    assert summary["energy_increases"] == 0 and summary["failures"] == 0
    assert summary["error_last"] == pytest.approx(at_frame.error_mean[-1])


def test_perturbed_model_has_larger_errors_and_long_horizons_continue(setting):
    V, data, true = setting
    reference = rollout_errors(stepper_of(true), data, keep_states=False)
    perturbed = allen_cahn_model(V, epsilon=0.4)
    report = rollout_errors(
        stepper_of(perturbed), data, n_steps=10, reference_energy=true.energy_value
    )
    assert report.errors.shape == (2, 11)
    # Beyond the data (6 frames) the errors are nan but energies and mass go on.
    assert np.isnan(report.errors[:, 7:]).all()
    assert np.isfinite(report.energies).all() and np.isfinite(report.mass_drift).all()
    assert np.all(np.diff(report.energies, axis=1) <= 0)
    assert report.energy_increases == [0, 0]
    assert len(report.rollouts[0].states) == 11
    # The true model's error decays after the initial transient, the wrong model's grows.
    late = slice(4, 7)
    assert np.all(report.error_mean[late] > 3 * reference.error_mean[late])
    assert np.all(np.diff(report.error_mean[2:7]) > 0)
    # The report goes to strict JSON, nan as null.
    text = json.dumps(report.to_dict(), allow_nan=False)
    assert json.loads(text)["errors"][0][8] is None


def test_coarser_dt_compares_every_step_with_every_other_frame(setting, tmp_path):
    V, data, true = setting
    report = rollout_errors(stepper_of(true), data, dt=2 * FRAME_DT, progress=False)
    assert report.n_steps == 3 and report.compared.all()
    np.testing.assert_allclose(report.times, [0, 0.04, 0.08, 0.12])
    np.testing.assert_allclose(report.data_times, np.arange(7) * FRAME_DT)
    exported = export_vtk(report.trajectory_data(1), tmp_path / "rollout.pvd")
    assert exported.exists() and len(list((tmp_path / "rollout").glob("*.vtu"))) == 4
    path = write_json(tmp_path / "report.json", report.to_dict(arrays=False))
    assert json.loads(path.read_text())["summary"]["n_steps"] == 3


def test_black_box_is_judged_by_the_reference_energy(setting):
    V, data, true = setting
    traj = data[0]
    # Replaying the data exactly: zero errors, no own energy, the data's reference energy.
    replay = rollout_errors(
        lambda u0, dt: ReplayStepper(traj.states, dt), [traj], reference_energy=true.energy_value
    )
    assert np.all(replay.errors == 0.0)
    assert replay.energy_increases == [None] and np.isnan(replay.energies).all()
    assert replay.summary()["energy_increases"] is None
    assert replay.reference_energy_increases == [0]
    np.testing.assert_allclose(replay.reference_energies[0], replay.reference_energies_data[0])
    # Replaying it backwards raises the true energy at every step.
    backwards = rollout_errors(
        lambda u0, dt: ReplayStepper(traj.states[::-1], dt),
        [traj],
        reference_energy=true.energy_value,
    )
    assert backwards.reference_energy_increases == [6]
    assert backwards.errors[0, 1] > 0.01
    # A stepper that fails stops its trajectory cleanly: nan from there on, the failure kept.
    failing = rollout_errors(lambda u0, dt: ReplayStepper(traj.states, dt, fail_after=3), [traj])
    assert "StepFailure after 3 steps" in failing.failures[0]
    assert np.all(failing.errors[0, :4] == 0.0) and np.isnan(failing.errors[0, 4:]).all()
    assert failing.summary()["failures"] == 1 and failing.summary()["n_failed"] == 1
    # ... and counts as diverged (error 1) from the failing step on, in both metrics: the
    # statistics drop nothing (they used to be nanmeans, with nan after the failure).
    assert failing.failed_at == [4] and failing.summary()["first_failed_step"] == 4
    np.testing.assert_array_equal(failing.error_mean, [0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(failing.nodal_error_mean, [0, 0, 0, 0, 1, 1, 1])
    for metric in ("paper", "l2"):
        table = error_table(failing, metric=metric)
        assert table["metric"] == METRICS[metric]
        assert table["steps"] == [1, 2, 3, 4, 5, 6] and table["n"] == [1] * 6
        assert table["mean"] == [0, 0, 0, 1, 1, 1]
        assert table["n_failed"] == 1 and table["failed_at"] == [4]
        assert table["diverged_from"] == 4


# ------------------------------------------------------------------------ the paper's metric
N_GRID = 256


@pytest.fixture(scope="module")
def grid():
    """The paper's grid: a uniform periodic P1 mesh of 256 points on [0, 2 pi), and the DoFs' x."""
    mesh = fd.PeriodicIntervalMesh(N_GRID, 2 * math.pi)
    V = fd.FunctionSpace(mesh, "CG", 1)
    x = fd.Function(V).interpolate(fd.SpatialCoordinate(mesh)[0]).dat.data_ro % (2 * math.pi)
    return V, x


def on_grid(V, x, values):
    """The P1 function with nodal values ``values(x)`` at the grid points ``x``."""
    f = fd.Function(V)
    f.dat.data[:] = values(x)
    return f


def paper_rmse(prediction, truth):
    """The published metric on grid arrays, written directly in NumPy."""
    return np.sqrt(np.mean((prediction - truth) ** 2) / np.mean(truth**2))


class ScalingStepper:
    """Multiplies the state by ``factor`` every step; ``fail_after`` steps fail on trajectory
    ``fail_trajectory`` (counted by the resets of the one stepper ``rollout_errors`` builds)."""

    def __init__(self, u0, dt, factor, fail_after=None, fail_trajectory=0):
        self.u, self.dt, self.factor = u0.copy(deepcopy=True), dt, factor
        self.fail_after, self.fail_trajectory = fail_after, fail_trajectory
        self.trajectory, self.k, self.t = 0, 0, 0.0

    def reset(self, u, *, t=0.0):
        self.u, self.k, self.t = u.copy(deepcopy=True), 0, t
        self.trajectory += 1

    def rollout(self, n_steps, *, progress=False):
        traj = Trajectory(np.array([self.t]), [self.u.copy(deepcopy=True)])
        times = [self.t]
        for _ in range(n_steps):
            if self.trajectory == self.fail_trajectory and self.fail_after == self.k:
                raise StepFailure(f"step from t={self.t:.6g} failed")
            self.u = fd.Function(self.u.function_space()).assign(self.factor * self.u)
            self.k += 1
            self.t += self.dt
            nan = math.nan
            traj.records.append(StepRecord(self.t, self.dt, nan, {}, nan, nan, [nan], 0, 0))
            traj.states.append(self.u.copy(deepcopy=True))
            times.append(self.t)
        traj.times = np.array(times)
        return traj


def test_nodal_metric_is_the_papers_rmse_on_the_grid(grid):
    V, x = grid
    # the DoFs are the 256 grid points x_j = 2 pi j / 256, each once
    np.testing.assert_allclose(np.sort(x), 2 * math.pi * np.arange(N_GRID) / N_GRID, atol=1e-12)
    xs = 2 * math.pi * np.arange(N_GRID) / N_GRID

    def truth(x):
        return np.sin(x) + 0.5 * np.cos(3 * x) + 0.2

    def prediction(x):
        return 1.1 * truth(x) + 0.05 * np.sin(7 * x) ** 2

    value = nodal_relative_rmse(on_grid(V, x, prediction), on_grid(V, x, truth))
    expected = paper_rmse(prediction(xs), truth(xs))
    assert 0.05 < expected < 0.2
    assert value == pytest.approx(expected, rel=1e-12, abs=0)
    # It is not the relative L2 norm of the P1 functions (the mass matrix is not the identity).
    l2 = femeso.evaluation.l2_norm(on_grid(V, x, prediction) - on_grid(V, x, truth))
    l2 /= femeso.evaluation.l2_norm(on_grid(V, x, truth))
    assert abs(l2 - expected) > 1e-6 * expected
    zero = on_grid(V, x, np.zeros_like)
    assert nodal_relative_rmse(zero, zero) == 0.0
    assert nodal_relative_rmse(on_grid(V, x, truth), zero) == math.inf
    W = fd.FunctionSpace(V.mesh(), "CG", 2)
    with pytest.raises(ValueError, match="different degrees of freedom"):
        nodal_relative_rmse(fd.Function(W), zero)


def scaled_data(V, x, growth, n_frames=8):
    """Two trajectories on the grid: constant in time, and growing like ``growth**k``."""
    u0 = on_grid(V, x, lambda x: np.sin(x) + 0.3 * np.cos(2 * x))
    times = np.arange(n_frames) * 0.01
    constant = TrajectoryData(V, times, [u0.copy(deepcopy=True) for _ in times])
    grows = TrajectoryData(
        V, times, [fd.Function(V).assign(growth**k * u0) for k in range(n_frames)]
    )
    return u0, [constant, grows]


def test_divergence_counts_as_one_for_every_trajectory_from_its_step_on(grid):
    V, x = grid
    u0, data = scaled_data(V, x, 1.3)
    report = rollout_errors(lambda u, dt: ScalingStepper(u, dt, 1.3), data)
    # measured: trajectory 0 (constant data) has error 1.3^k - 1 in both metrics, trajectory 1
    # (data growing as the stepper) none; from step 3 on 1.3^k - 1 >= 1
    k = np.arange(8)
    for measured in (report.nodal_errors, report.errors):
        np.testing.assert_allclose(measured[0], 1.3**k - 1, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(measured[1], 0.0, atol=1e-14)
    u = report.rollouts[0].states[5].dat.data_ro
    truth = data[0].states[5].dat.data_ro
    assert report.nodal_errors[0, 5] == pytest.approx(paper_rmse(u, truth), rel=1e-12)
    # the paper's rule: from step 3 on every trajectory counts 1 (the mean is exactly 1) ...
    paper = error_table(report, metric="paper")
    assert paper["steps"] == [1, 2, 3, 4, 5, 7] and paper["diverged_from"] == 3
    assert paper["mean"][:2] == pytest.approx([0.15, 0.345], rel=1e-10)
    assert paper["mean"][2:] == [1.0, 1.0, 1.0, 1.0] and paper["std"][2:] == [0.0] * 4
    np.testing.assert_array_equal(report.nodal_error_mean[3:], 1.0)
    assert report.summary()["nodal_error_last"] == 1.0
    # ... the L2 table keeps the measured errors (also above 1): nothing dropped or capped
    l2 = error_table(report, metric="l2")
    assert l2["diverged_from"] is None and l2["n_failed"] == 0
    np.testing.assert_allclose(l2["mean"], (1.3 ** np.array(l2["steps"]) - 1) / 2, rtol=1e-10)
    # Persistence (u(t+dt) = u(t)) has the opposite errors: none on the constant trajectory.
    still = persistence_errors(data)
    np.testing.assert_allclose(still.nodal_errors[0], 0.0, atol=1e-14)
    for j in (1, 4, 7):
        expected = paper_rmse(data[1].states[0].dat.data_ro, data[1].states[j].dat.data_ro)
        assert still.nodal_errors[1, j] == pytest.approx(expected, rel=1e-12)
    assert still.energy_increases == [None, None] and still.failed_at == [None, None]
    assert error_table(still, metric="paper")["steps"] == paper["steps"]


def test_a_failed_rollout_is_counted_never_averaged_away(grid):
    V, x = grid
    u0, data = scaled_data(V, x, 1.01)
    # trajectory 1 reproduces its data exactly until its step 3 fails; trajectory 0 is off by 1%
    report = rollout_errors(
        lambda u, dt: ScalingStepper(u, dt, 1.01, fail_after=2, fail_trajectory=1), data
    )
    assert report.failed_at == [None, 3] and report.n_failed == 1
    assert np.isnan(report.errors[1, 3:]).all()  # measured: nothing after the failure
    l2 = error_table(report, metric="l2")
    k = np.array(l2["steps"])
    # trajectory 0's measured error, and trajectory 1's: 0 before its failure, 1 from it on
    expected = (1.01**k - 1 + np.where(k >= 3, 1.0, 0.0)) / 2
    np.testing.assert_allclose(l2["mean"], expected, rtol=1e-10)
    assert l2["n"] == [2] * 6 and l2["n_failed"] == 1 and l2["diverged_from"] == 3
    paper = error_table(report, metric="paper")
    assert paper["mean"][2:] == [1.0] * 4 and paper["failed_at"] == [3]
    assert np.isfinite(report.error_mean).all() and np.isfinite(report.nodal_error_mean).all()
    text = json.dumps(report.to_dict(), allow_nan=False)
    assert json.loads(text)["failed_at"] == [None, 3]


def test_results_tables_warnings_and_text_never_show_nan(grid):
    from femeso import jobs

    V, x = grid
    u0, data = scaled_data(V, x, 1.0, n_frames=6)  # two constant trajectories
    reports = {
        # worse than persistence (which is exact here), and failing on trajectory 1
        "onsager": rollout_errors(
            lambda u, dt: ScalingStepper(u, dt, 1.02, fail_after=3, fail_trajectory=1), data
        ),
        "classical": rollout_errors(lambda u, dt: ScalingStepper(u, dt, 1.001), data),
    }
    results = jobs.rollout_results(reports, horizon=0.03, data=Dataset(V, data))
    assert set(results["table"]) == {"onsager", "classical"}  # as before: L2, the models
    assert set(results["tables"]) == {"paper", "l2"}
    for metric, table in results["tables"].items():
        assert table["metric"] == METRICS[metric]
        assert set(table["rows"]) == {"onsager", "classical", "persistence"}
    assert results["tables"]["paper"]["rows"]["persistence"]["mean"] == [0.0] * 5
    assert results["onsager"]["n_failed"] == 1
    onsager = results["onsager"]
    assert onsager["nodal_error_at_training_horizon"] == pytest.approx(1.02**3 - 1, rel=1e-10)
    assert onsager["error_at_training_horizon"] == pytest.approx(1.02**3 - 1, rel=1e-10)
    warnings = results["warnings"]
    assert (
        "WARNING: onsager is worse than persistence (u(t+dt) = u(t)) at step 1: 2.0e-02 vs "
        "0.0e+00 (relative RMSE of nodal values (paper))"
    ) in warnings
    assert any("worse than the classical solver at the training horizon" in w for w in warnings)
    assert not any(w.startswith("WARNING: classical") for w in warnings)
    results.update(
        job="tiny",
        cells=V.dim(),
        dofs=V.dim(),
        ranks=1,
        training_horizon=0.03,
        long_horizon=0.05,
        step_sizes={
            "t_end": 0.05,
            "reference": "finest",
            "factors": [0.5, 1.0, 2.0],
            "error": [math.nan, 1e-4, math.nan],
            "failure": [None, None, "StepFailure after 1 steps: no"],
            "order": math.nan,
        },
        targets={"error_at_training_horizon": {"value": math.nan, "target": 0.02, "met": False}},
    )
    lines = jobs.summary_lines(results)
    text = "\n".join(lines)
    assert "nan" not in text.lower()
    assert (
        f"{METRICS['paper']} of the rollouts" in text and f"{METRICS['l2']} of the rollouts" in text
    )
    # the paper's table: steps 1, 5 (here the last compared one); the L2 table: 1 to 5
    paper_header = lines[lines.index(next(x for x in lines if x.startswith(METRICS["paper"]))) + 1]
    assert paper_header.split() == ["step", "1", "5", "failed"]
    assert "0.5x dt: reference, 1x dt: err 1.00e-04, 2x dt: failed; order -" in text
    assert "onsager: 1 of 2 rollouts failed (first at step 4)" in text
    assert warnings[0] in lines
    assert "target error_at_training_horizon: - (needs <= 0.02) NOT MET" in text
    # results.json: strict JSON
    json.dumps(to_jsonable(results), allow_nan=False)


def test_bad_inputs_raise_one_line_value_errors(setting):
    V, data, true = setting
    make = stepper_of(true)
    cases = [
        (lambda: rollout_errors(make, data, dt=0.7 * FRAME_DT), "must divide the frame step"),
        (lambda: rollout_errors(make, data, dt=1.5 * FRAME_DT), "must divide the frame step"),
        (lambda: rollout_errors(make, Dataset(V, [])), "no trajectories"),
        (lambda: rollout_errors(make, []), "no trajectories"),
        (lambda: rollout_errors(make, data, n_steps=0), "n_steps must be an integer >= 1"),
        (lambda: rollout_errors(make, data, dt=-1.0), "dt must be a positive number"),
        (
            lambda: rollout_errors(
                make,
                [TrajectoryData(V, [0.0, 0.02, 0.05], data[0].states[:3])],
            ),
            "not equally spaced",
        ),
        (
            lambda: rollout_errors(make, [TrajectoryData(V, [0.0], data[0].states[:1])]),
            "one frame only",
        ),
        (lambda: step_size_study(make, data[0], (1, 2), t_end=0.05), "whole multiple"),
        (lambda: step_size_study(make, data[0], (0, 1)), "factors must be positive"),
        (
            lambda: step_size_study(make, data[0], (1, 2), t_end=0.4, reference="data"),
            "has no frame at t_end",
        ),
        (
            lambda: density_comparison(true, true.energy.density, torch.zeros(0), conserved=False),
            "empty",
        ),
        (
            lambda: density_comparison(
                true, true.energy.density, torch.zeros(3, 2), conserved=False
            ),
            "must have shape",
        ),
        (
            lambda: mobility_comparison(true, 1.0, torch.zeros(4), kind="conserved"),
            "no 'conserved' mobility",
        ),
        (lambda: energy_scaling_exponent(true, data[0].states, [1.0]), "at least two positive"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------- step-size study
def test_step_size_study_shows_second_order_and_energy_stability(setting):
    V, data, true = setting
    study = step_size_study(stepper_of(true), data[0], factors=(0.25, 0.5, 1, 2), t_end=0.08)
    assert study["reference"] == "data" and study["n_steps"] == [16, 8, 4, 2]
    err = np.array(study["error"])
    assert np.all(np.diff(err) > 0)  # the error grows with the step ...
    assert 1.85 < study["order"] < 2.3  # ... as dt^2 (the data's own error is (dt/16)^2 smaller)
    assert all(1.8 < p < 2.4 for p in study["orders_pairwise"])
    assert study["energy_non_increasing"] == [True] * 4
    assert all(w > 0 for w in study["wall_time"])
    # Beyond the data the finest rollout is the reference (auto), and steps that do not divide
    # t_end are shortened to ones that do.
    far = step_size_study(stepper_of(true), data[0], factors=(0.3, 1, 2), t_end=0.2)
    assert far["reference"] == "finest" and "has no frame" in far["reference_note"]
    assert far["n_steps"] == [34, 10, 5] and far["dt"][0] == pytest.approx(0.2 / 34)
    assert math.isnan(far["error"][0])  # the reference itself
    assert far["error"][1] < far["error"][2]
    assert json.loads(json.dumps(to_jsonable(far), allow_nan=False))["error"][0] is None


# --------------------------------------------------------------------------- interpretability
def samples_of(model, data):
    return torch.cat([model.state_at_points(u) for t in data for u in t.states])


def affine_model(V, scale, offset, linear, m_scale):
    """Allen-Cahn's energy through an affine map, with a conserved mobility m_scale (1 + u^2)."""
    eps2 = 0.25
    density = femeso.KnownDensity(
        lambda u, x, ops: scale * 0.25 * (u[0] ** 2 - 1) ** 2 / eps2 + offset + linear * u[0]
    )
    mobility = femeso.ConservedMobility(
        Expression(lambda u, x, ops: m_scale * (1 + u[0] ** 2), name="m")
    )
    return femeso.OnsagerModel(V, femeso.Energy(density, kappa=1.0), mobility=mobility)


def test_density_comparison_recovers_identity_and_known_affine_maps(setting):
    V, data, true = setting
    u = samples_of(true, data)
    same = density_comparison(true, true.energy.density, u, conserved=False)
    assert same["slope"] == pytest.approx(1.0, abs=1e-10)
    assert same["offset"] == pytest.approx(0.0, abs=1e-10)
    assert same["linear"] is None
    assert same["r2"] == pytest.approx(1.0, abs=1e-10)
    assert same["second_derivative"]["slope"] == pytest.approx(1.0, abs=1e-12)
    assert same["n_samples"] == u.shape[0]

    learned = affine_model(V, 2.0, 3.0, 0.5, 0.5)
    fit = density_comparison(learned, true.energy.density, u, conserved=True)
    assert fit["slope"] == pytest.approx(2.0, abs=1e-10)
    assert fit["offset"] == pytest.approx(3.0, abs=1e-9)
    assert fit["linear"] == pytest.approx(0.5, abs=1e-10)
    assert fit["r2"] == pytest.approx(1.0, abs=1e-10)
    assert fit["second_derivative"]["slope"] == pytest.approx(2.0, abs=1e-12)
    assert fit["second_derivative"]["r2"] == pytest.approx(1.0, abs=1e-12)
    # Without the linear term (a local mobility) the same map is not a gauge: the fit says so.
    local = density_comparison(learned, true.energy.density, u, conserved=False)
    assert local["r2"] < 1 - 1e-6
    # The gauge-fitted learned curve lies on the true one.
    grid = np.linspace(-1.2, 1.2, 41)
    curves = density_curves(learned, grid, true_density=true.energy.density, fit=fit)
    np.testing.assert_allclose(curves["learned"], curves["true"], atol=1e-9)


def test_mobility_comparison_recovers_the_scale_and_the_gauge_product(setting):
    V, data, true = setting
    u = samples_of(true, data)
    learned = affine_model(V, 2.0, 3.0, 0.5, 0.5)
    fit = mobility_comparison(
        learned, lambda u: 1 + u[:, 0] ** 2, u, kind="conserved", density_slope=2.0
    )
    assert fit["scale"] == pytest.approx(0.5, abs=1e-12)
    assert fit["r2"] == pytest.approx(1.0, abs=1e-12)
    assert fit["product"] == pytest.approx(1.0, abs=1e-12)
    # The true Allen-Cahn mobility is the constant 1: a constant target still gives R^2 = 1.
    const = mobility_comparison(true, 1.0, u, kind="local")
    assert const["scale"] == pytest.approx(1.0) and const["r2"] == pytest.approx(1.0)
    # A wrong shape of the learned mobility shows in R^2.
    wrong = mobility_comparison(learned, 1.0, u, kind="conserved")
    assert wrong["r2"] < 0.99


@pytest.mark.parametrize("power", [2, 4])
def test_energy_scaling_exponent_of_pure_powers(setting, power):
    V, data, _ = setting
    density = femeso.KnownDensity(lambda u, x, ops: 0.7 / power * u[0] ** power)
    model = femeso.OnsagerModel(
        V, femeso.Energy(density, kappa=1.0), mobility=femeso.LocalMobility(1.0)
    )
    states = data[0].states[::2]
    result = energy_scaling_exponent(model, states)
    assert len(result["exponents"]) == len(states)
    np.testing.assert_allclose(result["exponents"], power, atol=1e-10)
    assert result["std"] < 1e-10
    np.testing.assert_allclose(result["local_exponents"], power, atol=1e-9)
    if power == 2:  # scaling the fluctuation: the cross term integrates to zero
        centred = energy_scaling_exponent(model, states, np.geomspace(0.5, 2, 4), center=True)
        np.testing.assert_allclose(centred["exponents"], 2.0, atol=1e-8)


def test_energy_scaling_crosses_over_from_quadratic_to_quartic_and_energy_parts(setting):
    V, data, true = setting
    density = femeso.KnownDensity(lambda u, x, ops: 0.5 * u[0] ** 2 + 0.25 * u[0] ** 4)
    model = femeso.OnsagerModel(
        V, femeso.Energy(density, kappa=1.0), mobility=femeso.LocalMobility(1.0)
    )
    result = energy_scaling_exponent(model, data[0].states[:2], np.geomspace(1e-3, 1e3, 13))
    # a^2 A/2 + a^4 B/4: local exponents rise from 2 (small amplitude) to 4 (large amplitude).
    local = np.array(result["local_exponents"])
    assert np.all(np.diff(local, axis=1) > 0)
    np.testing.assert_allclose(local[:, 0], 2.0, atol=1e-2)
    np.testing.assert_allclose(local[:, -1], 4.0, atol=1e-2)
    assert all(2.0 < p < 4.0 for p in result["exponents"])
    parts = energy_parts_along(true, data[0].states)
    total = parts["pointwise"] + parts["gradient"] + parts["nonlocal"]
    np.testing.assert_allclose(parts["total"], total, rtol=1e-14)
    np.testing.assert_allclose(parts["total"], data[0].metadata["reference_energy"], rtol=1e-12)
    assert np.all(parts["nonlocal"] == 0)


# ---------------------------------------------------------------------------------- plots
def is_png(path):
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_plots_write_png_files(setting, tmp_path):
    V, data, true = setting
    report = rollout_errors(stepper_of(allen_cahn_model(V, epsilon=0.45)), data, n_steps=8)
    traj = data[0]
    learned = report.rollouts[0].states[: len(traj)]
    p1 = plot_fields(
        tmp_path / "fields_1d.png",
        {"true": traj.states, "learned": learned},
        traj.times,
        title="Allen-Cahn 1-D",
    )
    assert is_png(p1)
    p2 = plot_curves(
        tmp_path / "errors.png",
        report.times,
        {"learned": report.errors, "mean": report.error_mean},
        ylabel="relative L2 error",
        logy=True,
        train_end=0.06,
    )
    p3 = plot_curves(
        tmp_path / "energy.png",
        {"model": report.times, "data": report.data_times},
        {"model": report.energies[0], "data": traj.metadata["reference_energy"]},
        ylabel="V",
    )
    grid = np.linspace(-1.3, 1.3, 50)
    fit = density_comparison(true, true.energy.density, grid, conserved=False)
    curves = density_curves(true, grid, true_density=true.energy.density, fit=fit)
    p4 = plot_density(
        tmp_path / "density.png", grid, curves, mobility={"true": np.ones(50), "x": grid**2}
    )
    assert all(is_png(p) for p in (p2, p3, p4))
    # 2-D: tripcolor, three field columns (with a black box) and two error columns.
    mesh = fd.UnitSquareMesh(6, 6)
    W = fd.FunctionSpace(mesh, "CG", 1)
    x, y = fd.SpatialCoordinate(mesh)
    fields = {
        name: [fd.Function(W).interpolate(fd.sin(3 * x + c * t) * y) for t in (0.0, 1.0, 2.0)]
        for name, c in (("true", 1.0), ("learned", 1.1), ("black box", 1.3))
    }
    p5 = plot_fields(tmp_path / "fields_2d.png", fields, [0.0, 1.0, 2.0], rows=[0, 2])
    assert is_png(p5)
    with pytest.raises(ValueError, match="has 2 entries for 3 times"):
        plot_fields(tmp_path / "bad.png", {"true": fields["true"][:2]}, [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="series 'a' has shape"):
        plot_curves(tmp_path / "bad.png", [0.0, 1.0], {"a": [1.0, 2.0, 3.0]}, ylabel="y")


def test_color_limits_keep_the_data_readable_when_a_model_diverges():
    ranges = {"true": (-1.0, 1.0), "learned": (-1.2, 1.1), "baseline": (-8.0, 8.0)}
    # the data and a close learned model set the scale; the diverging baseline is clipped
    assert color_limits(ranges, ["true"], ["learned"]) == (-1.2, 1.1, ["baseline"])
    assert color_limits(ranges, ["true"]) == (-1.0, 1.0, ["learned", "baseline"])
    # a learned model that diverges itself does not widen the scale either
    assert color_limits(ranges, ["true"], ["baseline"]) == (-1.0, 1.0, ["learned", "baseline"])
    # ... up to the slack: half the data's span beyond it on either side
    assert color_limits({"a": (0.0, 2.0), "b": (-1.0, 3.0)}, ["a"], ["b"])[:2] == (-1.0, 3.0)
    assert color_limits({"a": (0.0, 2.0), "b": (-1.0, 3.01)}, ["a"], ["b"])[:2] == (0.0, 2.0)
    # a non-finite field is always clipped; a constant reference still gets a positive span
    lo, hi, clipped = color_limits({"true": (0.5, 0.5), "nan": (math.nan, math.nan)}, ["true"])
    assert lo == 0.5 and hi > lo and clipped == ["nan"]


def _line_range(f):
    """The range of the values a 1-D field plot draws (at the nodes of ``plots._line_data``)."""
    from femeso.evaluation.plots import _line_data

    values = _line_data(f)[1]
    return float(values.min()), float(values.max())


def test_field_plots_clip_a_diverging_model_and_label_its_range(tmp_path, monkeypatch):
    import femeso.evaluation.plots as plots

    figures = []

    def keep(fig, path):
        figures.append(fig)
        return save(fig, path)

    save = plots._save
    monkeypatch.setattr(plots, "_save", keep)
    mesh = fd.UnitSquareMesh(8, 8)
    W = fd.FunctionSpace(mesh, "CG", 1)
    x, y = fd.SpatialCoordinate(mesh)
    true = fd.Function(W).interpolate(fd.sin(3 * x) * y)
    learned = fd.Function(W).interpolate(1.05 * fd.sin(3 * x) * y + 0.01)
    baseline = fd.Function(W).interpolate(8 * fd.cos(5 * x) * y)
    fields = {"true": [true], "learned": [learned], "baseline": [baseline]}
    path = plot_fields(
        tmp_path / "fields.png", fields, [1.0], reference="true", scale_with=["learned"]
    )
    assert is_png(path)
    (fig,) = figures
    panels = {ax.get_title().split(",")[0]: ax for ax in fig.axes if ax.get_title()}
    lo = min(true.dat.data_ro.min(), learned.dat.data_ro.min())
    hi = max(true.dat.data_ro.max(), learned.dat.data_ro.max())
    for name in ("true", "learned", "baseline"):
        assert panels[name].collections[0].get_clim() == pytest.approx((lo, hi), rel=1e-12)
    assert "clipped" in panels["baseline"].get_title()
    assert f"range [{baseline.dat.data_ro.min():.3g}, " in panels["baseline"].get_title()
    assert "clipped" not in panels["true"].get_title() + panels["learned"].get_title()
    # the errors: the learned model's sets the scale, the baseline's is clipped
    bound = float(np.abs(learned.dat.data_ro - true.dat.data_ro).max())
    errors = {n: panels[f"{n} - true"] for n in ("learned", "baseline")}
    for ax in errors.values():
        assert ax.collections[0].get_clim() == pytest.approx((-bound, bound), rel=1e-9)
    assert "clipped" in errors["baseline"].get_title()
    # 1-D: the axis limits are the data's (with a margin), the baseline's label its range
    figures.clear()
    line = fd.FunctionSpace(fd.PeriodicIntervalMesh(64, 2 * math.pi), "CG", 1)
    (s,) = fd.SpatialCoordinate(line.mesh())
    one_d = {
        "true": [fd.Function(line).interpolate(fd.sin(s))],
        "baseline": [fd.Function(line).interpolate(8 * fd.sin(2 * s))],
    }
    assert is_png(plot_fields(tmp_path / "line.png", one_d, [0.0]))
    ax = figures[0].axes[0]
    data_lo, data_hi = _line_range(one_d["true"][0])
    margin = 0.05 * (data_hi - data_lo)
    assert ax.get_ylim() == pytest.approx((data_lo - margin, data_hi + margin), rel=1e-12)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    low = _line_range(one_d["baseline"][0])[0]
    assert legend[0] == "true" and legend[1].startswith(f"baseline (range [{low:.3g}, ")


# ------------------------------------------------------------------------------- parallel
def errors_on(comm):
    mesh = fd.PeriodicIntervalMesh(32, 2 * math.pi, comm=comm)
    V = fd.FunctionSpace(mesh, "CG", 1)
    data = generate_dataset(
        V,
        ac_factory(),
        n_trajectories=1,
        n_frames=3,
        frame_dt=FRAME_DT,
        seed=4,
        substeps=4,
        initial_condition=paper_sine_initial_condition,
        progress=False,
    )
    true = ac_factory()(V)
    perturbed = allen_cahn_model(V, epsilon=0.45)
    report = rollout_errors(stepper_of(perturbed), data, reference_energy=true.energy_value)
    return data, true, report


@pytest.mark.parallel(nprocs=2)
def test_parallel_evaluation_matches_serial_and_plots_on_rank_zero(tmp_path_factory):
    comm = fd.COMM_WORLD
    assert comm.size == 2
    data, true, report = errors_on(comm)
    _, _, serial = errors_on(fd.COMM_SELF)
    np.testing.assert_allclose(report.errors, serial.errors, rtol=1e-9, atol=1e-13)
    # the nodal RMSE counts every DoF once over the ranks (owned values, no halo copies)
    np.testing.assert_allclose(report.nodal_errors, serial.nodal_errors, rtol=1e-9, atol=1e-13)
    assert np.all(report.nodal_errors[:, 1:] > 0)
    # persistence: frame 0 against frame k, the same in parallel
    still, still_serial = persistence_errors(data), persistence_errors(errors_on(fd.COMM_SELF)[0])
    np.testing.assert_allclose(still.nodal_errors, still_serial.nodal_errors, rtol=1e-12)
    np.testing.assert_allclose(report.energies, serial.energies, rtol=1e-10)
    np.testing.assert_allclose(report.reference_energies, serial.reference_energies, rtol=1e-10)
    # Fits gather the samples of every rank: the same numbers everywhere.
    u = samples_of(true, data)
    fit = density_comparison(true, true.energy.density, u, conserved=False)
    assert fit["n_samples"] == comm.allreduce(u.shape[0])
    assert fit["slope"] == pytest.approx(1.0, abs=1e-10)
    assert comm.allgather(fit["r2"])[0] == comm.allgather(fit["r2"])[1]
    # Field plots need the whole mesh: skipped; curves are written once, by rank 0.
    directory = comm.bcast(str(tmp_path_factory.mktemp("plots")) if comm.rank == 0 else None)
    assert plot_fields(f"{directory}/f.png", {"true": data[0].states}, data[0].times) is None
    path = plot_curves(f"{directory}/e.png", report.times, {"m": report.energies}, ylabel="V")
    comm.barrier()
    if comm.rank == 0:
        assert is_png(path)


def test_the_range_every_rollout_reached_is_reported(setting):
    """Issue 17: a model leaving the data's physical range must be seen, per rollout."""
    V, data, true = setting
    report = rollout_errors(stepper_of(true), data)
    for i, rollout in enumerate(report.rollouts):
        values = np.concatenate([s.dat.data_ro.ravel() for s in rollout.states])
        assert report.state_range[i].tolist() == [values.min(), values.max()]
    summary = report.summary()
    assert summary["state_min"] == report.state_range[:, 0].min()
    assert summary["state_max"] == report.state_range[:, 1].max()
    # a start shifted up reaches further: the range follows the rollout, not the data
    start = data.trajectories[0].states[0].copy(deepcopy=True)
    start.dat.data[...] += 2.0
    one_frame = [TrajectoryData(space=V, times=np.array([0.0]), states=[start])]
    shifted = rollout_errors(stepper_of(true), one_frame, dt=FRAME_DT, n_steps=3)
    assert shifted.summary()["state_max"] > summary["state_max"] + 1.0


def test_the_energy_plot_averages_what_exists_and_says_how_many_rollouts_are_short():
    from femeso.jobs.figures import _mean_of_available, _short_label

    values = np.array([[1.0, 2.0, 3.0], [3.0, np.nan, np.nan], [np.nan, np.nan, np.nan]])
    mean, short = _mean_of_available(values)
    assert mean[0] == 2.0 and mean[1] == 2.0 and mean[2] == 3.0
    assert short == 2
    assert _short_label(short, 3) == "; 2 of 3 rollouts incomplete"
    assert _short_label(0, 3) == ""
    mean, short = _mean_of_available(np.full((2, 2), np.nan))  # no warning, no value invented
    assert np.all(np.isnan(mean)) and short == 2
