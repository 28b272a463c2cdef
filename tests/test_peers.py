"""Peer models: the nodal layout, training and rollouts of every peer, and peers in a job."""

from __future__ import annotations

import json

import firedrake as fd
import numpy as np
import pytest
import torch

from femeso import jobs
from femeso.config import ConfigError, validate
from femeso.data.trajectories import Dataset, TrajectoryData
from femeso.peers import peer_class
from femeso.peers.base import FitSettings, PeerStepper, fit
from femeso.peers.nodal import NodalLayout
from models import mesh, tiny_experiment

PEERS = ("fno", "meshgraphnet", "spectral_onsager")
#: small networks: the tests check behaviour, not accuracy
SMALL = {
    "fno": {"modes": 8, "width": 16, "layers": 2},
    "meshgraphnet": {"width": 16, "steps": 2},
    "spectral_onsager": {"width": 8},
}


def heat_data(space, n_traj: int, seed: int, frames: int = 11, dt: float = 0.02) -> Dataset:
    """Exact solutions of u_t = u_xx on the periodic interval: a few decaying modes each."""
    layout = NodalLayout(space)
    x = layout.positions[:, 0]
    rng = np.random.default_rng(seed)
    times = dt * np.arange(frames)
    trajectories = []
    for _ in range(n_traj):
        ks = rng.choice(np.arange(1, 5), size=2, replace=False)
        amps, phases = rng.uniform(0.5, 1.0, 2), rng.uniform(0, 2 * np.pi, 2)

        def u(t, ks=ks, amps=amps, phases=phases):
            return sum(
                a * np.exp(-(k**2) * t) * np.sin(k * x + p)
                for k, a, p in zip(ks, amps, phases, strict=True)
            )

        states = [layout.function(u(t) if layout.comm.rank == 0 else None) for t in times]
        trajectories.append(TrajectoryData(space, times, states))
    return Dataset(space, trajectories)


@pytest.fixture(scope="module")
def space():
    return fd.FunctionSpace(mesh("periodic_interval"), "CG", 1)


def test_the_layout_orders_the_dofs_by_position_and_moves_states_both_ways(space):
    layout = NodalLayout(space)
    assert layout.grid_shape == (48,) and layout.n == 48
    x = layout.positions[:, 0]
    np.testing.assert_allclose(np.diff(x), 2 * np.pi / 48, rtol=1e-12)
    assert layout.periods[0] == pytest.approx(2 * np.pi)
    u = fd.Function(space).interpolate(fd.sin(fd.SpatialCoordinate(space.mesh())[0]))
    np.testing.assert_allclose(layout.gather(u), np.sin(x), atol=1e-14)
    back = layout.function(layout.gather(u))
    assert np.array_equal(back.dat.data_ro, u.dat.data_ro)
    # the mesh graph of a periodic P1 interval: each node has two neighbours, both directions
    edges = layout.edges
    assert edges.shape == (2, 96)
    assert set(np.bincount(edges[1])) == {2}
    gaps = np.abs(layout.relative_positions(edges)[:, 0])
    np.testing.assert_allclose(gaps, 2 * np.pi / 48, rtol=1e-12)  # minimum image at the seam


def test_a_2d_tensor_grid_is_found_and_an_unstructured_mesh_is_not():
    grid = NodalLayout(fd.FunctionSpace(fd.PeriodicRectangleMesh(6, 4, 3.0, 2.0), "CG", 1))
    assert grid.grid_shape == (4, 6)
    values = grid.positions[:, 0].reshape(grid.grid_shape)  # row-major, x fastest
    np.testing.assert_allclose(values[0], np.arange(6) * 0.5, atol=1e-12)
    plate = NodalLayout(fd.FunctionSpace(mesh("plate"), "CG", 1))
    assert plate.grid_shape is None
    with pytest.raises(ValueError, match="uniform 1-D or 2-D grid"):
        peer_class("fno")(plate, 0.1)


@pytest.mark.parametrize("name", PEERS)
def test_every_peer_learns_toy_dynamics_and_rolls_out(space, name, tmp_path):
    train, validation = heat_data(space, 6, seed=0), heat_data(space, 2, seed=1)
    layout = NodalLayout(space)
    torch.manual_seed(0)
    peer = peer_class(name)(layout, 0.02, **SMALL[name])
    settings = FitSettings(
        iterations=100, learning_rate=3e-3, batch_size=8, unroll=2, validate_every=20
    )
    summary = fit(peer, train, validation, settings)
    assert summary.loss_last < 0.5 * summary.loss_first, summary
    assert np.isfinite(summary.best_validation)
    assert summary.parameters == sum(p.numel() for p in peer.parameters())
    u0 = validation.trajectories[0].states[0]
    stepper = PeerStepper(peer, u0, 0.02)
    rollout = stepper.rollout(5)
    assert len(rollout.states) == 6 and len(rollout.records) == 5
    assert np.allclose(rollout.times, 0.02 * np.arange(6))
    for state in rollout.states:
        assert state.function_space() == space and np.isfinite(state.dat.data_ro).all()
    assert stepper.seconds_per_step > 0
    with pytest.raises(ValueError, match="trained for steps of 0.02"):
        PeerStepper(peer, u0, 0.01)
    # saved and loaded, the peer predicts the same states
    path = peer.save(tmp_path / "peer.pt")
    again = peer_class(name)(layout, 0.02, **SMALL[name])
    again.load_parameters(path)
    again.eval()
    second = PeerStepper(again, u0, 0.02).rollout(5)
    assert np.array_equal(second.states[-1].dat.data_ro, rollout.states[-1].dat.data_ro)


