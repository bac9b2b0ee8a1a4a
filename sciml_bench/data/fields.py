"""Small exact and spectral solvers that give the scientific models physically shaped sample batches."""
from __future__ import annotations

import math

import torch


def _resample_rfft(u_hat: torch.Tensor, n_from: int, n: int) -> torch.Tensor:
    """Band-limited values on an ``n``-point periodic grid from the rfft of an ``n_from``-point signal."""
    out = torch.zeros(*u_hat.shape[:-1], n // 2 + 1, dtype=u_hat.dtype)
    m = min(n // 2, n_from // 2)  # drop the Nyquist mode: it is not well defined across grids
    out[..., :m] = u_hat[..., :m] * (n / n_from)
    return torch.fft.irfft(out, n)


def burgers_1d(batch_size: int, n: int, g: torch.Generator, nu: float = 0.1, t_end: float = 1.0,
               modes: int = 4, n_solver: int = 256, dt: float = 1e-2, dtype: torch.dtype = torch.float32
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Viscous Burgers u_t + u u_x = nu u_xx on the periodic domain [0, 2π).

    Random smooth u0 (``modes`` Fourier modes, amplitude ~1) evolved to ``t_end`` by an
    integrating-factor RK4 pseudo-spectral solver with 2/3 dealiasing on ``n_solver`` points, then
    both fields are sampled band-limited on the ``n``-point grid x_j = 2πj/n. Returns (u0, uT), each (B, n),
    in ``dtype`` (float64 keeps the solver's own accuracy, for refinement studies).
    """
    k = torch.arange(n_solver // 2 + 1, dtype=torch.float64)
    c = torch.complex(torch.randn(batch_size, modes, generator=g, dtype=torch.float64),
                      torch.randn(batch_size, modes, generator=g, dtype=torch.float64))
    c = c / torch.arange(1, modes + 1, dtype=torch.float64) / math.sqrt(modes)
    u_hat = torch.zeros(batch_size, k.numel(), dtype=torch.complex128)
    u_hat[:, 1:modes + 1] = c * n_solver / 2
    u0_hat = u_hat.clone()
    dealias = (k < n_solver / 3).to(torch.complex128)
    ik = 1j * k

    def nonlinear(v: torch.Tensor) -> torch.Tensor:  # -(u^2 / 2)_x in Fourier space
        u = torch.fft.irfft(v, n_solver)
        return -0.5 * ik * torch.fft.rfft(u * u) * dealias

    e, e2 = torch.exp(-nu * k * k * dt), torch.exp(-nu * k * k * dt / 2)
    for _ in range(round(t_end / dt)):
        a = nonlinear(u_hat)
        b = nonlinear(e2 * (u_hat + dt / 2 * a))
        c2 = nonlinear(e2 * u_hat + dt / 2 * b)
        d = nonlinear(e * u_hat + dt * e2 * c2)
        u_hat = e * u_hat + dt / 6 * (e * a + 2 * e2 * (b + c2) + d)
    return (_resample_rfft(u0_hat, n_solver, n).to(dtype), _resample_rfft(u_hat, n_solver, n).to(dtype))


def heat_2d(batch_size: int, n: int, g: torch.Generator, kappa: float = 0.1, t_end: float = 1.0,
            modes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Heat equation u_t = kappa Δu on the periodic square [0, 2π)^2, solved exactly.

    u0 = Σ a_mn cos(m x + n y + φ_mn) over |m|, |n| <= ``modes``; each mode decays by
    exp(-kappa (m^2 + n^2) t_end). Returns (u0, uT), each (B, n, n) on the grid x_j = 2πj/n.
    """
    m = torch.arange(-modes, modes + 1, dtype=torch.float32)
    mx, my = (t.reshape(-1) for t in torch.meshgrid(m, m, indexing="ij"))  # (M,)
    amp = torch.randn(batch_size, mx.numel(), generator=g) / (1 + mx ** 2 + my ** 2)
    phase = 2 * math.pi * torch.rand(batch_size, mx.numel(), generator=g)
    x = torch.arange(n, dtype=torch.float32) * (2 * math.pi / n)
    xx, yy = torch.meshgrid(x, x, indexing="ij")
    arg = mx[:, None, None] * xx + my[:, None, None] * yy  # (M, n, n)
    waves = torch.cos(arg[None] + phase[:, :, None, None])  # (B, M, n, n)
    decay = torch.exp(-kappa * (mx ** 2 + my ** 2) * t_end)
    u0 = torch.einsum("bm,bmxy->bxy", amp, waves)
    return u0, torch.einsum("bm,bmxy->bxy", amp * decay, waves)


def lorenz63(batch_size: int, steps: int, g: torch.Generator, dt: float = 0.01, burn_in: int = 300,
             sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0) -> torch.Tensor:
    """Lorenz-63 trajectories (B, steps, 3) by RK4, started on the attractor after ``burn_in`` steps."""
    def f(s: torch.Tensor) -> torch.Tensor:
        x, y, z = s.unbind(-1)
        return torch.stack((sigma * (y - x), x * (rho - z) - y, x * y - beta * z), -1)

    s = torch.tensor([1.0, 1.0, 20.0]) + 5 * torch.randn(batch_size, 3, generator=g)
    out = []
    for i in range(burn_in + steps):
        k1 = f(s)
        k2 = f(s + dt / 2 * k1)
        k3 = f(s + dt / 2 * k2)
        k4 = f(s + dt * k3)
        s = s + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        if i >= burn_in:
            out.append(s)
    return torch.stack(out, 1)


def damped_oscillator(batch_size: int, steps: int, g: torch.Generator, dt: float = 0.1) -> torch.Tensor:
    """Exact damped oscillator x(t) = A exp(-γt) cos(ωt + φ) sampled at t = 0, dt, ...: (B, steps, 1)."""
    t = torch.arange(steps, dtype=torch.float32) * dt
    amp = 0.5 + torch.rand(batch_size, 1, generator=g)
    gamma = 0.05 * torch.rand(batch_size, 1, generator=g)
    omega = 0.5 + torch.rand(batch_size, 1, generator=g)
    phi = 2 * math.pi * torch.rand(batch_size, 1, generator=g)
    return (amp * torch.exp(-gamma * t) * torch.cos(omega * t + phi))[..., None]
