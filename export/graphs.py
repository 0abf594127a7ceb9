"""The two graphs that :mod:`svrt.export` writes, as plain PyTorch modules.

Both start from the trained :class:`svrt.emulator.SVCE` with BatchNorm folded into the convolutions
(:func:`fold_batchnorm`) and the FiLM conditioning of one instrument folded in as two constants
(gamma, beta). Inputs and outputs are float32; inputs Y, X must be multiples of 16.

- :class:`ForwardGraph` ``(obj [B,1,Y,X], modes [B,M,Y,X]) -> out [B,1,Y,X]``: the emulator.
- :class:`VJPGraph` ``(obj, modes, grad_out [B,1,Y,X]) -> (grad_obj [B,1,Y,X], grad_modes [B,M,Y,X])``:
  the vector-Jacobian product ``d<grad_out, f(obj, modes)>/d(obj, modes)`` written out as an ordinary
  forward computation (recompute the activations, then run the adjoint of every layer), so that any
  inference runtime (ONNX Runtime, TensorRT) computes the gradient with standard operators:

  =====================  ====================================================================
  forward                adjoint
  =====================  ====================================================================
  3x3 conv (W, pad 1)    3x3 conv with W flipped in space and in/out channels swapped (pad 1)
  1x1 conv               1x1 conv with the transposed weights
  ReLU                   multiply by (pre-activation > 0), as torch (0 at 0)
  2x2 max-pool           route the gradient to the first maximum of each window (torch's choice
                         on ties): four strided slices, equality masks, ``pixel_shuffle``
  bilinear x2 upsample   edge-replicated padding by 1 and a stride-2 depthwise 4x4 convolution
  (align_corners=False)  with ``outer([1,3,3,1]/4, [1,3,3,1]/4)`` (the transpose of the clamped
                         bilinear interpolation)
  concatenation          split
  FiLM ``g*p + b``       multiply by g
  residual ``y + x``     add the gradient to x's
  normalisation          ``c = obj - <obj>``, ``x = c/s``, ``out = y*s + <obj>``,
                         ``s = <|c|^8>^(1/8) + 1e-6``: product and quotient rules,
                         ``ds/dc = sign(c) (|c|/s)^7/(Y X)``, and the centring projection
                         ``d/dobj = d/dc - <d/dc>`` plus ``sum(grad_out)/(Y X)`` from the mean
                         (the older "p8" models: no centring, c = obj)
  =====================  ====================================================================

FP16 (``precision="fp16"``): the U-Net core (all convolutions) runs in half precision, the
normalisation, the residual and the output scaling stay in float32, and the inputs and outputs are
float32 (casts at the boundaries). The VJP graph rescales the upstream gradient of each sample by its
maximum before the half-precision core and multiplies the result back (the VJP is linear in
``grad_out``), so tiny or huge upstream gradients neither underflow nor overflow in FP16.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from svrt.emulator import NORM_EPS, NORM_P, NORM_TINY, SVCE, ConvBNReLU, map_output_back, normalize_input  # noqa: E402  (shared with the model)

# --------------------------------------------------------------------------- BatchNorm folding

def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution (with bias) equal to ``bn(conv(x))`` with ``bn`` in eval mode."""
    w = conv.weight.detach()
    b = conv.bias.detach() if conv.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    inv_std = torch.rsqrt(bn.running_var.detach().to(w.dtype) + bn.eps)
    gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(inv_std)
    beta = bn.bias.detach() if bn.bias is not None else torch.zeros_like(inv_std)
    scale = gamma * inv_std
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                      padding_mode=conv.padding_mode).to(device=w.device, dtype=w.dtype)
    with torch.no_grad():
        fused.weight.copy_(w * scale.view(-1, 1, 1, 1))
        fused.bias.copy_((b - bn.running_mean.detach()) * scale + beta)
    return fused


def fold_batchnorm(model: SVCE) -> SVCE:
    """A deep copy of ``model`` in eval mode with every BatchNorm folded into the convolution before it
    (the BatchNorm replaced by ``nn.Identity``). ``model`` itself is not changed."""
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if isinstance(module, ConvBNReLU) and isinstance(module[1], nn.BatchNorm2d):
            module[0] = fold_conv_bn(module[0], module[1])
            module[1] = nn.Identity()
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded


