r"""Noise-prediction networks of a DDPM: ``(x_t, t) -> eps_theta(x_t, t)`` (or x_0, or v).

Both take the noisy sample ``x_t`` of shape ``(..., *data_shape)`` and the time ``t`` of
shape ``(...)`` (real-valued: integer steps in training, real t on the probability-flow
ODE) and return a tensor shaped like ``x_t``:

- :class:`TimeMLP` for vectors (the 2-D toy densities): residual MLP blocks, each told the
  time through a learned projection of a sinusoidal embedding;
- :class:`UNet` for small one-channel images (the 8x8 digits): two resolutions, residual
  blocks with GroupNorm and the time embedding added per block (Ho et al. 2020, App. B,
  without attention at this size).

The time embedding is the Transformer's sinusoidal position encoding of t (Vaswani et al.
2017, Sec. 3.5), as in Ho et al.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vi_models._validation import check_positive_int
from vi_models.errors import ConfigError, DataError
from vi_models.nets import ActivationFactory, _check_dims, _make_activation, check_image_shape

__all__ = ["Reshape", "TimeMLP", "UNet", "sinusoidal_embedding"]


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """[sin(t w_k), cos(t w_k)] with w_k = max_period^(-k / (dim/2)), k < dim/2.

    Parameters
    ----------
    t
        Times, shape ``(...)``, any real values.
    dim
        Even embedding size.

    Returns
    -------
    Tensor
        Shape ``(..., dim)``, in ``t``'s floating dtype.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=t.dtype) / half)
    angles = t.unsqueeze(-1) * freqs  # (..., half)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class _TimeEmbedding(nn.Module):
    """Sinusoidal features of t, then Linear -> act -> Linear (Ho et al.'s ``temb``)."""

    def __init__(self, dim: int, activation: ActivationFactory, **factory) -> None:
        super().__init__()
        self.dim = dim
        self.net = nn.Sequential(
            nn.Linear(dim, dim * 2, **factory), _make_activation(activation), nn.Linear(dim * 2, dim * 2, **factory)
        )

    def forward(self, t: Tensor) -> Tensor:
        return self.net(sinusoidal_embedding(t, self.dim))  # (..., 2 dim)


