r"""A MeshGraphNet peer: an encoder-processor-decoder graph network on the mesh (torch_geometric).

The network follows Pfaff et al., *Learning mesh-based simulation with graph networks* (ICLR
2021) on the graph of the finite-element mesh (:attr:`~femeso.peers.nodal.NodalLayout.edges`:
pairs of DoFs that share a cell, both directions):

- **encoder**: MLPs map each node's input (the standardised state; optionally also its
  standardised position) and each edge's input (the relative position of the receiver with
  respect to the sender and its length, both divided by the mesh's mean edge length) to latent
  vectors of size ``width``;
- **processor**: ``steps`` message-passing blocks (:class:`torch_geometric.nn.MessagePassing`),
  each updating every edge from (edge, sender, receiver) and then every node from (node, sum of
  its incoming edges), both with residual connections;
- **decoder**: an MLP from a node's latent to one channel, the step's increment:

.. math::  u_{k+1} = u_k + s\,\mathrm{MGN}\big((u_k - \bar u)/\sigma\big),

with :math:`\bar u, \sigma` the training data's mean and standard deviation and :math:`s` that of
one step's change (:class:`~femeso.peers.base.Peer`). Every MLP has two hidden layers of
``width`` units with ReLU activations; the encoder's and processor's MLPs end with a LayerNorm,
the decoder's does not (as in MeshGraphNet).

Messages are aggregated by a **sum**, as in MeshGraphNet: with the geometric edge features the
sum over a node's neighbours can represent a finite-element stencil
:math:`\sum_j w(x_j - x_i)(u_j - u_i)` (a mean would divide every stencil by the node's valence,
which varies over an unstructured mesh and at the boundary), and a sum tells multisets of
neighbours apart where a mean does not. The LayerNorm at the end of each MLP keeps the summed
latents O(1).

Without ``position`` the network sees no absolute position, so it is equivariant under any
renumbering of the nodes and invariant under translations of the mesh. The mesh graph is the same
for every state, so its edge index and edge features are built once (buffers, not saved: they
come from the layout); a batch of states is one block-diagonal graph, the edge index offset by
``n`` per sample. The network runs in single precision; states stay in double precision around
it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch_geometric.nn import MessagePassing

from femeso.peers.base import Peer
from femeso.peers.nodal import NodalLayout

__all__ = ["MeshGraphNetPeer", "ProcessorBlock", "mlp"]


def mlp(inputs: int, width: int, outputs: int, *, norm: bool = True) -> nn.Sequential:
    """Return an MLP with two hidden layers of ``width`` ReLU units.

    Parameters
    ----------
    inputs, width, outputs
        Input features, hidden units per layer and output features.
    norm
        End with a LayerNorm over the outputs (the encoder and processor MLPs of MeshGraphNet;
        not the decoder's).

    Returns
    -------
    nn.Sequential
        The MLP.

    """
    layers: list[nn.Module] = [
        nn.Linear(inputs, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, outputs),
    ]
    if norm:
        layers.append(nn.LayerNorm(outputs))
    return nn.Sequential(*layers)


class ProcessorBlock(MessagePassing):
    r"""One MeshGraphNet message-passing block: edge update, then node update, both residual.

    With ``edge_index[0]`` the sender ``j`` and ``edge_index[1]`` the receiver ``i`` (the package's
    ``flow="source_to_target"``):

    .. math::

        e'_{ij} = e_{ij} + f_e(e_{ij}, h_j, h_i), \qquad
        h'_i = h_i + f_h\Big(h_i, \sum_j f_e(e_{ij}, h_j, h_i)\Big).

    Parameters
    ----------
    width
        Size of the node and edge latents.

    """

    def __init__(self, width: int) -> None:
        super().__init__(aggr="sum", flow="source_to_target")
        self.edge_mlp = mlp(3 * width, width, width)
        self.node_mlp = mlp(2 * width, width, width)

    def forward(
        self, h: torch.Tensor, edge_index: torch.Tensor, e: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Update node latents ``h`` ``(nodes, width)`` and edge latents ``e`` ``(edges, width)``.

        Returns
        -------
        tuple of torch.Tensor
            The new node and edge latents.

        """
        size = (h.shape[0], h.shape[0])
        de = self.edge_updater(edge_index, size=size, h=h, e=e)
        dh = self.propagate(edge_index, size=size, h=h, de=de)
        return h + dh, e + de

    def edge_update(self, h_i: torch.Tensor, h_j: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Apply the edge MLP to (edge, sender ``j``, receiver ``i``)."""
        return self.edge_mlp(torch.cat([e, h_j, h_i], dim=-1))

    def message(self, de: torch.Tensor) -> torch.Tensor:
        """Send an edge's updated latent to its receiver as the message."""
        return de

    def update(self, inputs: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Apply the node MLP to (node, sum of its incoming messages)."""
        return self.node_mlp(torch.cat([h, inputs], dim=-1))


class MeshGraphNetPeer(Peer):
    """A MeshGraphNet (encoder, ``steps`` message-passing blocks, decoder) on the mesh graph.

    Parameters
    ----------
    layout
        The nodal layout (any mesh; the graph is :attr:`NodalLayout.edges`).
    dt
        The data step.
    width
        Size of the latents and of every MLP's hidden layers.
    steps
        Message-passing blocks of the processor.
    position
        Append each node's position (standardised per direction) to its input features. This
        breaks translation invariance; off by default.

    Attributes
    ----------
    edge_index
        ``(2, edges)`` buffer: sender and receiver of each directed edge of the mesh graph.
    edge_features
        ``(edges, gdim + 1)`` buffer: relative position and length of each edge over the mean
        edge length.
    node_positions
        ``(n, gdim)`` buffer: the standardised node positions (used with ``position`` only).

    """

    name = "meshgraphnet"
    label = "MeshGraphNet (torch_geometric)"

    def __init__(
        self,
        layout: NodalLayout,
        dt: float,
        *,
        width: int = 64,
        steps: int = 6,
        position: bool = False,
    ) -> None:
        super().__init__(layout, dt, width=width, steps=steps, position=position)
        width, steps = int(width), int(steps)
        if width < 1 or steps < 0:
            raise ValueError(f"meshgraphnet: width must be >= 1, steps >= 0 (got {width}, {steps})")
        edges = np.asarray(layout.edges, dtype=np.int64)
        if edges.size == 0:
            raise ValueError("meshgraphnet: the mesh graph has no edges (a space of one DoF?)")
        delta = layout.relative_positions(edges)
        length = np.linalg.norm(delta, axis=1, keepdims=True)
        scale = float(length.mean()) or 1.0
        features = np.concatenate([delta, length], axis=1) / scale
        points = np.asarray(layout.positions, dtype=np.float64)
        spread = points.std(axis=0)
        points = (points - points.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
        self.register_buffer("edge_index", torch.from_numpy(edges), persistent=False)
        self.register_buffer(
            "edge_features", torch.from_numpy(features).to(torch.float32), persistent=False
        )
        self.register_buffer(
            "node_positions", torch.from_numpy(points).to(torch.float32), persistent=False
        )
        self.position = bool(position)
        node_inputs = 1 + (points.shape[1] if self.position else 0)
        self.node_encoder = mlp(node_inputs, width, width)
        self.edge_encoder = mlp(features.shape[1], width, width)
        self.processor = nn.ModuleList(ProcessorBlock(width) for _ in range(steps))
        self.decoder = mlp(width, width, 1, norm=False)

    def graph(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the block-diagonal graph of ``batch`` copies of the mesh graph.

        Returns
        -------
        tuple of torch.Tensor
            The ``(2, batch * edges)`` edge index (sample ``b``'s nodes are ``b * n ...``) and the
            ``(batch * edges, gdim + 1)`` edge features.

        """
        n_edges = self.edge_index.shape[1]
        offsets = torch.arange(batch, device=self.edge_index.device) * self.layout.n
        index = self.edge_index.repeat(1, batch) + offsets.repeat_interleave(n_edges)
        return index, self.edge_features.repeat(batch, 1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """One data step of a ``(batch, n)`` float64 batch of states."""
        batch, n = u.shape
        x = self.encode(u).to(torch.float32).reshape(batch * n, 1)
        if self.position:
            x = torch.cat([x, self.node_positions.repeat(batch, 1)], dim=1)
        edge_index, edge_features = self.graph(batch)
        h = self.node_encoder(x)
        e = self.edge_encoder(edge_features)
        for block in self.processor:
            h, e = block(h, edge_index, e)
        raw = self.decoder(h).reshape(batch, n).to(u.dtype)
        return self.increment(u, raw)