def film_constants(model: SVCE, instrument: str) -> tuple[float, float]:
    """(gamma, beta) of ``instrument`` as Python floats (the FiLM net evaluated once)."""
    p = next(model.parameters())
    with torch.no_grad():
        cond = model.one_hot(instrument, 1, device=p.device, dtype=p.dtype)
        gamma, beta = model.film_parameters(cond)
    return float(gamma.reshape(())), float(beta.reshape(()))


# --------------------------------------------------------------------------- adjoints of fixed ops

_BILINEAR_TAPS = (0.25, 0.75, 0.75, 0.25)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 upsampling, identical to ``F.interpolate(x, size=2*shape, mode="bilinear",
    align_corners=False)`` (the emulator's decoder on multiples of 16)."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def upsample2x_adjoint_kernel(channels: int, dtype=torch.float32) -> torch.Tensor:
    """The depthwise ``[channels, 1, 4, 4]`` kernel of :func:`upsample2x_adjoint`."""
    taps = torch.tensor(_BILINEAR_TAPS, dtype=torch.float64)
    return (taps[:, None] * taps[None, :]).expand(channels, 1, 4, 4).to(dtype).contiguous()


def upsample2x_adjoint(g: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
    """Adjoint of :func:`upsample2x`: ``[B, C, 2H, 2W] -> [B, C, H, W]``.

    In one dimension output ``2k`` reads ``0.25 x[k-1] + 0.75 x[k]`` and ``2k+1`` reads
    ``0.75 x[k] + 0.25 x[k+1]``, with indices clamped to the image. The transpose is therefore
    ``x'[k] = 0.25 g[2k-1] + 0.75 g[2k] + 0.75 g[2k+1] + 0.25 g[2k+2]`` with ``g`` edge-replicated
    (that is exactly what the clamping folds back onto the first and last pixel). ``kernel``:
    :func:`upsample2x_adjoint_kernel` (a constant in exported graphs).
    """
    if kernel is None:
        kernel = upsample2x_adjoint_kernel(g.shape[1], g.dtype).to(g.device)
    return F.conv2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), kernel, stride=2, groups=kernel.shape[0])


