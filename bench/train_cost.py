"""Cost of a training iteration: forward solves / adjoint / PyTorch, and memory over the run.

Cahn--Hilliard data (Flory--Huggins energy, degenerate mobility) on the plate with holes; a
neural model (coercive density, learnable kappa, neural mobility) fitted with femeso's Trainer.
Time is split by wrapping, in this script only, the stepper's ``advance`` / ``restore`` /
``vjp``, the adjoint's transposed solve and sensitivity assembly, ``torch.autograd.grad`` inside
the VJP and the optimiser's ``step``; each second goes to the innermost wrapper running. The
resident memory is sampled after every iteration. Figures are ratios measured in one run.

    python bench/train_cost.py                         # 100 iterations, batch 4, unroll 2
    python bench/train_cost.py --refinement 1 --iterations 200 --json cost.json
    python bench/train_cost.py --gc collect            # full collection after every iteration
    python bench/train_cost.py --mesh interval --iterations 1000 --warmup 50   # memory slope
    python bench/train_cost.py --mesh interval --iterations 1000 --warmup 50 --before

The memory figure is the least-squares slope of the RSS (``/proc/self/statm``) over the
iterations after the warm-up, in KiB per iteration; ``--mesh interval`` (the unit interval,
``--cells`` cells, 65 DoFs by default) makes 1000 iterations take about 9 minutes. ``--before``
puts back what made the memory grow (a new projection solver in every ``reset``, no collection
per iteration) to compare with the current code in the same conditions.

RSS growth with ``--gc auto`` (Python's own schedule) but not with ``--gc collect`` is garbage in
reference cycles (Firedrake functions, PETSc vectors) waiting for a rare full collection, not a
leak; ``--gc freeze`` freezes the set-up's objects so that full collections become cheap and
frequent. The trainer itself now collects after every iteration (``Trainer.collect_garbage``).
"""

from __future__ import annotations

from femeso._runtime import configure_environment

configure_environment()  # before Firedrake: threads, kernel caches

import argparse
import functools
import gc
import json
import os
import resource
import time
from collections import defaultdict
from pathlib import Path

import firedrake as fd
import numpy as np
import torch
import ufl
from firedrake.petsc import PETSc

import femeso
import femeso.stepping.adjoint
from femeso.data.generators import cahn_hilliard_model, generate_dataset
from femeso.model.onsager import components
from femeso.stepping.energy_stable import EnergyStableStepper
from femeso.stepping.solvers import LU
from femeso.training.trainer import _Mismatch

PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 1024.0**2


