"""The PESQ-like training loss: what it counts, what it ignores, and that it trains."""

from __future__ import annotations

import pytest
import torch

from uniaudio_cli.train.perceptual import PesqLikeLoss


def speechlike(seconds: float = 1.0, sr: int = 16000, f0: float = 140.0, seed: int = 0) -> torch.Tensor:
    """Harmonics of a gliding pitch under a syllable-rate envelope, ``(1, 1, T)``."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sr)) / sr
    phase = 2 * torch.pi * torch.cumsum(f0 * (1 + 0.1 * torch.sin(2 * torch.pi * 2 * t)), 0) / sr
    x = sum(torch.sin(k * phase + torch.rand(1, generator=g) * 6.28) / k for k in range(1, 30))
    return (0.1 * x * (0.55 + 0.45 * torch.sin(2 * torch.pi * 4 * t))).float().view(1, 1, -1)


def noise_like(x: torch.Tensor, snr_db: float, seed: int = 1) -> torch.Tensor:
    n = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    return n * (x.square().mean() / n.square().mean() / 10 ** (snr_db / 10)).sqrt()


@pytest.mark.parametrize("equalise", [True, False])
def test_zero_for_a_copy_at_any_level_and_grows_with_noise(equalise: bool) -> None:
    loss = PesqLikeLoss(equalise=equalise)
    x = speechlike()
    assert loss(x, x).item() < 1e-3
    assert loss(0.3 * x, x).item() < 1e-3
    mild, strong = loss(x + noise_like(x, 25), x).item(), loss(x + noise_like(x, 5), x).item()
    assert 0.05 < mild < strong


def test_added_energy_costs_more_than_missing_energy() -> None:
    loss = PesqLikeLoss(equalise=False)
    x = speechlike()
    noisy = x + noise_like(x, 10)
    assert loss(noisy, x).item() > 1.5 * loss(x, noisy).item()


def test_silent_targets_are_skipped_and_gradients_are_finite() -> None:
    loss = PesqLikeLoss().eval()
    x = speechlike(seed=2)
    pred = (x + noise_like(x, 10)).repeat(2, 1, 1).requires_grad_(True)
    target = torch.cat([x, torch.zeros_like(x)])
    value = loss(pred, target)
    value.backward()
    assert torch.isfinite(pred.grad).all()
    assert value.item() == pytest.approx(loss(pred[:1].detach(), x).item(), rel=1e-5)
    assert pred.grad[1].abs().sum() == 0
    assert loss(pred.detach(), torch.zeros_like(target)).item() == 0.0


def test_gradient_descent_removes_added_noise() -> None:
    loss = PesqLikeLoss(equalise=False)
    x = speechlike(seed=3)
    noise = noise_like(x, 10)
    amount = torch.ones(1, requires_grad=True)
    opt = torch.optim.Adam([amount], lr=0.05)
    for _ in range(40):
        opt.zero_grad()
        loss(x + amount * noise, x).backward()
        opt.step()
    assert abs(amount.item()) < 0.5
