"""Common machinery of the classical solvers: parameters, time stepping to output times, blow-up checks.

A concrete solver precomputes everything that does not depend on the PDE parameters in its
constructor (wavenumbers, grids) and implements three small hooks:

* :meth:`Solver._initial_condition` — draw initial states on the CPU from a generator;
* :meth:`Solver._stepper` — build, for one batch of parameters, a function ``step(state, h)``
  advancing the internal state by ``h`` (precomputing per-trajectory coefficients once);
* :meth:`Solver._to_state` / :meth:`Solver._from_state` — convert between physical fields
  ``[B, C, *S]`` and the internal state (e.g. Fourier coefficients).

:meth:`Solver.solve` then integrates to the requested output times, burn-in included, and checks
every output for non-finite or exploding values.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import torch
from torch import Tensor

from solvers.errors import ConfigError, check_number, require

SERIAL_POINTS = 2**16
"""On the CPU, the least number of values (``batch * n^ndim``) a solve gives each of its threads.

A KS step (n = 256) is eight batched FFTs and ten element-wise products; the other solvers' steps are
alike. MKL and OpenMP split every one of them over all threads, whatever its size: at ``n = 256`` the
work per FFT (~0.3 us per trajectory) is too small to pay for the fork and join, and when other processes share the cores (data
workers, other jobs) a thread that waits for a descheduled partner stalls each FFT for milliseconds.
Measured on 2 shared cores, float32, n = 256, batch 64: 300 us per step on one thread against
0.8-14 ms on two; at batch 1024, 6.5e7 point-steps/s on one thread against 1e6-8e6 on two while other
jobs ran. So a CPU solve runs every operation on one thread, and larger solves split the *batch* into
``torch.get_num_threads()`` parts of at least this many values and two trajectories, integrated side by
side (one synchronisation per solve instead of one per operation; a descheduled part delays only itself).
ATen's own element-wise kernels stay serial below 32768 elements for the same reason.

A trajectory's result does not depend on the batch it is integrated in, nor on the thread count, bit for bit,
as long as the batch holds two trajectories or more: MKL transforms a lone 2D field by another path, whose
last bits differ (``tests/solvers/test_common.py``). So no part holds one trajectory."""

OUTPUT_COPIES = 3
"""Copies of an output frame at the peak of :meth:`Solver.solve`: the frames collected one by one, their
stack, and the allocator's slack of the per-frame temporaries between them (measured: 2.4-3.2 on the CPU)."""

ParamValue = float | Sequence[Any]
"""A PDE parameter in a config: a number (fixed) or ``[low, high]`` (uniform) or ``[low, high, "log"]``."""

TIME_SCALE = "time_scale"
"""The parameter that stretches each trajectory's time axis (see :data:`RANGED_SETTINGS`)."""

RANGED_SETTINGS = ("length", TIME_SCALE)
"""Settings of every solver that a preset may give as a per-trajectory range (a solver that supports one
lists it in its ``param_order``). Given as a range, such a setting becomes a PDE parameter, sampled per
trajectory like ``nu``; given as a number it stays a setting, so fixed presets keep their parameters.

* ``length``: the domain side ``L_b`` of trajectory ``b`` (``grid`` and ``dx`` are those of the midpoint);
* ``time_scale``: ``s_b`` stretches the nominal time axis of trajectory ``b``: its burn-in, output times and
  internal steps are ``s_b`` times the nominal ones (same number of sub-steps for all), so its frames are
  ``s_b · dt_out`` apart. As a number it must be 1 (a fixed time scale is a choice of ``dt_out``)."""


def is_range(name: str, value: Any) -> bool:
    """Whether the config value of ``name`` is a range ``[low, high]`` with ``low < high`` (or a log range);
    a malformed range raises :class:`ConfigError` naming ``name``."""
    if value is None or isinstance(value, int | float | str):
        return False
    return not ParamSpec(name, value).fixed


class DivergenceError(RuntimeError):
    """Some trajectories of a batch blew up (non-finite, or larger than the solver's threshold).

    Attributes:
        indices: batch indices of the trajectories that diverged (sorted).
        result: the full output ``[B, T, C, *S]``; diverged trajectories are NaN from the first
            output time at which they were detected, the others are valid.
        time: the first output time at which a trajectory was found diverged.
    """

    def __init__(self, message: str, indices: list[int], result: Tensor, time: float = math.nan) -> None:
        super().__init__(message)
        self.indices = indices
        self.result = result
        self.time = time


