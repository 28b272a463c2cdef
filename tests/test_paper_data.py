"""scripts/paper_data.py: the paper's file layout, the Allen–Cahn initial condition and solver
accuracy, the chains' rejection rules, and agreement with femeso's own chain generator."""

from __future__ import annotations

import importlib.util
import math
import sys
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _script():
    name = "femeso_paper_data_script"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "paper_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


pd = _script()


@pytest.mark.parametrize(
    ("name", "dt", "frames"),
    [("fput", 1e-2, 101), ("fene", 5e-3, 51), ("allen_cahn_1d", 1e-3, 101)],
)
def test_the_file_has_the_papers_layout(tmp_path, capsys, name, dt, frames):
    out = tmp_path / "sub" / f"{name}.h5"
    argv = [name, "--n", "3", "--seed", "0", "--frames", "4", "-o", str(out)]
    assert pd.main(argv) == 0
    assert "3 trajectories x 4 frames x 256 points" in capsys.readouterr().out
    with h5py.File(out, "r") as h5:
        assert sorted(h5.keys()) == ["t_coord", "u_sol_all", "x_coord"]
        u, t, x = h5["u_sol_all"], h5["t_coord"][...], h5["x_coord"][...]
        assert u.dtype == np.float32 and u.shape == (3, 4, 256, 1)
        assert t.shape == (4,) and x.shape == (256,)
        assert np.array_equal(t, np.arange(4) * dt)
        assert np.array_equal(x, np.arange(256) * (2 * np.pi / 256))
        assert x[0] == 0.0 and x[-1] < 2 * np.pi
        assert np.isfinite(u[...]).all() and np.abs(u[...]).max() > 0.1
        assert h5.attrs["seed"] == 0 and h5.attrs["dataset"] == name
    # the protocol's own frame count
    proto = {"fput": pd.FPUT, "fene": pd.FENE, "allen_cahn_1d": pd.ALLEN_CAHN_1D}[name]
    assert proto.frames == frames and proto.frame_dt == pytest.approx(dt, rel=1e-15)
    assert (proto.frames - 1) * dt == pytest.approx({"fene": 0.25}.get(name, dt * 100))
    # never overwritten silently; atomic (no temporary file left behind)
    assert pd.main(argv) == 2
    assert "exists" in capsys.readouterr().err
    assert pd.main([*argv, "--overwrite", "--n", "2"]) == 0
    with h5py.File(out, "r") as h5:
        assert h5["u_sol_all"].shape == (2, 4, 256, 1)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]


def test_write_refuses_bad_arrays_and_leaves_nothing(tmp_path):
    x, t = pd.grid(), np.arange(3) * 0.1
    with pytest.raises(ValueError, match="NaN"):
        pd.write_paper_file(tmp_path / "a.h5", np.full((1, 3, 256), np.nan), t, x)
    with pytest.raises(ValueError, match="do not match"):
        pd.write_paper_file(tmp_path / "a.h5", np.zeros((1, 2, 256)), t, x)
    assert list(tmp_path.iterdir()) == []
    assert pd.main(["fput", "--n", "0", "-o", str(tmp_path / "b.h5")]) == 2


def test_allen_cahn_initial_condition_spans_exactly_minus_one_to_one():
    x = pd.grid()
    for rng in pd.streams(3, 50):
        u = pd.allen_cahn_initial(rng)
        assert u.min() == -1.0 and u.max() == 1.0
        # an affine image of 3 sine modes with distinct wavenumbers in 1..10
        power = np.abs(np.fft.rfft(u))[1:] / 256
        modes = np.flatnonzero(power > 1e-10) + 1
        assert len(modes) == 3 and modes.max() <= 10
    u, _ = pd.allen_cahn_dataset(4, 0, proto=pd.AllenCahnProtocol(frames=2))
    assert np.array_equal(u[:, 0].min(axis=1), -np.ones(4))
    assert np.array_equal(u[:, 0].max(axis=1), np.ones(4))
    assert np.array_equal(u[:, 0].astype(np.float32).max(axis=1), np.ones(4, np.float32))
    assert x.shape == (256,)


def test_allen_cahn_solver_is_fourth_order_and_spatially_resolved():
    proto = pd.AllenCahnProtocol(frames=11)  # T = 0.01: the fast transient of the initial data
    u0 = np.array([pd.allen_cahn_initial(rng) for rng in pd.streams(0, 6)])
    runs = {s: pd.allen_cahn_solve(u0, proto, steps_per_frame=s) for s in (2, 4, 8, 16)}
    diffs = [np.abs(runs[s] - runs[2 * s]).max() for s in (2, 4, 8)]
    orders = [math.log2(a / b) for a, b in zip(diffs[:-1], diffs[1:], strict=True)]
    assert all(o == pytest.approx(4.0, abs=0.4) for o in orders), (diffs, orders)
    # The default 20 steps per frame: far below float32 rounding (extrapolated error ~1e-11).
    default = pd.allen_cahn_solve(u0, proto)
    assert np.abs(default - runs[16]).max() < 1e-8
    # Doubling the grid (the initial data are trigonometric polynomials) changes nothing.
    w = np.zeros((6, 257), dtype=complex)
    w[:, :129] = 2 * np.fft.rfft(u0, axis=-1)
    fine = pd.allen_cahn_solve(
        np.fft.irfft(w, n=512, axis=-1), pd.AllenCahnProtocol(frames=11, n_points=512)
    )
    assert np.abs(fine[:, :, ::2] - default).max() < 1e-10
    # the maximum principle of Allen-Cahn: |u| <= 1 stays true
    assert np.abs(default).max() <= 1.0 + 1e-12


