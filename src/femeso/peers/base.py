r"""What every peer model implements, how peers are trained, and how they are rolled out.

A peer is a black-box (or differently structured) model that femeso's report compares with the
Onsager model on the same trajectories: a neural operator, a mesh graph network, the paper's own
spectral model class. Every peer is a :class:`Peer`: an ``nn.Module`` whose ``forward`` maps a
batch of states (nodal values in the order of a :class:`~femeso.peers.nodal.NodalLayout`) to the
states one data step later. What differs between peers is only that map; training
(:func:`fit`), rollouts (:class:`PeerStepper`, the stepper interface of
:func:`femeso.evaluation.rollout_errors`), saving and cost accounting are shared.

Training is close to the paper's protocol (REFERENCE.md: Adam at 1e-3, batch 32, windows of
3-5 autoregressive steps): Adam with a cosine decay, minibatches of windows of ``unroll``
consecutive steps cut from the training trajectories, every ``validate_every`` iterations the
same loss on validation windows; the parameters with the best validation loss are kept (the last
ones without validation data, or when no validation loss was finite -- said in the log and in
:attr:`FitSummary.kept`). Two differences, the same for every peer: the loss is the mean over
the window's steps of the *relative* squared error :math:`\|\hat u_k - u_k\|^2 / \|u_k\|^2`
(the paper's metric squared, where the paper's code uses the plain MSE), and the gradient flows
through the whole window (the paper's code cuts it between steps).

Peers run in PyTorch on rank 0; under MPI the states are gathered there and the results
broadcast, so a peer gives the same numbers on any number of ranks.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import firedrake as fd
import numpy as np
import torch
from torch import nn

from femeso._log import logger, progress_bar
from femeso.data.trajectories import Dataset
from femeso.peers.nodal import NodalLayout, trajectory_arrays
from femeso.stepping.energy_stable import StepRecord, Trajectory

__all__ = ["FitSettings", "FitSummary", "Peer", "PeerStepper", "fit", "windows"]

FORMAT_VERSION = 1


class Peer(nn.Module):
    """A peer model: one data step of a batch of nodal states, ``u_k -> u_{k+1}``.

    Subclasses set :attr:`name` and :attr:`label`, build their network in ``__init__`` from the
    ``layout``, the data step ``dt`` and their own keyword options (recorded in
    :attr:`options` so that :meth:`load` can rebuild them), and implement :meth:`forward`.
    :meth:`normalise` is called once with the training trajectories before training; the
    default fits the scale of the state and of one step's increment (buffers, saved with the
    parameters), which :meth:`forward` implementations use through :meth:`encode` and
    :meth:`increment`.

    Parameters
    ----------
    layout
        The nodal layout of the state space.
    dt
        The data step one forward call advances.

    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""

    def __init__(self, layout: NodalLayout, dt: float, **options: Any) -> None:
        super().__init__()
        self.layout, self.dt = layout, float(dt)
        # plain Python values: they are saved with the parameters and compared on load
        self.options = {k: v.item() if isinstance(v, np.generic) else v for k, v in options.items()}
        self.register_buffer("state_mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("state_scale", torch.ones((), dtype=torch.float64))
        self.register_buffer("step_scale", torch.ones((), dtype=torch.float64))

    # ------------------------------------------------------------------ the model
    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Return the states one data step after ``u`` (shape ``(batch, n)``, float64)."""
        raise NotImplementedError

    def normalise(self, trajectories: np.ndarray) -> None:
        """Fit the input and increment scales to training ``(trajectories, frames, n)`` data."""
        mean = float(trajectories.mean())
        scale = float(trajectories.std()) or 1.0
        step = float(np.diff(trajectories, axis=1).std()) if trajectories.shape[1] > 1 else 1.0
        self.state_mean.fill_(mean)
        self.state_scale.fill_(scale)
        self.step_scale.fill_(step or 1.0)

    def encode(self, u: torch.Tensor) -> torch.Tensor:
        """Return the state standardised by the training data's mean and standard deviation."""
        return (u - self.state_mean) / self.state_scale

    def increment(self, u: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        """``u`` plus a network output ``raw`` in units of the data's typical one-step change."""
        return u + self.step_scale * raw

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Return the module's tensors (neuraloperator adds its constructor arguments as a key)."""
        state = super().state_dict(*args, **kwargs)
        state.pop("_metadata", None)
        return state

    def parameter_count(self) -> int:
        """Return the number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def describe(self) -> str:
        """One line: the architecture and its size."""
        options = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.label} ({options}; {self.parameter_count()} parameters)"

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write the peer (name, options, data step, parameters and scales) with ``torch.save``.

        Collective; rank 0 writes.
        """
        path = Path(path)
        if self.layout.comm.rank == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            torch.save(
                {
                    "format": FORMAT_VERSION,
                    "peer": self.name,
                    "options": self.options,
                    "dt": self.dt,
                    "n": self.layout.n,
                    "state_dict": self.state_dict(),
                },
                tmp,
            )
            tmp.replace(path)
        self.layout.comm.barrier()
        return path

    def load_parameters(self, path: str | Path) -> None:
        """Load parameters saved by :meth:`save` (same peer, options and layout size)."""
        path = Path(path)
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError) as exc:
            raise ValueError(f"{path}: not a peer model file ({exc})") from exc
        if not isinstance(saved, dict) or saved.get("peer") != self.name:
            found = saved.get("peer") if isinstance(saved, dict) else type(saved).__name__
            raise ValueError(f"{path}: a {found!r} model, not {self.name!r}")
        if saved.get("n") != self.layout.n:
            raise ValueError(
                f"{path}: saved for {saved.get('n')} nodes, the space has {self.layout.n}"
            )
        if saved.get("options") != self.options:
            raise ValueError(
                f"{path}: saved with options {saved.get('options')}, the job asks {self.options}"
            )
        self.load_state_dict(saved["state_dict"])


# ---------------------------------------------------------------------- training
@dataclass(frozen=True)
class FitSettings:
    """How a peer is trained (the paper's protocol for its baselines by default).

    Attributes
    ----------
    iterations
        Adam steps.
    learning_rate
        Initial learning rate (cosine decay to 1 % of it over the iterations).
    batch_size
        Windows per minibatch.
    unroll
        Autoregressive steps per window (the paper: 3-5).
    validate_every
        Iterations between validations (and at the last iteration).
    validation_windows
        Validation windows scored each time (fixed, chosen once); 0: all.
    seed
        Seed of the minibatches and of the validation windows' choice (the network's
        initialisation is seeded where the peer is built: :func:`femeso.peers.runner.build_peer`).

    """

    iterations: int = 2000
    learning_rate: float = 1e-3
    batch_size: int = 32
    unroll: int = 3
    validate_every: int = 100
    validation_windows: int = 256
    seed: int = 0


@dataclass
class FitSummary:
    """What :func:`fit` did: losses, the kept parameters, wall time."""

    iterations: int
    loss_first: float
    loss_last: float
    best_validation: float
    best_iteration: int
    kept: str
    seconds: float
    seconds_per_iteration: float
    parameters: int
    architecture: str
    history: list[tuple[int, float, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


def windows(trajectories: np.ndarray, unroll: int) -> np.ndarray:
    """Return every window of ``unroll + 1`` consecutive frames: ``(windows, unroll + 1, n)``."""
    n_traj, frames, n = trajectories.shape
    if frames < unroll + 1:
        raise ValueError(f"trajectories of {frames} frames are too short for unroll {unroll}")
    starts = np.arange(frames - unroll)
    index = starts[:, None] + np.arange(unroll + 1)[None, :]
    return trajectories[:, index, :].reshape(n_traj * len(starts), unroll + 1, n)


def window_loss(peer: Peer, batch: torch.Tensor) -> torch.Tensor:
    """Mean over the batch and the window's steps of the relative squared error."""
    u = batch[:, 0]
    total = batch.new_zeros(())
    for k in range(1, batch.shape[1]):
        u = peer(u)
        truth = batch[:, k]
        error = ((u - truth) ** 2).mean(dim=1) / (truth**2).mean(dim=1).clamp_min(1e-30)
        total = total + error.mean()
    return total / (batch.shape[1] - 1)


def _validate(peer: Peer, batch: torch.Tensor | None, chunk: int = 256) -> float:
    if batch is None:
        return math.nan
    with torch.no_grad():
        losses = [
            float(window_loss(peer, batch[i : i + chunk])) * len(batch[i : i + chunk])
            for i in range(0, len(batch), chunk)
        ]
    value = sum(losses) / len(batch)
    return value if math.isfinite(value) else math.inf


def fit(
    peer: Peer,
    train: Dataset,
    validation: Dataset | None,
    settings: FitSettings,
    *,
    progress: bool = False,
    normalise: bool = True,
) -> FitSummary:
    """Train a peer on the dataset's windows; keep the best parameters on validation.

    Collective: the arrays are gathered on rank 0, which trains; the parameters are then
    broadcast so that every rank holds the trained peer. ``normalise=False`` keeps the peer's
    input and increment scales (:meth:`Peer.normalise`), e.g. to continue training a peer.
    """
    comm = peer.layout.comm
    arrays = trajectory_arrays(train, peer.layout)
    val_arrays = trajectory_arrays(validation, peer.layout) if validation else None
    summary = None
    if comm.rank == 0:
        summary = _fit_on_rank_zero(peer, arrays, val_arrays, settings, progress, normalise)
    summary = comm.bcast(summary, root=0)
    state = comm.bcast(peer.state_dict() if comm.rank == 0 else None, root=0)
    peer.load_state_dict(state)
    return summary


def _fit_on_rank_zero(
    peer: Peer,
    arrays: np.ndarray,
    val_arrays: np.ndarray | None,
    settings: FitSettings,
    progress: bool,
    normalise: bool,
) -> FitSummary:
    rng = np.random.default_rng(settings.seed)
    if normalise:
        peer.normalise(arrays)
    train_windows = torch.from_numpy(windows(arrays, settings.unroll))
    val = None
    if val_arrays is not None and len(val_arrays):
        val_windows = windows(val_arrays, settings.unroll)
        if settings.validation_windows and len(val_windows) > settings.validation_windows:
            pick = np.random.default_rng(settings.seed + 1).choice(
                len(val_windows), settings.validation_windows, replace=False
            )
            val_windows = val_windows[np.sort(pick)]
        val = torch.from_numpy(val_windows)
    optimiser = torch.optim.Adam(peer.parameters(), lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimiser, settings.iterations, eta_min=0.01 * settings.learning_rate
    )
    best_state = None
    best, best_iteration = math.inf, 0
    history: list[tuple[int, float, float]] = []
    first = last = math.nan
    bar = progress_bar(settings.iterations, f"train {peer.name}", "it", enabled=progress)
    t0 = time.perf_counter()
    for iteration in range(1, settings.iterations + 1):
        pick = rng.choice(
            len(train_windows), min(settings.batch_size, len(train_windows)), replace=False
        )
        loss = window_loss(peer, train_windows[pick])
        if not torch.isfinite(loss):
            raise RuntimeError(
                f"{peer.name}: training loss is {float(loss)} at iteration {iteration}"
            )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        last = float(loss.detach())
        first = last if iteration == 1 else first
        if iteration % settings.validate_every == 0 or iteration == settings.iterations:
            value = _validate(peer, val)
            history.append((iteration, last, value))
            if val is not None and value < best:
                best, best_iteration = value, iteration
                best_state = copy.deepcopy(peer.state_dict())
            if bar is not None:
                bar.set_postfix(loss=f"{last:.2e}", validation=f"{value:.2e}")
            else:
                logger.info(
                    "train %s: iteration %d/%d, loss %.3e, validation %s (%.0f s)",
                    peer.name,
                    iteration,
                    settings.iterations,
                    last,
                    "-" if val is None else f"{value:.3e}",
                    time.perf_counter() - t0,
                )
        if bar is not None:
            bar.update(1)
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    if best_state is not None:
        peer.load_state_dict(best_state)
        kept = f"best on validation (iteration {best_iteration})"
    else:
        best_iteration = settings.iterations
        kept = "last iteration" + (" (no finite validation loss)" if val is not None else "")
        if val is not None:
            logger.warning("train %s: no validation loss was finite; %s kept", peer.name, kept)
    logger.info(
        "train %s: %d iterations in %.0f s, loss %.3e -> %.3e, validation %s, %s kept; %s",
        peer.name,
        settings.iterations,
        seconds,
        first,
        last,
        "-" if val is None else f"{best:.3e}",
        kept,
        peer.describe(),
    )
    return FitSummary(
        iterations=settings.iterations,
        loss_first=first,
        loss_last=last,
        best_validation=best,
        best_iteration=best_iteration,
        kept=kept,
        seconds=seconds,
        seconds_per_iteration=seconds / settings.iterations,
        parameters=peer.parameter_count(),
        architecture=peer.describe(),
        history=history,
    )


# ---------------------------------------------------------------------- rollouts
class PeerStepper:
    """A trained peer as a stepper (the interface of :func:`femeso.evaluation.rollout_errors`).

    Steps are data steps (``dt`` must equal the peer's); the rollout is computed on rank 0 and
    the states written back on every rank. No energy is defined: records carry ``nan``.
    A non-finite state stops the rollout with ``ArithmeticError`` (counted as a failed rollout).
    ``seconds_per_step`` accumulates the wall time per step of the network's evaluations.
    """

    def __init__(self, peer: Peer, u0: fd.Function, dt: float) -> None:
        if not math.isclose(float(dt), peer.dt, rel_tol=1e-9):
            raise ValueError(
                f"{peer.name} was trained for steps of {peer.dt:g} and cannot step by {dt:g}"
            )
        self.peer, self.dt = peer, float(dt)
        self.steps, self.seconds = 0, 0.0
        self.reset(u0)

    def reset(self, u: fd.Function, *, t: float = 0.0) -> None:
        """Restart from the state ``u`` at time ``t``."""
        self.u, self.t = u.copy(deepcopy=True), float(t)

    @property
    def seconds_per_step(self) -> float:
        """Mean wall time of one step of the network so far (``nan`` before any step)."""
        return self.seconds / self.steps if self.steps else math.nan

    def rollout(self, n_steps: int, *, progress: bool = False) -> Trajectory:
        """Advance ``n_steps`` data steps; return every state."""
        layout = self.peer.layout
        values = layout.gather(self.u)
        message = None
        out = None
        if layout.comm.rank == 0:
            t0 = time.perf_counter()
            out = np.empty((n_steps + 1, layout.n))
            out[0] = values
            with torch.no_grad():
                u = torch.from_numpy(values)[None, :]
                for k in range(1, n_steps + 1):
                    u = self.peer(u)
                    out[k] = u[0].numpy()
                    self.steps += 1
                    if not np.isfinite(out[k]).all():
                        message = f"{self.peer.name}: non-finite state after {k} steps"
                        break
            self.seconds += time.perf_counter() - t0
        message = layout.comm.bcast(message, root=0)
        if message is not None:
            raise ArithmeticError(message)
        states = [self.u] + [
            layout.function(out[k] if out is not None else None) for k in range(1, n_steps + 1)
        ]
        times = self.t + self.dt * np.arange(n_steps + 1)
        nan = math.nan
        records = [StepRecord(float(t), self.dt, nan, {}, nan, nan, [], 0, 0) for t in times[1:]]
        self.u, self.t = states[-1], float(times[-1])
        return Trajectory(times=times, states=states, records=records)