def maxpool2x_adjoint(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Adjoint of ``F.max_pool2d(x, 2)`` at ``x``: ``g [B,C,H,W] -> [B,C,2H,2W]``.

    Each window's gradient goes to its first maximum in row-major order (torch's choice on ties).
    """
    p00, p01 = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    p10, p11 = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    m = torch.maximum(torch.maximum(p00, p01), torch.maximum(p10, p11))
    e00 = p00 == m
    e01 = (p01 == m) & ~e00
    taken = e00 | e01
    e10 = (p10 == m) & ~taken
    e11 = ~(taken | e10)
    zero = torch.zeros_like(g)
    parts = [torch.where(e, g, zero) for e in (e00, e01, e10, e11)]
    return F.pixel_shuffle(torch.stack(parts, dim=2).flatten(1, 2), 2)


def _conv_adjoint_weight(w: torch.Tensor) -> torch.Tensor:
    """Weights of the stride-1 'same' convolution that is the adjoint of ``conv2d(., w)``."""
    return w.flip(-1, -2).transpose(0, 1).contiguous()


# --------------------------------------------------------------------------- the explicit network

class _Core(nn.Module):
    """The BN-folded U-Net between the normalisation and the residual: ``cat(x, modes) -> head``,
    with its exact adjoint. All weights are buffers so the module can be cast to half."""

    def __init__(self, folded: SVCE, gamma: float, beta: float):
        super().__init__()
        self.n_enc = len(folded.encoder)
        self.n_dec = len(folded.decoder)
        self.conditioned = [bool(level.conditioned) for level in folded.encoder]
        self.register_buffer("gamma", torch.tensor(gamma))
        self.register_buffer("beta", torch.tensor(beta))
        for i, level in enumerate(folded.encoder):
            self._add(f"e{i}a", level.first[0])
            self._add(f"e{i}b", level.second[0])
        for j, level in enumerate(folded.decoder):
            self._add(f"d{j}a", level.first[0])
            self._add(f"d{j}b", level.second[0])
        self._add("head", folded.head)
        self.skip_channels = [folded.encoder[self.n_enc - 2 - j].second[0].out_channels for j in range(self.n_dec)]
        below = [folded.encoder[-1].second[0].out_channels] + [
            lvl.second[0].out_channels for lvl in folded.decoder[:-1]
        ]
        for j, c in enumerate(below):  # channels upsampled by decoder level j
            self.register_buffer(f"up{j}_k", upsample2x_adjoint_kernel(c, folded.head.weight.dtype))

    def _add(self, name: str, conv: nn.Conv2d):
        w = conv.weight.detach().clone()
        b = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
        self.register_buffer(f"{name}_w", w)
        self.register_buffer(f"{name}_b", b)
        self.register_buffer(f"{name}_wt", _conv_adjoint_weight(w))

    def _conv(self, name: str, x: torch.Tensor) -> torch.Tensor:
        w = getattr(self, f"{name}_w")
        return F.conv2d(x, w, getattr(self, f"{name}_b"), padding=w.shape[-1] // 2)

    def _conv_t(self, name: str, g: torch.Tensor) -> torch.Tensor:
        w = getattr(self, f"{name}_wt")
        return F.conv2d(g, w, padding=w.shape[-1] // 2)

    def forward(self, x: torch.Tensor, modes: torch.Tensor, keep: bool = False):
        """``y_core`` (and, with ``keep``, what the adjoint needs)."""
        h = torch.cat([x, modes], dim=1)
        cache = {"enc": [], "dec": []}
        outputs = []
        for i in range(self.n_enc):
            if i > 0:
                h = F.max_pool2d(h, 2)
            a1 = self._conv(f"e{i}a", h)
            r = torch.relu(a1)
            if self.conditioned[i]:
                r = self.gamma * r + self.beta
            a2 = self._conv(f"e{i}b", r)
            h = torch.relu(a2)
            outputs.append(h)
            cache["enc"].append((a1, a2))
        for j in range(self.n_dec):
            skip = outputs[self.n_enc - 2 - j]
            h = torch.cat([skip, upsample2x(h)], dim=1)
            a1 = self._conv(f"d{j}a", h)
            a2 = self._conv(f"d{j}b", torch.relu(a1))
            h = torch.relu(a2)
            cache["dec"].append((a1, a2))
        y = self._conv("head", h)
        cache["outputs"] = outputs
        return (y, cache) if keep else y

    def backward(self, cache: dict, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Adjoint: ``dy`` (gradient of ``y_core``) -> (d x, d modes)."""
        zero = torch.zeros((), dtype=dy.dtype, device=dy.device)
        outputs = cache["outputs"]
        dh = self._conv_t("head", dy)
        dskip = [None] * self.n_enc
        for j in reversed(range(self.n_dec)):
            a1, a2 = cache["dec"][j]
            da2 = torch.where(a2 > 0, dh, zero)
            da1 = torch.where(a1 > 0, self._conv_t(f"d{j}b", da2), zero)
            dc = self._conv_t(f"d{j}a", da1)
            n = self.skip_channels[j]
            dskip[self.n_enc - 2 - j] = dc[:, :n]
            dh = upsample2x_adjoint(dc[:, n:], getattr(self, f"up{j}_k"))
        for i in reversed(range(self.n_enc)):
            if dskip[i] is not None:
                dh = dh + dskip[i]
            a1, a2 = cache["enc"][i]
            da2 = torch.where(a2 > 0, dh, zero)
            dr = self._conv_t(f"e{i}b", da2)
            if self.conditioned[i]:
                dr = self.gamma * dr
            da1 = torch.where(a1 > 0, dr, zero)
            dh = self._conv_t(f"e{i}a", da1)
            if i > 0:
                dh = maxpool2x_adjoint(outputs[i - 1], dh)
        return dh[:, :1], dh[:, 1:]


