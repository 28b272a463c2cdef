"""State- and space-dependent mobilities m(u, x): the graded truth and the ``neural_x`` model.

The truth (``data.mobility = "graded"``) is checked against its formula, for positivity and for
its variation across the domain, and its UFL form against the quadrature values the stepper uses.
A tiny version of experiments/allen_cahn_l_shape_graded_mobility.toml (2 training trajectories of
6 frames, warm start + 3 Levenberg--Marquardt iterations) runs end to end; measured: the learned
energy never increases, the trained model's first step beats the untrained model's by a factor,
the report compares the learned m(u, x) with the truth in the gauge over the data's (u, x)
samples, and a neural_x job is not transferred to other meshes. The neural_x mobility is
non-negative for arbitrary parameters (hypothesis), and the warm start sets it to a constant.

Gradients and Jacobians of position-dependent mobility networks are Taylor-tested in
tests/test_adjoint.py and tests/test_gauss_newton.py (``dissipative_model``: a local neural
m(u, x) on the plate with holes).
"""

from pathlib import Path

import firedrake as fd
import numpy as np
import pytest
import torch
import ufl
from hypothesis import given, settings
from hypothesis import strategies as st

from femeso import jobs
from femeso.config import ConfigError, validate
from femeso.data.generators import GRADE
from femeso.data.initial_conditions import random_smooth_field
from femeso.evaluation import mobility_comparison, rollout_errors
from femeso.evaluation.transfer import transfer
from femeso.jobs.models import _true_mobility
from femeso.meshes import bounding_box
from femeso.model.fields import DTYPE
from femeso.training.warm_start import warm_start
from models import tiny_experiment

#: Warm start + 3 Levenberg-Marquardt iterations, plots on (on top of models.TINY).
GRADED = {
    "training": {"iterations": 0, "validate_every": 3},
    "evaluation": {"horizon_factor": 1, "plots": True},
}