MULTIPLE_TOLERANCE = 1e-6
"""How far ``value / unit`` may lie from a whole number for :func:`whole_multiple` (rounding of decimal steps)."""


def whole_multiple(value: float, unit: float) -> int:
    """``k`` when ``value`` is ``k >= 1`` times ``unit`` (``|value / unit - k| < 1e-6``), else 0.

    The one test of "a positive multiple of" that output intervals, file intervals and model steps use.
    """
    numbers = all(isinstance(x, int | float) and not isinstance(x, bool) for x in (value, unit))
    if not numbers or not unit > 0 or not math.isfinite(value / unit):
        return 0
    ratio = value / unit
    k = round(ratio)
    return k if k >= 1 and abs(ratio - k) < MULTIPLE_TOLERANCE else 0


SOLVERS: dict[str, type[Solver]] = {}
"""pdestream's solver classes under their import path (``solvers.ks.KuramotoSivashinsky``), registered when
defined: the ``pde._target_`` values a stored config may name (:mod:`data.config`)."""


class ParamSpec:
    """One PDE parameter: fixed value, uniform range or log-uniform range, with validation."""

    def __init__(self, name: str, value: ParamValue, positive: bool = False) -> None:
        self.name = name
        self.log = False
        if isinstance(value, int | float):
            self.low = self.high = float(value)
        else:
            items = list(value)
            if len(items) == 3 and items[2] == "log":
                self.log = True
                items = items[:2]
            require(
                len(items) == 2 and all(isinstance(v, int | float) for v in items),
                f"{name}={value!r} is not allowed: give a number, [low, high] or [low, high, 'log']",
            )
            self.low, self.high = float(items[0]), float(items[1])
        require(
            math.isfinite(self.low) and math.isfinite(self.high),
            f"{name}={value!r} must be finite",
        )
        require(self.low <= self.high, f"{name}={value!r}: low must not exceed high")
        if positive or self.log:
            require(self.low > 0, f"{name}={value!r} is not allowed: {name} must be > 0")

    @property
    def fixed(self) -> bool:
        return self.low == self.high

    def sample(self, batch: int, generator: torch.Generator | None) -> Tensor:
        """``batch`` float64 draws on the CPU."""
        if self.fixed:
            return torch.full((batch,), self.low, dtype=torch.float64)
        return self.from_unit(torch.rand(batch, generator=generator, dtype=torch.float64))

    def from_unit(self, u: Tensor) -> Tensor:
        """The value at position ``u`` in [0, 1] of the range (uniform, or uniform in log for a log range)."""
        if self.log:
            return torch.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        return self.low + u * (self.high - self.low)

    def to_unit(self, values: Tensor) -> Tensor:
        """The position in [0, 1] of ``values`` in the range (the inverse of :meth:`from_unit`); 0 if fixed."""
        if self.fixed:
            return torch.zeros_like(values, dtype=torch.float64)
        values = values.double()
        if self.log:
            return (values.log() - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (values - self.low) / (self.high - self.low)

    def check(self, values: Tensor) -> None:
        """Refuse values outside the physically allowed set (e.g. a negative viscosity)."""
        if not bool(torch.isfinite(values).all()):
            raise ConfigError(f"parameter {self.name} has non-finite values")
        if self.low > 0 and bool((values <= 0).any()):
            raise ConfigError(f"parameter {self.name} must be > 0, got min {values.min().item():g}")


Stepper = Callable[[Any, float], Any]


class Solver(ABC):
    """Base class of all pdestream solvers (see ``ARCHITECTURE.md``, *Solver API*).

    Solve fine, store coarse: with ``n_solve > n`` the equation is integrated on ``n_solve`` points per
    dimension and every output keeps every ``n_solve / n``-th point (the FNO data sets are solved at
    256² and stored at 64² this way). Initial conditions are drawn on the solve grid; :meth:`solve`
    accepts ``u0`` on either grid (an output-grid ``u0`` is interpolated spectrally).

    Args:
        n: grid points per spatial dimension of the outputs.
        length: side of the periodic domain ``[0, length)^ndim``; ``[low, high]``: one per trajectory, for a
            solver that supports it (:data:`RANGED_SETTINGS`).
        dt: largest internal time step; output intervals are split into equal sub-steps ``<= dt``.
        dt_out: the interval between the frames a trajectory stores (the model's time step), a positive
            multiple of ``dt``; ``None`` (a solver used directly, e.g. by :meth:`solve` with explicit times)
            leaves it unset, and trajectory data refuse such a solver.
        burn_in: time integrated before ``t = 0`` so that transients are dropped (0: none).
        blowup: an output with ``max |u|`` above this (or any non-finite value) marks its
            trajectory as diverged.
        n_solve: grid points per dimension of the integration, a multiple of ``n``; ``None``: ``n``.
        time_scale: 1, or ``[low, high]``: per-trajectory stretch of the time axis, for a solver that supports
            it (:data:`RANGED_SETTINGS`).
    """

    ndim: int = 1
    channels: tuple[str, ...] = ("u",)
    can_solve: bool = True
    """False for a description of data no pdestream solver makes (``solvers.external.External``)."""
    param_order: tuple[str, ...] = ()
    """The PDE parameters in the order the constructor adds them (see :meth:`param_names`)."""
    param_meanings: ClassVar[Mapping[str, tuple[str, str]]] = {
        "length": ("domain length L", "length units"),
        TIME_SCALE: ("time scale s of the trajectory (frames s · dt_out apart)", ""),
    }
    """``name → (meaning, units)`` of each parameter, for the axes and tables that show it; a subclass adds
    its own to these."""
    channel_units: ClassVar[Mapping[str, str]] = {}
    """``channel → units`` of each field (written as the ``units`` attribute of a file's ``u``). pdestream's PDEs
    are nondimensional: "length units" and "time units" are the equation's own units of length and time, in
    which the domain length, the coordinates and ``dt`` are given; a channel not listed has no stated units."""
    work_fields: float = 32.0
    """Peak memory of :meth:`solve` besides its outputs, per trajectory, in fields of the solve grid (state,
    stages, FFT buffers, the allocator's slack): each solver sets its own, measured as peak RSS growth
    (``tests/data/test_memory.py``)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith("solvers."):  # pdestream's own solvers; a checkpoint may name only these
            SOLVERS[f"{cls.__module__}.{cls.__qualname__}"] = cls

    def __init__(
        self,
        n: int,
        length: float,
        dt: float,
        burn_in: float = 0.0,
        blowup: float = 1e6,
        n_solve: int | None = None,
        dt_out: float | None = None,
        time_scale: ParamValue = 1.0,
    ) -> None:
        require(isinstance(n, int) and n >= 8 and n % 2 == 0, f"n={n!r}: must be an even int >= 8")
        n_solve = n if n_solve is None else n_solve
        require(
            isinstance(n_solve, int) and n_solve >= n and n_solve % n == 0,
            f"n_solve={n_solve!r}: must be null or an int multiple of n={n} (the solve grid is refined "
            "by an integer factor and every n_solve/n-th point is stored)",
        )
        self.params: dict[str, ParamSpec] = {}
        for name, value in zip(RANGED_SETTINGS, (length, time_scale), strict=True):
            if is_range(name, value):
                require(
                    name in self.param_order,
                    f"{name}={value!r} is not allowed for {type(self).__name__}: give a number (a per-trajectory "
                    f"range is supported by solvers whose param_order lists {name!r})",
                )
                self.add_param(name, value, positive=True)
        if "length" in self.params:
            length = 0.5 * (self.params["length"].low + self.params["length"].high)
        require(
            "time_scale" in self.params or time_scale == 1,
            f"time_scale={time_scale!r} is not allowed: give 1 or a range [low, high] (a fixed time scale is a "
            "choice of dt_out and burn_in)",
        )
        check_number("length", length, low=0, low_open=True)
        check_number("dt", dt, low=0, low_open=True)
        check_number("burn_in", burn_in, low=0)
        check_number("blowup", blowup, low=0, low_open=True)
        self.n, self.n_solve, self.length, self.dt = n, n_solve, float(length), float(dt)
        self.dt_out: float | None = None
        if dt_out is not None:
            steps = whole_multiple(dt_out, self.dt)
            require(
                steps >= 1,
                f"dt_out={dt_out!r} is not allowed: it must be a positive multiple of the solver's "
                f"dt={self.dt:g} (e.g. {self.dt:g}, {2 * self.dt:g}, ...)",
            )
            self.dt_out = steps * self.dt
        self.burn_in, self.blowup = float(burn_in), float(blowup)

    # ----------------------------------------------------------------- parameters
    @classmethod
    def param_names(cls, config: Mapping[str, Any]) -> tuple[str, ...]:
        """The PDE parameters a solver built from ``config`` (its constructor keys) has, in order; read
        without building it (a subclass whose parameters depend on a setting overrides this). A setting of
        :data:`RANGED_SETTINGS` is one only when the config gives it as a range."""
        return tuple(
            name
            for name in cls.param_order
            if name not in RANGED_SETTINGS or is_range(name, config.get(name))
        )

    @classmethod
    def fields_of(cls, config: Mapping[str, Any]) -> tuple[int, tuple[str, ...]]:
        """The spatial dimensions and channel names a solver built from ``config`` has, read without building
        it (model shapes in ``conf/``)."""
        return cls.ndim, cls.channels

    def add_param(self, name: str, value: ParamValue, positive: bool = False) -> None:
        """Add a PDE parameter; :attr:`params` keeps the order of ``param_order`` (that of the draws)."""
        if name not in self.param_order:
            raise TypeError(f"{type(self).__name__}.param_order does not list the parameter {name!r}")
        self.params[name] = ParamSpec(name, value, positive)
        self.params = {k: self.params[k] for k in self.param_order if k in self.params}

    @property
    def max_time_scale(self) -> float:
        """The largest per-trajectory time scale (1 unless ``time_scale`` is a range)."""
        return self.params["time_scale"].high if "time_scale" in self.params else 1.0

    def sample_params(self, batch: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """One value per trajectory for every PDE parameter (float64, CPU)."""
        return {name: spec.sample(batch, generator) for name, spec in self.params.items()}

    def complete_params(
        self,
        params: Mapping[str, Tensor | float] | None,
        batch: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> dict[str, Tensor]:
        """Fill in missing parameters (fixed ones by value, ranged ones by their midpoint) and check them."""
        params = dict(params or {})
        unknown = set(params) - set(self.params)
        if unknown:
            raise ConfigError(
                f"unknown parameter(s) {sorted(unknown)} for {type(self).__name__}; "
                f"allowed: {sorted(self.params)}"
            )
        out = {}
        for name, spec in self.params.items():
            value = params.get(name, 0.5 * (spec.low + spec.high))
            value = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
            if value.numel() == 1:
                value = value.expand(batch)
            if value.numel() != batch:
                raise ConfigError(f"parameter {name} has {value.numel()} values for a batch of {batch}")
            spec.check(value)
            out[name] = value.to(device=device, dtype=dtype)
        return out

    # ----------------------------------------------------------------- grid
    @property
    def dx(self) -> float:
        """Spacing of the output grid."""
        return self.length / self.n

    @property
    def dx_solve(self) -> float:
        """Spacing of the integration grid."""
        return self.length / self.n_solve

    @property
    def grid(self) -> tuple[Tensor, ...]:
        """Cell coordinates of the outputs, one float64 tensor of ``n`` points per dimension (x, then y)."""
        x = torch.arange(self.n, dtype=torch.float64) * self.dx
        return tuple(x for _ in range(self.ndim))

    def mesh(
        self, device: torch.device | None = None, dtype: torch.dtype = torch.float64, solve: bool = False
    ) -> tuple[Tensor, ...]:
        """Broadcastable coordinate arrays, ``indexing="ij"``, of the output grid (``solve``: the solve grid)."""
        n, dx = (self.n_solve, self.dx_solve) if solve else (self.n, self.dx)
        axis = (torch.arange(n, dtype=torch.float64) * dx).to(device=device, dtype=dtype)
        return tuple(torch.meshgrid(*[axis] * self.ndim, indexing="ij")) if self.ndim > 1 else (axis,)

    def solve_bytes(self, batch: int, frames: int, dtype: torch.dtype = torch.float32) -> int:
        """About the peak memory (bytes) that :meth:`solve` of ``batch`` trajectories at ``frames`` output
        times takes on its device: :attr:`work_fields` fields on the solve grid per trajectory, and every
        output frame :data:`OUTPUT_COPIES` times."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        fields = self.work_fields * self.n_solve**self.ndim + OUTPUT_COPIES * frames * self.n**self.ndim
        return math.ceil(batch * len(self.channels) * itemsize * fields)

    # ----------------------------------------------------------------- hooks
    @abstractmethod
    def _initial_condition(self, batch: int, generator: torch.Generator | None) -> Tensor:
        """Initial states ``[B, C, *S]``, float64 on the CPU."""

    @abstractmethod
    def _stepper(self, params: dict[str, Tensor], device: torch.device, dtype: torch.dtype) -> Stepper:
        """A function ``step(state, h) -> state`` for this batch of parameters."""

    def _to_state(self, u: Tensor) -> Any:
        return u

    def _from_state(self, state: Any) -> Tensor:
        return state

    def _check_state(self, u: Tensor, params: dict[str, Tensor], h: float) -> None:  # noqa: B027
        """Hook run on every output: raise :class:`ConfigError` if the step is unstable (e.g. CFL)."""

    # ----------------------------------------------------------------- public API
    def initial_condition(
        self,
        batch: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Random initial states ``[B, C, *S]`` on the solve grid (drawn on the CPU, so equal on every device)."""
        return self._initial_condition(batch, generator).to(device=device, dtype=dtype)

    def solve(
        self, u0: Tensor, t: Sequence[float] | Tensor, params: Mapping[str, Tensor | float] | None = None
    ) -> Tensor:
        """States at the times ``t`` (after ``burn_in``), ``[B, len(t), C, *S]``, on ``u0``'s device and dtype.

        ``u0`` lies on the solve grid or on the output grid (then interpolated spectrally onto the solve
        grid); outputs lie on the output grid.

        On the CPU every operation runs on one intra-op thread, and a batch of at least
        ``2 * SERIAL_POINTS`` values is split into up to ``torch.get_num_threads()`` parts integrated side
        by side (:data:`SERIAL_POINTS`); trajectories are independent, so the parts give the batched
        result, bit for bit. The calling thread's thread count is restored afterwards, also when the solve
        raises.

        Raises:
            DivergenceError: some trajectories blew up; the others are in ``error.result``.
        """
        grids = dict.fromkeys((self.n_solve, self.n))
        shapes = [(len(self.channels), *([size] * self.ndim)) for size in grids]
        if u0.ndim != 2 + self.ndim or tuple(u0.shape[1:]) not in shapes:
            allowed = " or ".join(f"[batch, {', '.join(map(str, shape))}]" for shape in shapes)
            raise ConfigError(f"u0 has shape {tuple(u0.shape)}; expected {allowed}")
        u0 = spectral_resample(u0, self.n_solve, self.ndim)
        if u0.device.type != "cpu":
            return self._integrate(u0, t, params)
        threads = torch.get_num_threads()
        parts = max(1, min(threads, u0.shape[0] // 2, u0.numel() // SERIAL_POINTS))
        torch.set_num_threads(1)
        try:
            return (
                self._integrate(u0, t, params) if parts == 1 else self._integrate_parts(u0, t, params, parts)
            )
        finally:
            torch.set_num_threads(threads)

    def _integrate_parts(
        self, u0: Tensor, t: Sequence[float] | Tensor, params: Mapping[str, Tensor | float] | None, parts: int
    ) -> Tensor:
        """:meth:`_integrate` ``parts`` slices of the batch in as many threads, each on one intra-op thread."""
        full = self.complete_params(params, u0.shape[0], u0.device, u0.dtype)
        bounds = torch.linspace(0, u0.shape[0], parts + 1).round().long().tolist()
        slices = [slice(a, b) for a, b in itertools.pairwise(bounds)]

        def part(rows: slice) -> Tensor | DivergenceError:
            torch.set_num_threads(1)
            try:
                return self._integrate(u0[rows], t, {k: v[rows] for k, v in full.items()})
            except DivergenceError as error:
                return error

        with ThreadPoolExecutor(parts) as pool:
            results = list(pool.map(part, slices))
        failed = [
            (rows, r) for rows, r in zip(slices, results, strict=True) if isinstance(r, DivergenceError)
        ]
        out = torch.cat([r.result if isinstance(r, DivergenceError) else r for r in results])
        if failed:
            indices = [rows.start + i for rows, error in failed for i in error.indices]
            raise self.divergence(indices, min(error.time for _, error in failed), full, out)
        return out

    def _integrate(
        self, u0: Tensor, t: Sequence[float] | Tensor, params: Mapping[str, Tensor | float] | None
    ) -> Tensor:
        """:meth:`solve` of a start on the solve grid, on the calling thread's intra-op threads."""
        stored = (..., *[slice(None, None, self.n_solve // self.n)] * self.ndim)
        times = torch.as_tensor(t, dtype=torch.float64).reshape(-1).tolist()
        if not times or times[0] < 0 or any(b < a for a, b in itertools.pairwise(times)):
            raise ConfigError(f"t={times}: output times must be non-empty, >= 0 and non-decreasing")
        batch, device, dtype = u0.shape[0], u0.device, u0.dtype
        full = self.complete_params(params, batch, device, dtype)
        step = self._stepper(full, device, dtype)
        state = self._to_state(u0)
        bad = torch.zeros(batch, dtype=torch.bool, device=device)
        first_bad_time = math.nan
        outputs = []
        now, h = -self.burn_in, self.dt
        for target in times:
            span = target - now
            if span > 0:
                substeps = max(1, math.ceil(span / self.dt - 1e-9))
                h = span / substeps
                for _ in range(substeps):
                    state = step(state, h)
                now = target
            u = self._from_state(state)[stored]
            flat = u.reshape(batch, -1)
            newly = ~torch.isfinite(flat).all(dim=1) | (flat.abs().amax(dim=1) > self.blowup)
            if bool(newly.any()):
                if not bool(bad.any()):
                    first_bad_time = target
                bad |= newly
            else:
                self._check_state(u, full, h)
            outputs.append(torch.where(_expand(bad, u), torch.nan, u))
        result = torch.stack(outputs, dim=1)
        if bool(bad.any()):
            raise self.divergence(bad.nonzero().flatten().tolist(), first_bad_time, full, result)
        return result

    def divergence(
        self, indices: list[int], time: float, params: dict[str, Tensor], result: Tensor
    ) -> DivergenceError:
        """The :class:`DivergenceError` for trajectories ``indices`` of a batch, first seen at ``time``."""
        shown = ", ".join(f"{k}={v[indices[0]].item():g}" for k, v in params.items())
        return DivergenceError(
            f"{type(self).__name__}: {len(indices)} of {result.shape[0]} trajectories blew up (non-finite or "
            f"|u| > {self.blowup:g}) by t={time:g}, e.g. trajectory {indices[0]} ({shown}); "
            f"dt={self.dt:g} is likely too large for this configuration",
            indices,
            result,
            time,
        )


def _expand(mask: Tensor, like: Tensor) -> Tensor:
    return mask.reshape(-1, *([1] * (like.ndim - 1)))


def random_sines(
    batch: int, x: Tensor, length: float, waves: int, max_mode: int, generator: torch.Generator | None
) -> Tensor:
    """Random smooth periodic fields ``u(x) = Σ_j A_j sin(2π l_j x / L + φ_j)``, ``[B, 1, len(x)]`` float64.

    ``J = waves`` terms with ``A_j ~ U(-1/2, 1/2)``, ``l_j`` uniform on ``1..max_mode`` and
    ``φ_j ~ U(0, 2π)``: the initial conditions of Brandstetter et al. (MP-PDE and LPSDA, 2022).
    """
    shape = (batch, waves, 1)
    amplitude = torch.rand(shape, generator=generator, dtype=torch.float64) - 0.5
    mode = torch.randint(1, max_mode + 1, shape, generator=generator).to(torch.float64)
    phase = 2 * math.pi * torch.rand(shape, generator=generator, dtype=torch.float64)
    return (amplitude * torch.sin(2 * math.pi * mode * x / length + phase)).sum(dim=1, keepdim=True)


def gaussian_random_field(
    batch: int,
    n: int,
    length: float,
    ndim: int,
    scale: float,
    tau: float,
    alpha: float,
    generator: torch.Generator | None,
    zero_mean: bool = False,
) -> Tensor:
    """Samples of the Gaussian measure ``N(0, scale (−Δ + τ² I)^{−α})`` on the periodic box ``[0, L)^ndim``,
    ``[B, 1, *S]`` float64 at ``n`` points per axis.

    The Karhunen-Loève expansion ``u = Σ_k sqrt(λ_k) ξ_k φ_k`` over the orthonormal Fourier modes
    ``φ_k = L^{−ndim/2} e^{i κ·x}``, ``κ = 2π k / L``, with ``λ_k = scale (|κ|² + τ²)^{−α}`` and standard
    (Hermitian) Gaussian ``ξ_k``, truncated to the modes the grid holds: the unnormalised DFT coefficients
    have ``E|û_k|² = n^{2 ndim} λ_k / L^ndim`` (the mean ``û_0`` included unless ``zero_mean``; the real
    Nyquist modes have the variance of their DFT coefficient, as in the FNO generators). Drawn as white noise on the grid filtered in Fourier space, so a
    trajectory needs ``n^ndim`` normal draws.
    """
    dims = tuple(range(-ndim, 0))
    full = wavenumbers(n, length)
    axes = [full] * (ndim - 1) + [wavenumbers(n, length, real=True)]
    k_sq = sum(k**2 for k in torch.meshgrid(*axes, indexing="ij"))
    # White noise has E|ŵ_k|² = n^ndim, so the product has E|û_k|² = n^(2 ndim) λ_k / L^ndim.
    amplitude = math.sqrt(scale * n**ndim / length**ndim) * (k_sq + tau**2) ** (-alpha / 2)
    if zero_mean:
        amplitude[(0,) * ndim] = 0.0
    noise = torch.randn(batch, 1, *([n] * ndim), generator=generator, dtype=torch.float64)
    return torch.fft.irfftn(torch.fft.rfftn(noise, dim=dims) * amplitude, s=[n] * ndim, dim=dims)


def spectral_resample(u: Tensor, n: int, ndim: int) -> Tensor:
    """Band-limited interpolation of a periodic field ``[..., *S]`` (``ndim`` axes) onto ``n`` points per axis.

    Fourier coefficients (``rfftn``, amplitude-normalised) with ``|k| < min(n, n_old) / 2`` are kept and
    the rest dropped (downsampling) or zero (upsampling); the Nyquist mode of the smaller grid is dropped,
    so a trigonometric polynomial of degree ``< min(n, n_old) / 2`` is reproduced exactly.
    """
    old = u.shape[-1]
    if n == old:
        return u
    dims = tuple(range(-ndim, 0))
    coeffs = torch.fft.rfftn(u, dim=dims, norm="forward")
    half = min(n, old) // 2
    out = coeffs.new_zeros((*coeffs.shape[:-ndim], *([n] * (ndim - 1)), n // 2 + 1))
    if ndim == 1:
        out[..., :half] = coeffs[..., :half]
    else:
        out[..., :half, :half] = coeffs[..., :half, :half]
        out[..., n - half + 1 :, :half] = coeffs[..., old - half + 1 :, :half]
    return torch.fft.irfftn(out, s=[n] * ndim, dim=dims, norm="forward")


def wavenumbers(n: int, length: float, real: bool = False) -> Tensor:
    """Angular wavenumbers ``2π k / length`` of an ``n``-point periodic grid (float64).

    ``real=True`` gives the ``n // 2 + 1`` non-negative ones that match ``torch.fft.rfft``.
    """
    freqs = torch.fft.rfftfreq(n, d=1.0 / n) if real else torch.fft.fftfreq(n, d=1.0 / n)
    return (2 * math.pi / length) * freqs.to(torch.float64)


def dealias_mask(n: int, real: bool = False) -> Tensor:
    """Orszag's 2/3 rule: ``True`` for the integer wavenumbers ``|k| < n/3`` that are kept."""
    freqs = torch.fft.rfftfreq(n, d=1.0 / n) if real else torch.fft.fftfreq(n, d=1.0 / n)
    return freqs.abs() < n / 3
