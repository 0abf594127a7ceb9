"""Helpers for tests of exported graphs and back ends: tiny untrained emulators whose BatchNorm
statistics and FiLM net are randomised, so that folding and conditioning are not trivially identity."""

from __future__ import annotations

import torch

from svrt.emulator import SVCE, EmulatorConfig


def tiny_model(width: int = 4, n_modes: int = 6, seed: int = 0, normalize: bool = True, residual: bool = True,
               head_gain: float = 4.0, normalization: str = "centred-p8") -> SVCE:
    """An eval-mode :class:`SVCE` with random BatchNorm statistics and affine terms, a random FiLM net
    (gamma, beta differ per instrument) and a head scaled by ``head_gain`` (so that the U-Net, not
    only the residual, shapes the output and its gradient)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = SVCE(EmulatorConfig(width=width, n_modes=n_modes, normalize=normalize, residual=residual,
                                normalization=normalization))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
        for p in model.film.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        model.head.weight.mul_(head_gain)
    return model.eval()