def tiny_config(directory: Path, **sections):
    raw = tiny_experiment("allen_cahn_l_shape_graded_mobility", directory / "out", GRADED, sections)
    return validate(raw, "graded mobility (tiny)")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The tiny job, run once: its configuration and results."""
    config = tiny_config(tmp_path_factory.mktemp("graded"))
    return config, jobs.run(config, progress=False)


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    return jobs.build_space(tiny_config(tmp_path_factory.mktemp("space")))


def test_graded_truth_is_positive_and_grows_across_the_domain(space, tmp_path):
    config = tiny_config(tmp_path)
    truth = jobs.true_model(config, space)
    coefficient = truth.mobilities[0].coefficient
    assert coefficient.uses_position and coefficient.state_dependent
    x = truth.x
    lo, hi = bounding_box(truth.mesh)
    np.testing.assert_allclose([lo, hi], [[0, 0], [1, 1]], atol=1e-12)
    scale = config.data.mobility_scale
    for value in (-1.0, 0.0, 0.5, 1.0):
        u = torch.full((len(x), 1), value, dtype=DTYPE)
        m = coefficient(u, x)[:, 0]
        expected = scale * 0.5 * (1 + value**2) * (1 + GRADE * x[:, 0])
        torch.testing.assert_close(m, expected, rtol=1e-14, atol=0)
        # at a fixed state it grows by 1 + GRADE across the domain (quadrature points are
        # interior: a little less)
        assert 1.7 < float(m.max() / m.min()) <= 1 + GRADE
    u = torch.randn(len(x), 1, generator=torch.Generator().manual_seed(0), dtype=DTYPE) * 3
    assert float(coefficient(u, x).min()) >= scale * 0.5
    # the UFL form (a reader's solver) and the quadrature values (femeso's stepper) agree
    u0 = random_smooth_field(space, seed=0, amplitude=0.9)
    X = ufl.SpatialCoordinate(truth.mesh)
    assembled = fd.assemble(coefficient.ufl([u0], X)[0] * truth.rule.dx)
    at_points = float(truth.rule.integrate(coefficient(truth.state_at_points(u0), x)[:, 0]))
    assert assembled == pytest.approx(at_points, rel=1e-12)


def test_neural_x_mobility_reads_the_position_normalised_by_the_bounding_box(space, tmp_path):
    model = jobs.learned_model(tiny_config(tmp_path), space)
    coefficient = model.mobilities[0].coefficient
    field = coefficient.field
    assert field.uses_position and field.dim == 2
    # the state's normalisation from the job (0, 1), the position's from [0, 1]^2
    np.testing.assert_allclose(field.input_center.numpy(), [0.0, 0.5, 0.5])
    np.testing.assert_allclose(field.input_scale.numpy(), [1.0, 0.5, 0.5])
    u = torch.zeros(len(model.x), 1, dtype=DTYPE)
    with torch.no_grad():
        m = coefficient(u, model.x)[:, 0]
    assert float(m.max() - m.min()) > 1e-3  # an untrained field of x: not constant
    X = ufl.SpatialCoordinate(model.mesh)
    zero = fd.Constant(0.0)
    assembled = fd.assemble(coefficient.ufl([zero], X)[0] * model.rule.dx)
    assert assembled == pytest.approx(float(model.rule.integrate(m)), rel=1e-12)


_MODELS: dict = {}


def _neural_x_model(directory: Path):
    if "model" not in _MODELS:
        config = tiny_config(directory)
        _MODELS["model"] = jobs.learned_model(config, jobs.build_space(config))
    return _MODELS["model"]


@settings(max_examples=30, deadline=None, derandomize=True)
@given(seed=st.integers(0, 100_000), scale=st.sampled_from([0.3, 3.0, 30.0]))
def test_neural_x_mobility_is_non_negative_for_every_theta(tmp_path_factory, seed, scale):
    model = _neural_x_model(tmp_path_factory.getbasetemp())
    coefficient = model.mobilities[0].coefficient
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in coefficient.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
        u = torch.randn(5000, 1, generator=g, dtype=DTYPE) * 10
        x = torch.rand(5000, 2, generator=g, dtype=DTYPE) * 3 - 1  # beyond the domain too
        m = coefficient(u, x)[:, 0]
        raw = coefficient.field(u, x)[:, 0]
    assert bool(torch.all(torch.isfinite(m))) and int((m < 0).sum()) == 0
    # strictly positive wherever the softplus does not underflow
    assert int((m[raw > -30] <= 0).sum()) == 0


def untrained_first_step_error(config) -> float:
    space = jobs.build_space(config)
    data = jobs.load_data(config, space)
    model = jobs.learned_model(config, space)
    report = rollout_errors(jobs.stepper_factory(model), data["test"], n_steps=1, keep_states=False)
    return float(report.error_mean[1])


def test_tiny_neural_x_job_learns_and_reports_the_mobility_in_the_gauge(job):
    config, results = job
    assert results["onsager"]["energy_increases"] == 0
    trained = results["table"]["onsager"]["mean"][0]
    untrained = untrained_first_step_error(config)
    # measured: 6.1e-3 against 5.1e-2 after the warm start and 3 LM iterations
    assert trained < 0.2 * untrained, (trained, untrained)
    start = results["training"]["onsager"]["warm_start"]
    assert start["applied"] and start["mobility_error"] < 1e-2
    m = results["mobility"]
    assert m["position"] and m["kind"] == "local"
    # 2 x 7 training states at every quadrature point
    space = jobs.build_space(config)
    assert m["n_samples"] == 14 * jobs.learned_model(config, space).x.shape[0]
    g = m["gauge"]
    assert g["slope"] == pytest.approx(config.model.kappa_ref)  # kappa_ref / kappa_true
    assert 0 < g["relative_l2"] < 0.3 and np.isfinite(g["r2"])  # measured 0.17 (3 LM iterations)
    assert any(p.endswith("mobility.png") for p in results["plots"])
    lines = "\n".join(jobs.summary_lines(results))
    assert "over the data's (u, x) samples" in lines


def test_mobility_comparison_over_stacked_states(job):
    """The truth against itself is exact; a mobility of u only cannot follow the x-dependence."""
    config, _ = job
    space = jobs.build_space(config)
    data = jobs.load_data(config, space)
    truth = jobs.true_model(config, space)
    samples = torch.cat([truth.state_at_points(s) for s in data["train"].trajectories[0].states])
    true_m = _true_mobility(config, space.mesh())
    exact = mobility_comparison(truth, true_m, samples, kind="local", gauge_slope=1.0)
    assert exact["position"]
    assert exact["gauge"]["relative_l2"] < 1e-14 and exact["gauge"]["r2"] == pytest.approx(1.0)
    plain = jobs.learned_model(
        tiny_config(config.output.parent, model={"mobility": "neural"}), space
    )
    assert not plain.mobilities[0].coefficient.uses_position
    fit = mobility_comparison(plain, true_m, samples, kind="local", gauge_slope=0.01)
    assert fit["position"] and fit["gauge"]["relative_l2"] > 0.01
    with pytest.raises(ValueError, match="depends on position"):
        mobility_comparison(truth, true_m, samples[:-1], kind="local")


def test_warm_start_sets_the_neural_x_mobility_to_a_constant(job):
    config, _ = job
    space = jobs.build_space(config)
    data = jobs.load_data(config, space)
    model = jobs.learned_model(config, space)
    result = warm_start(model, data["train"])
    assert result.applied
    c = result.match.coefficient
    lo, hi = result.match.state_range()
    coefficient = model.mobilities[0].coefficient
    with torch.no_grad():
        for value in np.linspace(lo, hi, 5):
            u = torch.full((len(model.x), 1), float(value), dtype=DTYPE)
            m = coefficient(u, model.x)[:, 0]
            assert float((m / c - 1).abs().max()) < 0.05, value


def test_neural_x_job_is_not_transferred(job):
    config, _ = job
    with pytest.raises(ValueError, match="neural_x"):
        transfer(config, "plate_with_holes", n_test=1, progress=False)


@pytest.mark.parametrize(
    "sections,message",
    [
        (
            {"mesh": {"name": "periodic_interval"}, "data": {"equation": "kdv"}},
            "data.mobility = 'graded' needs a dissipative equation",
        ),
        ({"data": {"mobility": "linear"}}, "data.mobility must be 'degenerate', 'graded' or"),
        ({"data": {"mobility_scale": 0.0}}, "data.mobility_scale must be > 0"),
        ({"model": {"mobility": "neural_y"}}, "model.mobility must be one of"),
    ],
)
def test_bad_graded_settings_are_one_line_errors(tmp_path, sections, message):
    with pytest.raises(ConfigError, match=message) as err:
        tiny_config(tmp_path, **sections)
    assert "\n" not in str(err.value)
