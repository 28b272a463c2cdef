"""Fitting a model to trajectory data with one-step losses (the paper's protocol, first cut).

Each training pair is a data state :math:`u_k` and the next one :math:`u_{k+1}`, a time ``dt``
apart. The model takes one energy-stable step from :math:`u_k`; the loss is the squared
:math:`L^2` mismatch relative to the data norm, summed over a minibatch. Gradients come from the
discrete adjoint (:func:`femeso.adjoint.backpropagate_step`) into the parameters' ``.grad``,
so any PyTorch optimiser and scheduler applies. The gradient is cut between steps, as in the paper.

Not yet here (see the learning issue): unrolled multi-step losses, checkpoints and resume,
validation and the command line.
"""

from __future__ import annotations

import firedrake as fd
import numpy as np
import torch

from femeso._log import logger
from femeso.adjoint import backpropagate_step
from femeso.data.trajectories import Dataset
from femeso.hypothesis import OnsagerModel
from femeso.steppers import EnergyStableStepper

__all__ = ["fit", "one_step_pairs"]


def one_step_pairs(dataset: Dataset) -> list[tuple[fd.Function, fd.Function, float]]:
    """Return every ``(u_k, u_{k+1}, t_{k+1} - t_k)`` of the dataset's trajectories."""
    pairs = []
    for traj in dataset.trajectories:
        for k in range(len(traj.times) - 1):
            pairs.append(
                (traj.states[k], traj.states[k + 1], float(traj.times[k + 1] - traj.times[k]))
            )
    return pairs


def fit(
    model: OnsagerModel,
    dataset: Dataset,
    *,
    epochs: int,
    batch_size: int = 8,
    optimizer: torch.optim.Optimizer | None = None,
    seed: int = 0,
    progress: bool = True,
    solver_parameters: dict | None = None,
) -> list[float]:
    """Fit the model's parameters to one-step transitions of a dataset.

    Parameters
    ----------
    model
        The model (on the dataset's space).
    dataset
        Training trajectories.
    epochs, batch_size
        Passes over all one-step pairs, and pairs per optimiser step.
    optimizer
        Default: ``torch.optim.Adam(model.parameters(), lr=1e-2)``.
    seed
        Seed of the minibatch shuffling.
    progress
        Show a progress bar (rank 0).
    solver_parameters
        PETSc options of the stepper.

    Returns
    -------
    list of float
        The mean loss of each epoch.

    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"fit needs epochs >= 1 and batch_size >= 1, got {epochs}, {batch_size}")
    if dataset.space != model.space:
        raise ValueError("fit: the dataset and the model must share one function space")
    pairs = one_step_pairs(dataset)
    if not pairs:
        raise ValueError("fit: the dataset has no one-step pairs")
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=1e-2)
    steppers: dict[float, EnergyStableStepper] = {}
    v = fd.TestFunction(model.space)
    rng = np.random.default_rng(seed)
    history: list[float] = []
    bar = None
    if progress and model.mesh.comm.rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc="femeso fit", unit="epoch")
    for _ in range(epochs):
        order = rng.permutation(len(pairs))
        losses = []
        for start in range(0, len(order), batch_size):
            optimizer.zero_grad()
            for index in order[start : start + batch_size]:
                u0, u1_data, dt = pairs[index]
                stepper = steppers.get(dt)
                if stepper is None:
                    stepper = steppers[dt] = EnergyStableStepper(
                        model, u0, dt, solver_parameters=solver_parameters
                    )
                stepper.reset(u0)
                record = stepper.advance()
                scale = fd.assemble(u1_data**2 * fd.dx)
                error = stepper.u - u1_data
                losses.append(0.5 * fd.assemble(error**2 * fd.dx) / scale)
                if record.halvings:  # the converged system is not the whole step's: no gradient
                    logger.debug("fit: step needed %d halvings, skipped", record.halvings)
                    continue
                backpropagate_step(stepper, fd.assemble((1.0 / scale) * error * v * fd.dx))
            optimizer.step()
        history.append(float(np.mean(losses)))
        if bar is not None:
            bar.set_postfix(loss=f"{history[-1]:.3e}", refresh=False)
            bar.update()
    if bar is not None:
        bar.close()
    logger.info("fit: loss %.3e -> %.3e over %d epochs", history[0], history[-1], epochs)
    return history