def test_a_peer_file_for_another_model_is_refused(space, tmp_path):
    layout = NodalLayout(space)
    path = peer_class("fno")(layout, 0.02, **SMALL["fno"]).save(tmp_path / "fno.pt")
    other = peer_class("spectral_onsager")(layout, 0.02, **SMALL["spectral_onsager"])
    with pytest.raises(ValueError, match="a 'fno' model, not 'spectral_onsager'"):
        other.load_parameters(path)
    wider = peer_class("fno")(layout, 0.02, modes=8, width=24, layers=2)
    with pytest.raises(ValueError, match="saved with options"):
        wider.load_parameters(path)


@pytest.mark.parametrize(
    ("baseline", "message"),
    [
        ({"models": ["fno", "gnn"]}, "baseline.models: unknown entry 'gnn'"),
        ({"models": ["fno", "fno"]}, "baseline.models names an entry twice"),
        ({"models": "fno"}, "baseline.models must be a list"),
        ({"options": {"gnn": {}}}, "baseline.options.gnn: no peer of that name"),
        ({"options": {"fno": 3}}, "baseline.options.fno must be a table"),
        # the same checks, and messages, as baseline.peer_batch_size / _unroll / _learning_rate
        (
            {"options": {"fno": {"batch_size": 0}}},
            "baseline.options.fno.batch_size must be >= 1, got 0",
        ),
        (
            {"options": {"meshgraphnet": {"unroll": 1.5}}},
            "baseline.options.meshgraphnet.unroll must be an integer, got float 1.5",
        ),
        (
            {"options": {"spectral_onsager": {"learning_rate": "fast"}}},
            "baseline.options.spectral_onsager.learning_rate must be a number, got str 'fast'",
        ),
        (
            {"options": {"fno": {"learning_rate": 0}}},
            "baseline.options.fno.learning_rate must be > 0, got 0",
        ),
    ],
)
def test_bad_peer_settings_are_one_line_errors(baseline, message):
    with pytest.raises(ConfigError, match=message) as info:
        validate({"baseline": baseline}, "job.toml")
    assert "\n" not in str(info.value)


def test_an_unknown_peer_option_is_one_line(space):
    config = validate({"baseline": {"models": ["fno"], "options": {"fno": {"depth": 3}}}})
    from femeso.peers.runner import build_peer

    with pytest.raises(ValueError, match="baseline.options.fno: .*'depth'") as info:
        build_peer(config, "fno", NodalLayout(space), 0.1)
    assert "\n" not in str(info.value)


def test_a_job_trains_and_reports_its_peers(tmp_path):
    """allen_cahn_1d at toy size with FNO and the spectral class next to the Onsager model."""
    raw = tiny_experiment(
        "allen_cahn_1d",
        tmp_path / "job",
        {
            "baseline": {
                "models": ["fno", "spectral_onsager"],
                "peer_iterations": 30,
                "options": {
                    "fno": SMALL["fno"],
                    # training keys in a peer's table override baseline.peer_* for it alone
                    "spectral_onsager": {**SMALL["spectral_onsager"], "iterations": 20},
                },
            }
        },
    )
    config = validate(raw, str(tmp_path / "job.toml"))
    results = jobs.run(config, progress=False)
    paper = results["tables"]["paper"]["rows"]
    assert {"onsager", "classical", "fno", "spectral_onsager", "persistence"} <= set(paper)
    assert "baseline" not in paper  # blackbox not named
    for name in ("fno", "spectral_onsager"):
        assert np.isfinite(paper[name]["mean"][0])
        cost = results["costs"][name]
        assert cost["parameters"] > 0 and cost["training_seconds"] > 0
        assert cost["seconds_per_step"] > 0
        saved = json.loads((config.output / name / "training.json").read_text())
        assert saved["iterations"] == {"fno": 30, "spectral_onsager": 20}[name]
    assert results["costs"]["onsager"]["parameters"] > 0
    lines = jobs.summary_lines(results)
    assert any(line.startswith("fno ") for line in lines)
    assert any(line.startswith("spectral_onsager ") for line in lines)
    assert any(line.startswith("cost ") for line in lines)
    # a second `train` without --resume/--overwrite refuses to replace the trained peers
    with pytest.raises(FileExistsError, match="results of an earlier training run"):
        jobs.train(config, models=("peers",), progress=False)
    # ... and with --resume keeps them
    again = jobs.train(config, models=("peers",), progress=False, resume=True)
    assert again["fno"]["seconds"] == results["costs"]["fno"]["training_seconds"]
