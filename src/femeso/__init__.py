"""femeso: learning Onsager-structured mesoscopic dynamics on finite-element meshes.

The public surface::

    energy = femeso.Energy(femeso.CoerciveNeuralDensity(width=16), kappa=1.0)
    model = femeso.OnsagerModel(V, energy, mobility=femeso.ConservedMobility(1.0))
    stepper = femeso.EnergyStableStepper(model, u0, dt=1e-2)
    trajectory = stepper.rollout(100)
"""

from femeso._runtime import (
    configure_environment,
    hold_petsc_world_communicator,
    keep_command_line_from_petsc,
    quiet_unactionable_warnings,
)

configure_environment()
keep_command_line_from_petsc()
quiet_unactionable_warnings()

# Imports follow the environment set-up on purpose (threads, kernel caches).
from femeso.baseline import BlackBoxModel, BlackBoxStepper  # noqa: E402
from femeso.energies import (  # noqa: E402
    CoerciveNeuralDensity,
    ConstantKappa,
    Energy,
    KnownDensity,
    NeuralKappa,
    NonlocalEnergy,
)
from femeso.fields import Expression, NeuralField  # noqa: E402
from femeso.hypothesis import OnsagerModel, load_model  # noqa: E402
from femeso.initial_conditions import random_smooth_field  # noqa: E402
from femeso.meshes import available_meshes, load_mesh, mesh_path  # noqa: E402
from femeso.mobilities import (  # noqa: E402
    CanonicalCoupling,
    ConservedMobility,
    LocalMobility,
    SkewTransport,
    TensorMobility,
)
from femeso.steppers import (  # noqa: E402
    DIRECT_SOLVER,
    ITERATIVE_SOLVER,
    EnergyStableStepper,
    StepFailure,
    StepRecord,
    Trajectory,
)
from femeso.training import Trainer, TrainingConfig  # noqa: E402

hold_petsc_world_communicator()

__version__ = "0.1.0"

__all__ = [
    "DIRECT_SOLVER",
    "ITERATIVE_SOLVER",
    "BlackBoxModel",
    "BlackBoxStepper",
    "CanonicalCoupling",
    "CoerciveNeuralDensity",
    "ConservedMobility",
    "ConstantKappa",
    "Energy",
    "EnergyStableStepper",
    "Expression",
    "KnownDensity",
    "LocalMobility",
    "NeuralField",
    "NeuralKappa",
    "NonlocalEnergy",
    "OnsagerModel",
    "SkewTransport",
    "StepFailure",
    "StepRecord",
    "Trainer",
    "TrainingConfig",
    "TensorMobility",
    "Trajectory",
    "__version__",
    "available_meshes",
    "load_mesh",
    "load_model",
    "mesh_path",
    "random_smooth_field",
]