def test_allen_cahn_solver_keeps_the_equilibria_and_the_phase_dynamics():
    proto = pd.AllenCahnProtocol(frames=3)
    const = np.array([np.full(256, 1.0), np.full(256, -1.0), np.zeros(256), np.full(256, 0.5)])
    u = pd.allen_cahn_solve(const, proto)
    assert np.abs(u[:3] - const[:3, None]).max() < 1e-13
    # u' = (u - u^3) / eps^2 for a constant: u(t) = u0 e^{t'} / sqrt(1 + u0^2 (e^{2t'} - 1))
    tp = 2e-3 / 0.01
    exact = 0.5 * math.exp(tp) / math.sqrt(1 + 0.25 * (math.exp(2 * tp) - 1))
    assert u[3, -1] == pytest.approx(np.full(256, exact), abs=1e-11)


def test_linear_interpolation_is_numpy_interp_in_the_co_moving_frame():
    rng = np.random.default_rng(1)
    for n, m in ((128, 256), (209, 256), (32, 20)):
        values = rng.standard_normal((2, n))
        for shift in (0.0, 0.123, 57.3, -4.0):
            pos = np.mod(np.arange(n) * 2 * np.pi / n - shift, 2 * np.pi)
            order = np.argsort(pos)
            got = pd.linear_periodic_interpolation(values, shift, m)
            for row in range(2):
                ref = np.interp(pd.grid(m), pos[order], values[row, order], period=2 * np.pi)
                assert np.abs(got[row] - ref).max() < 1e-11


def test_fput_rejects_max_abs_u_above_20_and_resamples():
    xi = np.arange(128) * 2 * np.pi / 128
    proto = pd.ChainProtocol(**dict(asdict(pd.FPUT), frames=2))
    _, rejected = pd.integrate_chains(np.array([20.5 * np.sin(xi), 19.0 * np.sin(xi)]), proto)
    assert rejected.tolist() == [True, False]
    _, rejected = pd.integrate_chains(np.array([np.full(128, np.nan), np.sin(xi)]), proto)
    assert rejected.tolist() == [True, False]
    # A lower bound for the test: unit-std profiles often exceed 2; they are redrawn.
    low = pd.ChainProtocol(**dict(asdict(proto), max_abs_u=2.0))
    u, info = pd.chain_dataset(low, 12, 0)
    assert info["resampled"] > 0 and np.abs(u).max() <= 2.0
    with pytest.raises(RuntimeError, match="rejected"):
        pd.chain_dataset(pd.ChainProtocol(**dict(asdict(proto), max_abs_u=0.5)), 1, 0)


def test_fene_rejects_strains_beyond_nine_tenths_of_r_and_resamples():
    xi = np.arange(209) * 2 * np.pi / 209
    proto = pd.ChainProtocol(**dict(asdict(pd.FENE), frames=2))
    u, rejected = pd.integrate_chains(np.array([45.5 * np.sin(xi), np.sin(xi)]), proto)
    assert rejected.tolist() == [True, False]  # R / eps^2 = 50: |u| > 45 is |r / R| > 0.9
    # The rule acts at every Verlet step: a strain limit of 0.04 R = 2 eps^2 is hit often.
    low = pd.ChainProtocol(**dict(asdict(proto), max_strain_ratio=0.04))
    u, info = pd.chain_dataset(low, 12, 0)
    assert info["resampled"] > 0 and np.abs(u).max() <= 2.0 + 1e-12


def test_trajectories_depend_on_seed_and_index_only():
    proto = pd.ChainProtocol(**dict(asdict(pd.FPUT), frames=2))
    a, _ = pd.chain_dataset(proto, 4, 7)
    b, _ = pd.chain_dataset(proto, 2, 7, batch_size=1)
    c, _ = pd.chain_dataset(proto, 2, 8)
    assert np.abs(a[:2] - b).max() < 1e-13 and np.abs(a[:2] - c).max() > 0.1
    ac, _ = pd.allen_cahn_dataset(3, 7, proto=pd.AllenCahnProtocol(frames=2))
    ac2, _ = pd.allen_cahn_dataset(2, 7, proto=pd.AllenCahnProtocol(frames=2), batch_size=1)
    assert np.abs(ac[:2] - ac2).max() < 1e-13


@pytest.mark.parametrize("kind", ["fput", "fene"])
def test_chains_agree_with_femesos_generator(kind):
    from femeso.data import to_grid_arrays
    from femeso.data.chains import generate_chain_dataset

    proto = pd.FPUT if kind == "fput" else pd.FENE
    proto = pd.ChainProtocol(**dict(asdict(proto), frames=3))
    mine, _ = pd.chain_dataset(proto, 2, 0)
    ds = generate_chain_dataset(
        kind,
        n_trajectories=2,
        seed=0,
        progress=False,
        t_end=2 * proto.frame_dt,
        frame_dt=proto.frame_dt,
    )
    theirs = to_grid_arrays(ds)
    # Two implementations ((r, dr/dt) leapfrog here, (r, p) velocity Verlet in femeso): the
    # same protocol, draws and interpolation, equal up to round-off.
    assert np.abs(mine - theirs).max() < 1e-9 * np.abs(theirs).max()
