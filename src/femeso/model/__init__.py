"""The hypothesis class: energies, mobilities, neural fields, the model and its file.

- :mod:`femeso.model.fields` -- neural and expression fields evaluated at quadrature points;
- :mod:`femeso.model.energies` -- energy densities, gradient coefficients and the energy;
- :mod:`femeso.model.mobilities` -- the dissipative parts :math:`M` and the conservative
  parts :math:`W`, each owning its weak form;
- :mod:`femeso.model.quadrature` -- the one place the state is sampled at quadrature points;
- :mod:`femeso.model.onsager` -- :class:`OnsagerModel`, the sum of the parts;
- :mod:`femeso.model.files` -- the model file (no pickle), shared with the black-box model.

The names load on first use.
"""

from femeso._runtime import lazy_exports

_EXPORTS = {
    "OnsagerModel": "femeso.model.onsager",
    "components": "femeso.model.onsager",
    "load_model": "femeso.model.onsager",
    "FORMAT_VERSION": "femeso.model.files",
    "ModelFileError": "femeso.model.files",
    "check_architecture_size": "femeso.model.files",
    "load_parameters_into": "femeso.model.files",
    "read_model_file": "femeso.model.files",
    "write_model_file": "femeso.model.files",
    "BarrierDensity": "femeso.model.energies",
    "EntropyDensity": "femeso.model.energies",
    "CoerciveNeuralDensity": "femeso.model.energies",
    "ConstantKappa": "femeso.model.energies",
    "Density": "femeso.model.energies",
    "Energy": "femeso.model.energies",
    "KnownDensity": "femeso.model.energies",
    "NeuralKappa": "femeso.model.energies",
    "NonlocalEnergy": "femeso.model.energies",
    "SumDensity": "femeso.model.energies",
    "CanonicalCoupling": "femeso.model.mobilities",
    "ConservedMobility": "femeso.model.mobilities",
    "LocalMobility": "femeso.model.mobilities",
    "MobilityCoefficient": "femeso.model.mobilities",
    "PointwiseMobility": "femeso.model.mobilities",
    "SkewTransport": "femeso.model.mobilities",
    "TensorMobility": "femeso.model.mobilities",
    "DTYPE": "femeso.model.fields",
    "Expression": "femeso.model.fields",
    "NeuralField": "femeso.model.fields",
    "PointwiseField": "femeso.model.fields",
    "TORCH_OPS": "femeso.model.fields",
    "UFL_OPS": "femeso.model.fields",
    "bound_input_slopes": "femeso.model.fields",
    "softplus": "femeso.model.fields",
    "QuadratureRule": "femeso.model.quadrature",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
