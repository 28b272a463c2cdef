r"""A Fourier neural operator peer, built by the ``neuraloperator`` package.

The network is :class:`neuralop.models.FNO` configured as that package documents for a scalar
field on a regular grid: a lifting to ``width`` channels, ``layers`` Fourier layers keeping
``modes`` modes per direction, a projection back to one channel, with the package's default grid
positional embedding. It predicts one data step's increment of the standardised state:

.. math::  u_{k+1} = u_k + s\,\mathrm{FNO}\big((u_k - \bar u)/\sigma\big),

with :math:`\bar u, \sigma` the training data's mean and standard deviation and :math:`s` that of
one step's change (:class:`~femeso.peers.base.Peer`). The network runs in single precision (the
package's spectral weights are ``complex64``); states stay in double precision around it.
FNO needs the DoFs to form a uniform tensor grid (1-D or 2-D): on any other mesh it is refused
with one line (use ``"meshgraphnet"``).
"""

from __future__ import annotations

import torch
from neuralop.models import FNO

from femeso.peers.base import Peer
from femeso.peers.nodal import NodalLayout

__all__ = ["FNOPeer"]


class FNOPeer(Peer):
    """A Fourier neural operator (``neuralop.models.FNO``) on the nodal grid.

    Parameters
    ----------
    layout
        The nodal layout; its DoFs must form a uniform 1-D or 2-D tensor grid.
    dt
        The data step.
    modes
        Fourier modes kept per direction (at most half the grid points + 1).
    width
        Hidden channels.
    layers
        Fourier layers.

    """

    name = "fno"
    label = "FNO (neuraloperator)"

    def __init__(
        self, layout: NodalLayout, dt: float, *, modes: int = 16, width: int = 64, layers: int = 4
    ) -> None:
        super().__init__(layout, dt, modes=modes, width=width, layers=layers)
        shape = layout.grid_shape
        if shape is None or len(shape) > 2:
            raise ValueError(
                "peer 'fno' needs a uniform 1-D or 2-D grid of DoFs (a rectangle or interval "
                "meshed as a tensor grid, P1); this space is not one: use 'meshgraphnet'"
            )
        modes = min(int(modes), min(shape) // 2 + 1)
        self.shape = shape
        self.net = FNO(
            n_modes=(modes,) * len(shape),
            hidden_channels=int(width),
            in_channels=1,
            out_channels=1,
            n_layers=int(layers),
        )

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """One data step of a ``(batch, n)`` float64 batch of states."""
        x = self.encode(u).reshape(u.shape[0], 1, *self.shape).to(torch.float32)
        raw = self.net(x).reshape(u.shape[0], -1).to(u.dtype)
        return self.increment(u, raw)