class Clock:
    """Exclusive wall-clock accumulators: time goes to the innermost open category."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.stack: list[str] = []
        self.mark = time.perf_counter()

    def push(self, category: str) -> None:
        now = time.perf_counter()
        if self.stack:
            self.totals[self.stack[-1]] += now - self.mark
        self.stack.append(category)
        self.mark = now

    def pop(self) -> None:
        now = time.perf_counter()
        self.totals[self.stack.pop()] += now - self.mark
        self.mark = now

    def wrap(self, owner, name: str, category: str, *, inside: str | None = None) -> None:
        """Time ``owner.name`` as ``category`` (only when called directly under ``inside``)."""
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            if inside is not None and (not self.stack or self.stack[-1] != inside):
                return original(*args, **kwargs)
            self.push(category)
            try:
                return original(*args, **kwargs)
            finally:
                self.pop()

        setattr(owner, name, timed)


def rss_bytes() -> int:
    """Current resident set size."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def peak_rss_bytes() -> int:
    """Peak resident set size so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def initial_mu_before(self: EnergyStableStepper) -> None:
    """``EnergyStableStepper._initial_mu`` before the fix: a new ``fd.solve`` on every reset.

    Kept here for ``--before`` only: each call built new forms, a new solver and a new MUMPS
    factorisation, and left about 150-350 bytes of C memory behind.
    """
    model, k = self.model, self.k
    V = model.space
    mu = fd.Function(V)
    u0_t = self._u0_t.clone().requires_grad_(True)
    with torch.enable_grad():
        (dF,) = torch.autograd.grad(model.density(u0_t).sum(), u0_t)
    rule = model.rule
    dF_q = [rule.function() for _ in range(k)]
    for i in range(k):
        rule.assign(dF_q[i], dF[:, i])
    m, eta = fd.TrialFunction(V), fd.TestFunction(V)
    uc, etac = components(self.u, k), components(eta, k)
    rhs = sum(
        dF_q[i] * etac[i] * rule.dx
        + self.coefficients.kappa[i] * ufl.inner(ufl.grad(uc[i]), ufl.grad(etac[i])) * rule.dx
        for i in range(k)
    )
    fd.solve(ufl.inner(m, eta) * rule.dx == rhs, mu, solver_parameters=LU)
    self.w.subfunctions[1].assign(mu)


def rss_slope(rss: list[int], first: int) -> float:
    """Least-squares slope of the RSS over iterations ``first + 1 .. n``, in KiB per iteration."""
    y = np.asarray(rss[first:], dtype=float) / 1024.0
    x = np.arange(first + 1, len(rss) + 1, dtype=float)
    return float(np.polyfit(x, y, 1)[0])


def build(args):
    if args.mesh == "interval":
        mesh = fd.UnitIntervalMesh(args.cells)
    else:
        mesh = femeso.load_mesh("plate_with_holes", refinement=args.refinement)
    V = fd.FunctionSpace(mesh, "CG", 1)
    data = generate_dataset(
        V,
        lambda space: cahn_hilliard_model(
            space, kappa=5e-3, density="flory_huggins", mobility="degenerate"
        ),
        n_trajectories=args.trajectories,
        n_frames=args.frames,
        frame_dt=0.01,
        seed=args.seed,
        initial_condition=lambda space, seed: femeso.random_smooth_field(
            space, seed=seed, amplitude=0.2, mean=0.5, max_wavenumber=5
        ),
        name="cahn_hilliard",
        progress=False,
    )
    energy = femeso.Energy(
        femeso.CoerciveNeuralDensity(width=16, seed=0),
        femeso.ConstantKappa(1.0, learnable=True),
    )
    mobility = femeso.ConservedMobility(
        femeso.NeuralField(1, 1, width=16, seed=1, input_center=0.5, input_scale=0.25)
    )
    model = femeso.OnsagerModel(V, energy, mobility=mobility, kappa_ref=5e-3)
    return V, data, model


def instrument(clock: Clock, trainer: femeso.Trainer) -> None:
    forms = femeso.stepping.adjoint._AdjointForms
    clock.wrap(EnergyStableStepper, "advance", "forward")
    clock.wrap(EnergyStableStepper, "_update_pointwise", "forward_pointwise", inside="forward")
    clock.wrap(EnergyStableStepper, "reset", "reset")
    clock.wrap(EnergyStableStepper, "restore", "restore")
    clock.wrap(EnergyStableStepper, "vjp", "vjp_torch")  # what the wrappers below leave
    clock.wrap(forms, "solve", "adjoint_solve")
    clock.wrap(forms, "sensitivity", "adjoint_sensitivity")
    clock.wrap(forms, "pull_back", "adjoint_state")
    clock.wrap(fd, "assemble", "adjoint_state", inside="vjp_torch")  # dR/du0 (wrt_state)
    clock.wrap(torch.autograd, "grad", "vjp_autograd", inside="vjp_torch")
    clock.wrap(_Mismatch, "value", "loss")
    clock.wrap(_Mismatch, "derivative", "loss")
    # the instance's step (already wrapped by the scheduler, which must still see the call)
    clock.wrap(trainer.optimizer, "step", "optimizer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mesh",
        choices=("plate", "interval"),
        default="plate",
        help="the plate with holes (2-D, --refinement) or the unit interval (1-D, --cells cells)",
    )
    parser.add_argument("--refinement", type=int, default=0)
    parser.add_argument("--cells", type=int, default=64)
    parser.add_argument(
        "--before",
        action="store_true",
        help="the code before the memory fix: a new projection solver per reset, no "
        "garbage collection per iteration",
    )
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--unroll", type=int, default=2)
    parser.add_argument("--trajectories", type=int, default=3)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=10, help="iterations left out of means")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--gc",
        choices=("auto", "collect", "freeze"),
        default="auto",
        help="auto: Python's schedule; collect: gc.collect() after every iteration (not timed); "
        "freeze: gc.freeze() the objects of the set-up before training",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args, _ = parser.parse_known_args()  # the rest goes to PETSc (e.g. -log_view)
    if args.iterations <= args.warmup:
        parser.error("--iterations must exceed --warmup")
    options = PETSc.Options()  # PETSc read the command line too: drop this script's flags
    for action in parser._actions:
        for flag in action.option_strings:
            options.delValue(flag)

    V, data, model = build(args)
    config = femeso.TrainingConfig(
        iterations=args.iterations,
        batch_size=args.batch_size,
        unroll=args.unroll,
        validate_every=0,
        checkpoint_every=0,
        seed=args.seed,
    )
    trainer = femeso.Trainer(model, data, config=config, progress=False)
    if args.before:
        EnergyStableStepper._initial_mu = initial_mu_before
        trainer.collect_garbage = False
    clock = Clock()
    instrument(clock, trainer)

    # Per iteration only numbers go into preallocated arrays (a dict per iteration would be
    # memory growth of this script's own); the accumulators are copied after the warm-up.
    n_iterations = args.iterations
    walls = np.zeros(n_iterations)
    between = np.zeros(n_iterations)  # outside step(): the trainer's gc.collect, the loop
    rss = np.zeros(n_iterations, dtype=np.int64)
    peak = np.zeros(n_iterations, dtype=np.int64)
    skipped = np.zeros(n_iterations, dtype=np.int64)
    done = [0, 0.0]  # iterations measured, end of the last step
    start_totals: dict[str, float] = {}
    step = trainer.step

    def measured_step():
        i = done[0]
        t0 = time.perf_counter()
        if i:
            between[i - 1] = t0 - done[1]
        record = step()
        walls[i] = time.perf_counter() - t0
        if i + 1 == args.warmup:
            start_totals.update(clock.totals)
        if args.gc == "collect":
            gc.collect()
        rss[i] = rss_bytes()
        peak[i] = peak_rss_bytes()
        skipped[i] = record.skipped
        done[0], done[1] = i + 1, time.perf_counter()
        return record

    full_collections = [0]

    def count_full(phase: str, info: dict) -> None:
        if phase == "stop" and info["generation"] == 2:
            full_collections[0] += 1

    trainer.step = measured_step
    if args.gc == "freeze":  # then the old generation holds only what training created
        gc.collect()
        gc.freeze()
        gc.collect()
    gc.callbacks.append(count_full)
    rss_before = rss_bytes()
    history = trainer.run()
    gc.callbacks.remove(count_full)
    records = sum(len(s.records) for s in trainer._steppers.values())

    n, w = args.iterations, args.warmup
    measured = n - w

    start, end = start_totals, dict(clock.totals)

    def per_iteration(*names: str) -> float:
        return sum(end.get(c, 0.0) - start.get(c, 0.0) for c in names) / measured

    wall = float(np.sum(walls[w:])) / measured
    forward = per_iteration("forward", "forward_pointwise")
    pointwise = per_iteration("forward_pointwise")
    solve = per_iteration("adjoint_solve")
    sens = per_iteration("adjoint_sensitivity")
    state = per_iteration("adjoint_state")
    restore = per_iteration("restore")
    adjoint = solve + sens + state + restore
    vjp_net = per_iteration("vjp_torch")
    vjp_grad = per_iteration("vjp_autograd")
    optim = per_iteration("optimizer")
    torch_total = vjp_net + vjp_grad + optim
    reset = per_iteration("reset")
    loss = per_iteration("loss")
    other = wall - forward - adjoint - torch_total
    steps = args.batch_size * args.unroll

    if fd.COMM_WORLD.rank != 0:
        return

    def row(label: str, seconds: float, indent: int = 2) -> None:
        label = f"{' ' * indent}{label}"
        print(f"{label:<48} {seconds:8.4f} s  {100 * seconds / wall:5.1f} %")

    print(
        f"state DoFs {V.dim()} (mixed {2 * V.dim()}), mesh {args.mesh}, refinement "
        f"{args.refinement}, "
        f"{len(trainer.windows)} windows, batch {args.batch_size} x unroll {args.unroll} "
        f"= {steps} steps/iteration"
    )
    print(
        f"iterations {n} (means over {w + 1}..{n}); first iteration {walls[0]:.2f} s; "
        f"loss {history.records[0].loss:.3e} -> {history.records[-1].loss:.3e}; "
        f"skipped windows {sum(skipped)}"
    )
    print(f"{'mean per iteration':<48} {wall:8.4f} s  100.0 %")
    row("forward solves (advance)", forward)
    row("of which pointwise refresh (SNES callbacks)", pointwise, 4)
    row("adjoint (Firedrake/PETSc)", adjoint)
    row("transposed solve (J assembly + MUMPS)", solve, 4)
    row("parameter sensitivities (dR/dP_q)", sens, 4)
    row("state sensitivities (dR/du0 + pull-back)", state, 4)
    row("restore (pointwise values at w1)", restore, 4)
    row("PyTorch", torch_total)
    row("networks + tensors in vjp", vjp_net, 4)
    row("autograd.grad in vjp", vjp_grad, 4)
    row("optimiser step", optim, 4)
    row("other", other)
    row("reset (incl. initial mu solve)", reset, 4)
    row("mismatch (loss + derivative)", loss, 4)
    print(
        f"per step: forward {forward / steps:.4f} s, adjoint {adjoint / steps:.4f} s, "
        f"PyTorch in vjp {(vjp_net + vjp_grad) / steps:.4f} s"
    )
    print(f"adjoint/forward {adjoint / forward:.2f} (target <= 2)")
    print(f"(adjoint + PyTorch in vjp)/forward {(adjoint + vjp_net + vjp_grad) / forward:.2f}")

    print(f"RSS before training {rss_before / MiB:.1f} MiB")
    marks = sorted({i for i in (10, 25, 50, 75, n) if i <= n})
    for i in marks:
        print(
            f"  iteration {i:>4}: RSS {rss[i - 1] / MiB:8.1f} MiB, "
            f"peak {peak[i - 1] / MiB:8.1f} MiB"
        )
    base = max(1, min(10, n - 1))  # after warm-up
    growth = rss[-1] - rss[base - 1]
    peak_growth = peak[-1] - peak[base - 1]
    print(
        f"RSS growth iteration {base} -> {n}: {growth / MiB:+.1f} MiB "
        f"({growth / 1024 / (n - base):+.1f} KiB/iteration); "
        f"peak {peak_growth / MiB:+.1f} MiB ({peak_growth / 1024 / (n - base):+.1f} KiB/iteration)"
    )

    slope = rss_slope(list(rss), w)
    print(
        f"RSS slope (least squares over iterations {w + 1}..{n}): {slope:+.2f} KiB/iteration "
        f"({'--before: the code before the memory fix' if args.before else 'current code'}; "
        f"target <= 1)"
    )
    print(
        f"between iterations (the trainer's gc.collect and loop): "
        f"{1e3 * float(np.mean(between[w : n - 1])):.2f} ms "
        f"({100 * float(np.mean(between[w : n - 1])) / wall:.2f} % of an iteration)"
    )
    print(
        f"full (generation-2) garbage collections during training: {full_collections[0]} "
        f"(--gc {args.gc}, trainer collects: {trainer.collect_garbage}); "
        f"StepRecords kept by the trainer's steppers: {records}"
    )

    if args.json is not None:
        figures = {
            "dofs": V.dim(),
            "refinement": args.refinement,
            "iterations": n,
            "warmup": w,
            "batch_size": args.batch_size,
            "unroll": args.unroll,
            "seconds_per_iteration": wall,
            "first_iteration_seconds": walls[0],
            "split": {
                "forward": forward,
                "forward_pointwise": pointwise,
                "adjoint_solve": solve,
                "adjoint_sensitivity": sens,
                "adjoint_state": state,
                "restore": restore,
                "adjoint": adjoint,
                "torch_vjp_networks": vjp_net,
                "torch_vjp_autograd": vjp_grad,
                "optimizer": optim,
                "torch": torch_total,
                "reset": reset,
                "mismatch": loss,
                "other": other,
            },
            "adjoint_over_forward": adjoint / forward,
            "backward_over_forward": (adjoint + vjp_net + vjp_grad) / forward,
            "rss_mib": [float(r) / MiB for r in rss],
            "peak_rss_mib": [float(p) / MiB for p in peak],
            "rss_growth_kib_per_iteration": growth / 1024 / (n - base),
            "rss_slope_kib_per_iteration": slope,
            "mesh": args.mesh,
            "before": args.before,
            "gc": args.gc,
            "full_gc_collections": full_collections[0],
            "step_records_kept": records,
            "skipped_windows": int(skipped.sum()),
            "losses": history.losses,
        }
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