class _Graph(nn.Module):
    """``model`` is not changed (its BN-folded copy is taken); ``dtype`` of an FP32 graph defaults to the
    model's (float64 models give float64 graphs, used to check the adjoint exactly)."""

    def __init__(self, model: SVCE, instrument: str, precision: str = "fp32", dtype: torch.dtype | None = None):
        super().__init__()
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"precision must be fp32 or fp16, not {precision!r}")
        folded = fold_batchnorm(model)  # an eval-mode copy
        gamma, beta = film_constants(folded, instrument)
        self.precision = precision
        self.normalize = bool(model.config.normalize)
        self.config = model.config
        self.residual = bool(model.config.residual)
        self.core = _Core(folded, gamma, beta)
        self.core_dtype = torch.float16 if precision == "fp16" else (dtype or next(model.parameters()).dtype)
        self.core.to(self.core_dtype)

    def _inputs(self, obj: torch.Tensor):
        """``(x, scale, mean)`` as :func:`svrt.emulator.normalize_input`."""
        return normalize_input(obj, self.config)


class ForwardGraph(_Graph):
    """``forward(obj [B,1,Y,X], modes [B,M,Y,X]) -> out [B,1,Y,X]`` for one instrument (see module doc)."""

    def forward(self, obj: torch.Tensor, modes: torch.Tensor) -> torch.Tensor:
        x, scale, mean = self._inputs(obj)
        return map_output_back(self.core(x.to(self.core_dtype), modes.to(self.core_dtype)).to(obj.dtype), x, scale,
                               mean, self.config)


class VJPGraph(_Graph):
    """``forward(obj, modes, grad_out) -> (grad_obj, grad_modes)``: the vector-Jacobian product of
    :class:`ForwardGraph` (see module doc)."""

    def forward(self, obj: torch.Tensor, modes: torch.Tensor, grad_out: torch.Tensor):
        x, scale, mean = self._inputs(obj)
        y, cache = self.core(x.to(self.core_dtype), modes.to(self.core_dtype), keep=True)
        y = y.to(obj.dtype)
        g = grad_out
        if self.normalize:
            if self.residual:
                y = y + x
            dscale = (g * y).sum(dim=(-2, -1), keepdim=True)
            g = g * scale
        if self.precision == "fp16":
            # the VJP is linear in the upstream gradient: run the half-precision core on g / max|g|
            gmax = g.abs().amax(dim=(1, 2, 3), keepdim=True)
            gmax = torch.where(gmax > 0, gmax, torch.ones_like(gmax))
            dx, dmodes = self.core.backward(cache, (g / gmax).to(self.core_dtype))
            dx, dmodes = dx.to(obj.dtype) * gmax, dmodes.to(obj.dtype) * gmax
        else:
            dx, dmodes = self.core.backward(cache, g)
        if self.residual:
            dx = dx + g
        if not self.normalize:
            return dx, dmodes
        # x = c / s: dx/ds = -x/s; s = m (<(|c|/m)^p> + tiny)^(1/p) + eps, m = max|c| held constant:
        # ds/dc = sign(c) (|c|/m)^(p-1) (<(|c|/m)^p> + tiny)^(1/p - 1) / N (finite for c = 0)
        dscale = dscale - (dx * x).sum(dim=(-2, -1), keepdim=True) / scale
        centred = obj - mean if mean is not None else obj    # c (the "p8" models: obj itself)
        a = centred.abs()
        m = a.amax(dim=(-2, -1), keepdim=True).clamp_min(NORM_EPS)
        n_pixels = torch.ones_like(obj).sum(dim=(-2, -1), keepdim=True)
        q = (a / m).pow(NORM_P).mean(dim=(-2, -1), keepdim=True) + NORM_TINY
        grad_c = (
            dx / scale + torch.sign(centred) * (a / m).pow(NORM_P - 1) * q.pow(1.0 / NORM_P - 1) / n_pixels * dscale
        )
        if mean is None:
            return grad_c, dmodes
        # c = obj - <obj>: remove the mean of grad_c; out = ... + <obj>: every pixel gets sum(grad_out) / N
        grad_obj = (
            grad_c - grad_c.mean(dim=(-2, -1), keepdim=True) + grad_out.sum(dim=(-2, -1), keepdim=True) / n_pixels
        )
        return grad_obj, dmodes
