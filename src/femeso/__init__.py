"""femeso: learning Onsager-structured mesoscopic dynamics on finite-element meshes.

The public surface::

    energy = femeso.Energy(femeso.CoerciveNeuralDensity(width=16), kappa=1.0)
    model = femeso.OnsagerModel(V, energy, mobility=femeso.ConservedMobility(1.0))
    stepper = femeso.EnergyStableStepper(model, u0, dt=1e-2)
    trajectory = stepper.rollout(100)

Importing :mod:`femeso` is cheap and changes nothing (no environment variable, no warning filter).
The first use of a public name starts Firedrake (:func:`femeso._runtime.start_firedrake`) and
imports the module that defines it. The ``femeso`` command, the test-suite and the Makefile apply
the run-time settings (threads, kernel caches, Open MPI's root permission:
:func:`femeso._runtime.configure_environment`).
"""

# ruff: noqa: F401  -- the TYPE_CHECKING imports are for type checkers only
from typing import TYPE_CHECKING

from femeso._runtime import lazy_exports

_EXPORTS = {
    "BlackBoxModel": "femeso.baseline",
    "BlackBoxStepper": "femeso.baseline",
    "differentiable_rollout": "femeso.bridge",
    "CoerciveNeuralDensity": "femeso.energies",
    "ConstantKappa": "femeso.energies",
    "Energy": "femeso.energies",
    "KnownDensity": "femeso.energies",
    "NeuralKappa": "femeso.energies",
    "NonlocalEnergy": "femeso.energies",
    "Expression": "femeso.fields",
    "NeuralField": "femeso.fields",
    "OnsagerModel": "femeso.model",
    "load_model": "femeso.model",
    "random_smooth_field": "femeso.initial_conditions",
    "available_meshes": "femeso.meshes",
    "load_mesh": "femeso.meshes",
    "mesh_path": "femeso.meshes",
    "CanonicalCoupling": "femeso.mobilities",
    "ConservedMobility": "femeso.mobilities",
    "LocalMobility": "femeso.mobilities",
    "SkewTransport": "femeso.mobilities",
    "TensorMobility": "femeso.mobilities",
    "DIRECT_SOLVER": "femeso.steppers",
    "ITERATIVE_SOLVER": "femeso.steppers",
    "EnergyStableStepper": "femeso.steppers",
    "StepFailure": "femeso.steppers",
    "StepRecord": "femeso.steppers",
    "Trajectory": "femeso.steppers",
    "Trainer": "femeso.training",
    "TrainingConfig": "femeso.training",
}

__version__ = "0.1.0"

__all__ = sorted([*_EXPORTS, "__version__"])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time the names load on use
    from femeso.baseline import BlackBoxModel, BlackBoxStepper
    from femeso.bridge import differentiable_rollout
    from femeso.energies import (
        CoerciveNeuralDensity,
        ConstantKappa,
        Energy,
        KnownDensity,
        NeuralKappa,
        NonlocalEnergy,
    )
    from femeso.fields import Expression, NeuralField
    from femeso.initial_conditions import random_smooth_field
    from femeso.meshes import available_meshes, load_mesh, mesh_path
    from femeso.mobilities import (
        CanonicalCoupling,
        ConservedMobility,
        LocalMobility,
        SkewTransport,
        TensorMobility,
    )
    from femeso.model import OnsagerModel, load_model
    from femeso.steppers import (
        DIRECT_SOLVER,
        ITERATIVE_SOLVER,
        EnergyStableStepper,
        StepFailure,
        StepRecord,
        Trajectory,
    )
    from femeso.training import Trainer, TrainingConfig
