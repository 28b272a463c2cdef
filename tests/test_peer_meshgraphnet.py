"""The MeshGraphNet peer (femeso.peers.meshgraphnet) on a small unstructured mesh.

The data are exact heat-equation solutions (Neumann cosine modes on the unit square), so a model
that learns nothing is easy to recognise: holding the state fixed (the identity) has a known
validation loss, and the trained network must beat it clearly.
"""

import math

import firedrake as fd
import numpy as np
import pytest
import torch

from femeso.data.trajectories import Dataset, TrajectoryData
from femeso.peers import peer_class
from femeso.peers.base import FitSettings, PeerStepper, fit, window_loss, windows
from femeso.peers.meshgraphnet import MeshGraphNetPeer, ProcessorBlock
from femeso.peers.nodal import NodalLayout, trajectory_arrays

DT = 0.01
FRAMES = 11
MODES = [(1, 0), (0, 1), (1, 1), (2, 0), (0, 2)]
SMALL = {"width": 32, "steps": 3}  # the defaults (64, 6) take ~0.3 s an iteration here


def heat_solution(layout, amplitudes, t):
    """Exact Neumann heat solution: sum of cos(k pi x) cos(m pi y) exp(-pi^2 (k^2 + m^2) t)."""
    x, y = layout.positions.T
    return sum(
        a
        * math.exp(-(math.pi**2) * (k * k + m * m) * t)
        * np.cos(k * np.pi * x)
        * np.cos(m * np.pi * y)
        for a, (k, m) in zip(amplitudes, MODES, strict=True)
    )


@pytest.fixture(scope="module")
def setting():
    # Crossed diagonals: the cell-centre nodes make the DoFs no tensor grid (FNO refuses it),
    # and the valence varies (3 at the corners, 5 on the sides, 8 inside, 4 at the centres).
    mesh = fd.UnitSquareMesh(6, 6, diagonal="crossed")
    space = fd.FunctionSpace(mesh, "CG", 1)
    layout = NodalLayout(space)
    assert layout.grid_shape is None
    rng = np.random.default_rng(0)
    times = DT * np.arange(FRAMES)
    trajectories = []
    for _ in range(6):
        amplitudes = rng.normal(size=len(MODES))
        states = [layout.function(heat_solution(layout, amplitudes, t)) for t in times]
        trajectories.append(TrajectoryData(space, times, states, {"amplitudes": list(amplitudes)}))
    train = Dataset(space, trajectories[:4])
    validation = Dataset(space, trajectories[4:])
    return space, layout, train, validation


@pytest.fixture(scope="module")
def trained(setting):
    space, layout, train, validation = setting
    # fit seeds torch only after the network is built: seed its initialisation here.
    torch.manual_seed(0)
    peer = peer_class("meshgraphnet")(layout, DT, **SMALL)
    settings = FitSettings(
        iterations=80, learning_rate=1e-3, batch_size=8, unroll=3, validate_every=20
    )
    summary = fit(peer, train, validation, settings)
    return peer, summary


def test_peer_class_and_default_size(setting):
    _, layout, _, _ = setting
    assert peer_class("meshgraphnet") is MeshGraphNetPeer
    peer = MeshGraphNetPeer(layout, DT)
    assert peer.options == {"width": 64, "steps": 6, "position": False}
    # 2-D mesh: node encoder 1 -> 64, edge encoder 3 -> 64, 6 blocks (edge MLP 192 -> 64, node
    # MLP 128 -> 64), decoder 64 -> 1; every MLP two hidden layers of 64.
    assert peer.parameter_count() == 250_689
    # The mesh graph: both directions of every cell edge, once, no self-loops.
    edges = peer.edge_index.numpy()
    assert edges.shape == (2, 456)
    assert not (edges[0] == edges[1]).any()
    assert {tuple(p) for p in edges.T} == {tuple(p) for p in edges[::-1].T}
    # Edge features are relative to the mean edge length: the length column averages to 1.
    assert peer.edge_features.shape == (456, 3)
    assert float(peer.edge_features[:, 2].mean()) == pytest.approx(1.0, rel=1e-6)
    # Static graph buffers come from the layout and are not written to model files.
    assert "edge_index" not in peer.state_dict()


def test_training_lowers_the_loss_and_beats_the_identity(setting, trained):
    _, layout, _, validation = setting
    peer, summary = trained
    assert summary.parameters == 35_297
    assert math.isfinite(summary.loss_first) and math.isfinite(summary.loss_last)
    assert summary.loss_last < summary.loss_first / 3  # measured / 10-17, seeds 0-4
    assert math.isfinite(summary.best_validation)
    assert [h[0] for h in summary.history] == [20, 40, 60, 80]
    # Holding the state fixed: the fast modes decay by exp(-pi^2 5 dt) ~ 0.6 a step.
    batch = torch.from_numpy(windows(trajectory_arrays(validation, layout), 3))
    identity = float(window_loss(lambda u: u, batch))
    assert identity > 0.05
    assert summary.best_validation < identity / 2  # measured / 3.3-3.5, seeds 0-4
    with torch.no_grad():
        assert float(window_loss(peer, batch)) == pytest.approx(summary.best_validation, rel=1e-9)