class TimeMLP(nn.Module):
    """Residual MLP ``(x_t (..., D), t (...)) -> (..., D)`` for vector data.

    ``h = W_in x``; each block ``h <- h + W_2 act(W_1 act(h) + U temb(t))``; output
    ``W_out act(h)``, initialised at zero so the untrained model predicts eps = 0.

    Parameters
    ----------
    data_dim
        D, the size of one observation.
    hidden_dim
        Width of the residual stream.
    num_blocks
        Number of residual blocks.
    time_dim
        Size of the sinusoidal embedding (even).
    activation, device, dtype
        As for :class:`vi_models.nets.MLP`.

    Examples
    --------
    >>> net = TimeMLP(2, hidden_dim=16, num_blocks=2)
    >>> net(torch.randn(5, 3, 2), torch.ones(5, 3)).shape
    torch.Size([5, 3, 2])
    """

    def __init__(
        self,
        data_dim: int,
        hidden_dim: int = 128,
        num_blocks: int = 3,
        time_dim: int = 32,
        activation: ActivationFactory = nn.SiLU,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.data_dim = check_positive_int(data_dim, "data_dim")
        hidden_dim = check_positive_int(hidden_dim, "hidden_dim")
        num_blocks = check_positive_int(num_blocks, "num_blocks")
        time_dim = check_positive_int(time_dim, "time_dim", minimum=2)
        if time_dim % 2:
            raise ConfigError(f"expected an even time_dim, got {time_dim}")
        factory = {"device": device, "dtype": dtype}
        self.time = _TimeEmbedding(time_dim, activation, **factory)
        self.inp = nn.Linear(self.data_dim, hidden_dim, **factory)
        self.blocks = nn.ModuleList()
        for _ in range(num_blocks):
            self.blocks.append(
                nn.ModuleDict(
                    {
                        "act": _make_activation(activation),
                        "lin1": nn.Linear(hidden_dim, hidden_dim, **factory),
                        "temb": nn.Linear(2 * time_dim, hidden_dim, **factory),
                        "lin2": nn.Linear(hidden_dim, hidden_dim, **factory),
                    }
                )
            )
        self.out_act = _make_activation(activation)
        self.out = nn.Linear(hidden_dim, self.data_dim, **factory)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Map ``x`` of shape ``(..., D)`` and ``t`` of shape ``(...)`` to ``(..., D)``."""
        if x.shape[-1] != self.data_dim:
            raise DataError(f"expected x of shape (..., {self.data_dim}), got {tuple(x.shape)}")
        temb = self.time(t.to(x.dtype))  # (..., 2 time_dim)
        h = self.inp(x)  # (..., hidden)
        for blk in self.blocks:
            act = blk["act"]
            h = h + blk["lin2"](act(blk["lin1"](act(h)) + blk["temb"](temb)))
        return self.out(self.out_act(h))


class _ResBlock(nn.Module):
    """GroupNorm -> act -> conv3x3 (+ time) -> GroupNorm -> act -> conv3x3, with a skip (Ho et al. App. B)."""

    def __init__(self, c_in: int, c_out: int, temb_dim: int, groups: int, activation: ActivationFactory, **factory) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(math.gcd(groups, c_in), c_in, **factory)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, **factory)
        self.temb = nn.Linear(temb_dim, c_out, **factory)
        self.norm2 = nn.GroupNorm(math.gcd(groups, c_out), c_out, **factory)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, **factory)
        self.act = _make_activation(activation)
        self.skip = nn.Conv2d(c_in, c_out, 1, **factory) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.temb(temb)[:, :, None, None]
        h = self.conv2(self.act(self.norm2(h)))
        return self.skip(x) + h


class UNet(nn.Module):
    """A small U-Net ``(x_t (..., H, W), t (...)) -> (..., H, W)`` for one-channel images.

    ``conv_in -> [ResBlock x2 at each level, 2x downsampling between levels] -> middle
    ResBlocks -> [ResBlock x2 with skips, 2x upsampling] -> GroupNorm, act, conv_out``;
    the output convolution starts at zero. Leading dimensions are flattened for the
    convolutions and restored. ``H`` and ``W`` must be divisible by ``2**(len(channels)-1)``.

    Parameters
    ----------
    image_shape
        ``(H, W)``, e.g. ``(8, 8)`` for the digits.
    channels
        Channels at each resolution, e.g. ``(32, 64)``: 8x8 then 4x4.
    time_dim
        Size of the sinusoidal time embedding (even).
    groups
        GroupNorm groups (reduced to a divisor of each channel count).
    activation, device, dtype
        As for :class:`vi_models.nets.MLP`.

    Examples
    --------
    >>> net = UNet((8, 8), channels=(8, 16))
    >>> net(torch.randn(3, 8, 8), torch.ones(3)).shape
    torch.Size([3, 8, 8])
    """

    def __init__(
        self,
        image_shape: tuple[int, int],
        channels: Sequence[int] = (32, 64),
        time_dim: int = 32,
        groups: int = 8,
        activation: ActivationFactory = nn.SiLU,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        channels = _check_dims(channels, "channels", allow_empty=False)
        time_dim = check_positive_int(time_dim, "time_dim", minimum=2)
        if time_dim % 2:
            raise ConfigError(f"expected an even time_dim, got {time_dim}")
        factor = 2 ** (len(channels) - 1)
        if self.image_shape[0] % factor or self.image_shape[1] % factor:
            raise ConfigError(
                f"expected H and W divisible by 2**(len(channels) - 1) = {factor}, got image_shape="
                f"{self.image_shape}; use fewer levels in channels"
            )
        factory = {"device": device, "dtype": dtype}
        temb_dim = 2 * time_dim
        self.time = _TimeEmbedding(time_dim, activation, **factory)
        self.conv_in = nn.Conv2d(1, channels[0], 3, padding=1, **factory)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        prev = channels[0]
        skips = []
        for i, c in enumerate(channels):
            self.down.append(nn.ModuleList([_ResBlock(prev, c, temb_dim, groups, activation, **factory),
                                            _ResBlock(c, c, temb_dim, groups, activation, **factory)]))
            skips += [c, c]
            prev = c
            last = i == len(channels) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(c, c, 3, stride=2, padding=1, **factory))
        self.mid = nn.ModuleList([_ResBlock(prev, prev, temb_dim, groups, activation, **factory),
                                  _ResBlock(prev, prev, temb_dim, groups, activation, **factory)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, c in reversed(list(enumerate(channels))):
            self.up.append(nn.ModuleList([_ResBlock(prev + skips.pop(), c, temb_dim, groups, activation, **factory),
                                          _ResBlock(c + skips.pop(), c, temb_dim, groups, activation, **factory)]))
            prev = c
            self.upsample.append(
                nn.Identity() if i == 0 else nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                                           nn.Conv2d(c, c, 3, padding=1, **factory))
            )
        self.norm_out = nn.GroupNorm(math.gcd(groups, prev), prev, **factory)
        self.act_out = _make_activation(activation)
        self.conv_out = nn.Conv2d(prev, 1, 3, padding=1, **factory)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Map images ``x`` of shape ``(..., H, W)`` and times ``t`` of shape ``(...)`` to ``(..., H, W)``."""
        if x.dim() < 2 or tuple(x.shape[-2:]) != self.image_shape:
            raise DataError(
                f"expected images of shape (..., {self.image_shape[0]}, {self.image_shape[1]}), got {tuple(x.shape)}"
            )
        lead = x.shape[:-2]
        h = self.conv_in(x.reshape(-1, 1, *self.image_shape))  # (N, c0, H, W)
        temb = self.time(t.to(x.dtype).expand(lead).reshape(-1))  # (N, temb_dim)
        hs = []
        for blocks, down in zip(self.down, self.downsample):
            for blk in blocks:
                h = blk(h, temb)
                hs.append(h)
            h = down(h)
        for blk in self.mid:
            h = blk(h, temb)
        for blocks, up in zip(self.up, self.upsample):
            for blk in blocks:
                h = blk(torch.cat([h, hs.pop()], dim=1), temb)
            h = up(h)
        out = self.conv_out(self.act_out(self.norm_out(h)))  # (N, 1, H, W)
        return out.reshape(*lead, *self.image_shape)


class Reshape(nn.Module):
    """Runs ``net`` on images ``(..., H, W)`` for flat data ``(..., H * W)``."""

    def __init__(self, net: nn.Module, data_shape: torch.Size, net_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.net, self.data_shape, self.net_shape = net, tuple(data_shape), tuple(net_shape)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        lead = x.shape[: x.dim() - len(self.data_shape)]
        out = self.net(x.reshape(*lead, *self.net_shape), t)
        return out.reshape(*lead, *self.data_shape)
