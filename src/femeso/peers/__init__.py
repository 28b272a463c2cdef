"""Peer models trained on the same data and scored the same way as femeso's Onsager model.

``[baseline] models = [...]`` in a job file names the peers of a job:

- ``"fno"`` -- a Fourier neural operator from the ``neuraloperator`` package (uniform grids);
- ``"meshgraphnet"`` -- an encoder-processor-decoder graph network on the mesh built with
  ``torch_geometric`` (any mesh);
- ``"spectral_onsager"`` -- the paper's own model class, constant Fourier multipliers and an MLP
  density with explicit Euler steps (uniform periodic grids);
- ``"blackbox"`` -- femeso's unconstrained neural right-hand side on the finite-element space
  (:mod:`femeso.peers.blackbox`), trained by the adjoint like the Onsager model.

The first three are :class:`~femeso.peers.base.Peer` modules trained by
:func:`~femeso.peers.base.fit`; their packages are imported only when a job names them.
"""

from __future__ import annotations

import importlib
from typing import Any

from femeso.config import PEER_MODELS

__all__ = ["PEER_MODELS", "peer_class"]

#: Peer name -> "module:class" (imported on first use: each needs its own package).
_CLASSES = {
    "fno": ("femeso.peers.fno", "FNOPeer", "neuraloperator"),
    "meshgraphnet": ("femeso.peers.meshgraphnet", "MeshGraphNetPeer", "torch-geometric"),
    "spectral_onsager": ("femeso.peers.spectral_onsager", "SpectralOnsagerPeer", None),
}


def peer_class(name: str) -> Any:
    """Return the :class:`~femeso.peers.base.Peer` subclass called ``name``.

    Raises
    ------
    ValueError
        For an unknown name (one line listing the known ones).
    ImportError
        When the peer's package is not installed (one line naming it).

    """
    if name not in _CLASSES:
        raise ValueError(f"unknown peer model {name!r}; known: {sorted(_CLASSES)}")
    module, cls, package = _CLASSES[name]
    try:
        return getattr(importlib.import_module(module), cls)
    except ModuleNotFoundError as exc:
        if package is None or exc.name in ("femeso", module):
            raise
        raise ImportError(
            f"peer {name!r} needs the {package} package ({exc.name} is missing): run `make setup`"
        ) from exc
