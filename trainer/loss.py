"""The training loss of Eq. 11 (its figure, the NMSE of Eq. 12, is :func:`svrt.metrics.nmse_power`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LAMBDA_GRAD = 10.0
LAMBDA_FLUX = 1.0

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel(img: torch.Tensor) -> torch.Tensor:
    """Horizontal and vertical Sobel gradients: ``[B, 1, Y, X] -> [B, 2, Y-2, X-2]``."""
    k = torch.stack([_SOBEL_X, _SOBEL_X.T])[:, None].to(img)
    return F.conv2d(img, k)


def emulator_loss(y: torch.Tensor, t: torch.Tensor, lambda_grad: float = LAMBDA_GRAD,
                  lambda_flux: float = LAMBDA_FLUX) -> dict:
    """Eq. 11: ``||y-t||^2 + lambda_grad ||grad y - grad t||^2 + lambda_flux ||<y> - <t>||^2`` (means over
    pixels and batch). ``y``, ``t`` ``[B, 1, Y, X]``. Returns the total and its three terms."""
    mse = F.mse_loss(y, t)
    grad = F.mse_loss(sobel(y), sobel(t))
    flux = (y.mean(dim=(-2, -1)) - t.mean(dim=(-2, -1))).pow(2).mean()
    return {"total": mse + lambda_grad * grad + lambda_flux * flux, "mse": mse, "grad": grad, "flux": flux}