def test_rollout(setting, trained):
    space, layout, _, validation = setting
    peer, _ = trained
    u0 = validation.trajectories[0].states[0]
    stepper = PeerStepper(peer, u0, DT)
    trajectory = stepper.rollout(5)
    assert len(trajectory.states) == 6
    assert np.allclose(trajectory.times, DT * np.arange(6))
    values = np.array([layout.gather(u) for u in trajectory.states])
    assert values.shape == (6, layout.n)
    assert np.isfinite(values).all()
    assert all(u.function_space() == space for u in trajectory.states)
    assert np.array_equal(values[0], layout.gather(u0))
    # The rollout is the network applied step after step.
    with torch.no_grad():
        u = torch.from_numpy(values[:1])
        for k in range(1, 6):
            u = peer(u)
            assert np.allclose(u[0].numpy(), values[k], rtol=0, atol=1e-12)
    # Closer to the exact solution than holding the initial state fixed.
    exact = np.array([layout.gather(u) for u in validation.trajectories[0].states[:6]])
    error = np.linalg.norm(values[5] - exact[5])
    assert error < 0.75 * np.linalg.norm(values[0] - exact[5])  # measured 0.53-0.58, seeds 0-4
    assert math.isfinite(stepper.seconds_per_step)
    with pytest.raises(ValueError, match="cannot step by"):
        PeerStepper(peer, u0, 2 * DT)


def test_processor_block_is_the_meshgraphnet_update():
    """The block against the formulas: sender j = edge_index[0], receiver i = edge_index[1]."""
    torch.manual_seed(0)
    block = ProcessorBlock(8)
    # A directed graph (no reverse edges, so a sender/receiver swap shows), node 3 receives
    # nothing and node 1 receives twice (sum, not mean).
    index = torch.tensor([[0, 2, 1, 3], [1, 1, 2, 0]])
    h, e = torch.randn(4, 8), torch.randn(4, 8)
    with torch.no_grad():
        new_h, new_e = block(h, index, e)
        de = block.edge_mlp(torch.cat([e, h[index[0]], h[index[1]]], dim=1))
        incoming = torch.zeros_like(h).index_add_(0, index[1], de)
        expected_h = h + block.node_mlp(torch.cat([h, incoming], dim=1))
    assert torch.allclose(new_e, e + de, atol=1e-6)
    assert torch.allclose(new_h, expected_h, atol=1e-6)


@pytest.mark.parametrize("position", [False, True])
def test_renumbering_equivariance_and_batching(setting, position):
    """Renumbering the nodes (and shuffling the edges) permutes the prediction, nothing more."""
    _, layout, train, _ = setting
    torch.manual_seed(1)
    a = MeshGraphNetPeer(layout, DT, position=position, **SMALL)
    a.normalise(trajectory_arrays(train, layout))
    b = MeshGraphNetPeer(layout, DT, position=position, **SMALL)
    b.load_state_dict(a.state_dict())
    rng = np.random.default_rng(2)
    u = torch.from_numpy(rng.normal(size=(3, layout.n)))
    perm = rng.permutation(layout.n)  # new node k is old node perm[k]
    with torch.no_grad():
        expected = a(u)[:, perm]
        # Same graph, permuted values: the graph matters, so the prediction is wrong.
        wrong = b(u[:, perm])
        assert float((wrong - expected).abs().max()) > 1e-3
        # Renumber b's graph consistently: new number of old node i is inverse[i].
        inverse = torch.from_numpy(np.argsort(perm))
        shuffle = torch.from_numpy(rng.permutation(a.edge_index.shape[1]))
        b.edge_index = inverse[a.edge_index][:, shuffle]
        b.edge_features = a.edge_features[shuffle]
        b.node_positions = a.node_positions[torch.from_numpy(perm)]
        got = b(u[:, perm])
        scale = float((expected - u[:, perm]).abs().max())
        assert float((got - expected).abs().max()) < 1e-4 * scale
        # A batch is independent samples: each row as computed alone.
        alone = torch.cat([a(u[i : i + 1]) for i in range(3)])
        assert float((alone - a(u)).abs().max()) < 1e-4 * scale


def test_save_and_load(setting, trained, tmp_path):
    _, layout, _, _ = setting
    peer, _ = trained
    path = peer.save(tmp_path / "mgn.pt")
    copy = MeshGraphNetPeer(layout, DT, **SMALL)
    u = torch.from_numpy(np.random.default_rng(3).normal(size=(2, layout.n)))
    with torch.no_grad():
        assert not torch.equal(copy(u), peer(u))
        copy.load_parameters(path)
        assert torch.equal(copy(u), peer(u))
    assert float(copy.step_scale) == float(peer.step_scale) != 1.0
    wider = MeshGraphNetPeer(layout, DT, width=48, steps=SMALL["steps"])
    with pytest.raises(ValueError, match="options"):
        wider.load_parameters(path)
    with_position = MeshGraphNetPeer(layout, DT, position=True, **SMALL)
    with pytest.raises(ValueError, match="options"):
        with_position.load_parameters(path)
