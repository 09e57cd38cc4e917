"""Neural networks shared by the models: an MLP and small convolutional encoder/decoder.

Every network acts on its trailing dimensions and broadcasts over any number of leading
batch dimensions (the data batch, Monte Carlo particles of a vectorised ELBO, ...):

- :class:`MLP`: ``(..., in_dim) -> (..., out_dim)``;
- :class:`ConvEncoder`: ``(..., C, H, W) -> (..., out_dim)``;
- :class:`ConvDecoder`: ``(..., in_dim) -> (..., C, H, W)``.

Two shape helpers shared by the models and their guides live here too:
:func:`resolve_data_shape` (the event shape of one observation, and the image shape the
convolutional networks see) and :func:`check_batch` (the per-step check of a data batch).

The convolutional networks flatten the leading dimensions into one batch dimension for the
``nn.Conv2d`` layers and restore them afterwards, so ``(particles, B, C, H, W)`` works.
These are plain ``nn.Module`` objects; inside a :class:`~pyro.nn.PyroModule` their parameters
are seen by Pyro's tracing like any other module attribute.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from pyro.infer.util import is_validation_enabled
from torch import Tensor, nn

from ._validation import check_positive_int
from .errors import ConfigError, DataError

__all__ = [
    "ActivationFactory",
    "MLP",
    "ConvEncoder",
    "ConvDecoder",
    "check_image_shape",
    "resolve_data_shape",
    "check_batch",
]

#: A zero-argument callable returning a fresh activation module, e.g. ``nn.SiLU`` or
#: ``lambda: nn.LeakyReLU(0.2)``.
ActivationFactory = Callable[[], nn.Module]


def _check_dims(dims: Any, name: str, *, allow_empty: bool = True) -> tuple[int, ...]:
    """Return ``dims`` as a tuple of ints >= 1, or raise :class:`ConfigError`."""
    if isinstance(dims, (int, bool)) or not isinstance(dims, Sequence):
        raise ConfigError(
            f"expected {name} as a sequence of positive ints such as (256, 256), got {dims!r}; "
            "wrap a single size in a tuple: (256,)"
        )
    out = tuple(check_positive_int(d, f"each entry of {name}") for d in dims)
    if not out and not allow_empty:
        raise ConfigError(f"expected at least one entry in {name}, got {dims!r}")
    return out


def _make_activation(activation: ActivationFactory) -> nn.Module:
    """Instantiate ``activation`` and check it is a module (a class such as ``nn.SiLU``)."""
    module = activation() if callable(activation) else None
    if not isinstance(module, nn.Module):
        raise ConfigError(
            f"expected activation as a zero-argument callable returning an nn.Module "
            f"(e.g. nn.SiLU or lambda: nn.LeakyReLU(0.2)), got {activation!r}"
        )
    return module


def check_image_shape(image_shape: Any) -> tuple[int, int]:
    """Return ``image_shape`` as ``(H, W)`` of positive ints, or raise :class:`ConfigError`."""
    if isinstance(image_shape, (int, bool)) or not isinstance(image_shape, Sequence) or len(image_shape) != 2:
        raise ConfigError(
            f"expected image_shape as (H, W), got {image_shape!r}; for the 8x8 digits pass (8, 8)"
        )
    h, w = (check_positive_int(s, "each entry of image_shape") for s in image_shape)
    return h, w


def resolve_data_shape(
    x_dim: int | Sequence[int], image_shape: Sequence[int] | None, *, conv: bool, what: str
) -> tuple[torch.Size, tuple[int, int] | None]:
    """Validate the data and image shapes shared by a model and its encoder.

    Parameters
    ----------
    x_dim
        An int ``D`` (flat data ``(B, D)``) or a shape such as ``(8, 8)``.
    image_shape
        ``(H, W)`` to view flat data as one-channel images, or ``None``.
    conv
        Whether a convolutional network needs an image shape.
    what
        The argument that asked for it, for the error message (``"decoder='conv'"``).

    Returns
    -------
    data_shape, image_shape
        The event shape of one observation, and ``(H, W)`` (or ``None`` without one).

    Raises
    ------
    ConfigError
        Malformed sizes, an image shape whose size differs from the data's, or ``conv``
        without an image shape.
    """
    if isinstance(x_dim, Sequence) and not isinstance(x_dim, str):
        if len(x_dim) == 0:
            raise ConfigError("expected x_dim as an int or a non-empty shape such as (8, 8), got ()")
        data_shape = torch.Size(check_positive_int(s, "each entry of x_dim") for s in x_dim)
    else:
        data_shape = torch.Size([check_positive_int(x_dim, "x_dim")])
    if image_shape is not None:
        image = check_image_shape(image_shape)
        if math.prod(image) != data_shape.numel():
            raise ConfigError(
                f"expected image_shape with H * W = {data_shape.numel()} values (x_dim={x_dim!r}), "
                f"got {image!r}; pass the shape the flat data was reshaped from"
            )
        return data_shape, image
    if len(data_shape) == 2:
        return data_shape, (data_shape[0], data_shape[1])
    if conv:
        raise ConfigError(
            f"{what} needs one-channel images: expected x_dim=(H, W) or image_shape=(H, W), got "
            f"x_dim={x_dim!r} and image_shape=None; for the flat 8x8 digits pass image_shape=(8, 8), "
            "or use the 'mlp' network"
        )
    return data_shape, None


def check_batch(x: Any, data_shape: torch.Size, *, like: Tensor, name: str = "x") -> Tensor:
    """Check a batch ``x`` of shape ``(B, *data_shape)`` against a module's dtype and device.

    Cheap enough for every step: shape, dtype and device always; finiteness only when Pyro's
    validation is on (``pyro.enable_validation(True)``).

    Parameters
    ----------
    x
        The batch, shape ``(B, *data_shape)``.
    data_shape
        Event shape of one observation.
    like
        A tensor of the module (a buffer) whose dtype and device ``x`` must have.
    name
        How the error messages call ``x``.

    Returns
    -------
    Tensor
        ``x`` itself (not copied).

    Raises
    ------
    DataError
        Not a floating tensor, wrong shape, dtype or device, empty, or NaN/inf values.
    """
    expected = f"(B, {', '.join(map(str, data_shape))})"
    if not isinstance(x, Tensor):
        raise DataError(
            f"expected {name} as a torch.Tensor of shape {expected}, got {type(x).__name__}; "
            f"convert it with torch.as_tensor({name}, dtype={like.dtype})"
        )
    if x.shape[1:] != data_shape or x.dim() != len(data_shape) + 1:
        if x.shape == data_shape:
            fix = f"add the batch dimension with {name}.unsqueeze(0)"
        elif x.dim() >= 1 and x[:1].numel() == data_shape.numel():
            fix = f"reshape it with {name}.reshape(len({name}), {', '.join(map(str, data_shape))})"
        else:
            fix = "check that the model was built for this data (x_dim)"
        raise DataError(f"expected {name} of shape {expected}, got {tuple(x.shape)}; {fix}")
    if x.shape[0] == 0:
        raise DataError(f"expected a non-empty batch {name}, got shape {tuple(x.shape)}")
    if x.dtype != like.dtype:
        raise DataError(
            f"expected {name} with the module's dtype {like.dtype}, got {x.dtype}; convert it with "
            f"{name}.to({like.dtype}) or move the module with .to({x.dtype})"
            if x.is_floating_point()
            else f"expected floating-point {name} ({like.dtype}), got {x.dtype}; the data are floats "
            f"even for discrete likelihoods: convert with {name}.to({like.dtype})"
        )
    if x.device != like.device:
        raise DataError(
            f"expected {name} on the module's device {like.device}, got {x.device}; "
            f"move it with {name}.to({str(like.device)!r})"
        )
    if is_validation_enabled() and not bool(torch.isfinite(x).all()):
        raise DataError(f"expected finite values in {name}, got NaN/inf; drop or impute those rows")
    return x


class MLP(nn.Module):
    """Multi-layer perceptron ``Linear -> act -> ... -> Linear`` on the last dimension.

    Parameters
    ----------
    in_dim, out_dim
        Input and output sizes.
    hidden_dims
        Width of each hidden layer; ``()`` gives a single affine map.
    activation
        Factory of the activation module placed after every hidden layer (default ``nn.SiLU``).
    output_activation
        Optional factory of an activation applied to the output (default: none, a linear head).
    dropout
        Dropout probability after every hidden activation (default 0: none).
    device, dtype
        Where and in which floating dtype the parameters are created.

    Raises
    ------
    ConfigError
        Sizes that are not positive ints, a dropout outside [0, 1), an activation that is not
        a module factory.

    Examples
    --------
    >>> net = MLP(3, 2, hidden_dims=(16,))
    >>> net(torch.randn(7, 5, 3)).shape
    torch.Size([7, 5, 2])
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dims: Sequence[int] = (256, 256),
        activation: ActivationFactory = nn.SiLU,
        output_activation: ActivationFactory | None = None,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_dim = check_positive_int(in_dim, "in_dim")
        self.out_dim = check_positive_int(out_dim, "out_dim")
        self.hidden_dims = _check_dims(hidden_dims, "hidden_dims")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"expected dropout in [0, 1), got {dropout!r}")
        factory = {"device": device, "dtype": dtype}
        layers: list[nn.Module] = []
        width = self.in_dim
        for hidden in self.hidden_dims:
            layers += [nn.Linear(width, hidden, **factory), _make_activation(activation)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, self.out_dim, **factory))
        if output_activation is not None:
            layers.append(_make_activation(output_activation))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``x`` of shape ``(..., in_dim)`` to ``(..., out_dim)``."""
        return self.layers(x)


class ConvEncoder(nn.Module):
    """Strided convolutions, then an MLP head: ``(..., C, H, W) -> (..., out_dim)``.

    Each entry of ``channels`` is one ``Conv2d(kernel 3, stride 2, padding 1)`` + activation,
    which halves the spatial size (rounding up, so it never reaches zero); an 8x8 image with
    the default two stages becomes ``(64, 2, 2)`` before the head.

    Parameters
    ----------
    image_shape
        ``(H, W)`` of the input images.
    out_dim
        Size of the output vector.
    in_channels
        Number of input channels ``C`` (1 for grey-level images).
    channels
        Output channels of the convolutional stages.
    hidden_dims
        Hidden widths of the MLP head.
    activation, device, dtype
        As for :class:`MLP`.

    Raises
    ------
    ConfigError
        Non-positive sizes or a malformed ``image_shape``.

    Examples
    --------
    >>> enc = ConvEncoder((8, 8), 4, channels=(8, 8), hidden_dims=(16,))
    >>> enc(torch.rand(3, 5, 1, 8, 8)).shape
    torch.Size([3, 5, 4])
    """

    def __init__(
        self,
        image_shape: tuple[int, int],
        out_dim: int,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64),
        hidden_dims: Sequence[int] = (256,),
        activation: ActivationFactory = nn.SiLU,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        self.in_channels = check_positive_int(in_channels, "in_channels")
        channels = _check_dims(channels, "channels", allow_empty=False)
        factory = {"device": device, "dtype": dtype}
        layers: list[nn.Module] = []
        prev, (h, w) = self.in_channels, self.image_shape
        for c in channels:
            layers += [nn.Conv2d(prev, c, 3, stride=2, padding=1, **factory), _make_activation(activation)]
            prev, h, w = c, math.ceil(h / 2), math.ceil(w / 2)
        self.convs = nn.Sequential(*layers)
        self.head = MLP(prev * h * w, out_dim, hidden_dims, activation, **factory)

    def forward(self, x: Tensor) -> Tensor:
        """Map images ``x`` of shape ``(..., C, H, W)`` to ``(..., out_dim)``."""
        expected = (self.in_channels, *self.image_shape)
        if x.dim() < 3 or tuple(x.shape[-3:]) != expected:
            raise DataError(
                f"expected images of shape (..., {', '.join(map(str, expected))}), got "
                f"{tuple(x.shape)}; add the channel dimension with x.unsqueeze(-3)"
            )
        lead = x.shape[:-3]
        h = self.convs(x.reshape(-1, *expected))  # (prod(lead), c, h', w')
        return self.head(h.flatten(1)).reshape(*lead, -1)  # (..., out_dim)


class ConvDecoder(nn.Module):
    """An MLP to a small feature map, then transposed convolutions: ``(..., in_dim) -> (..., C, H, W)``.

    The MLP maps the input to ``(channels[0], h0, w0)`` with ``h0 = ceil(H / 2**S)``,
    ``S = len(channels)``; each entry of ``channels`` is one
    ``ConvTranspose2d(kernel 4, stride 2, padding 1)`` + activation (doubling the size), and a
    final 3x3 convolution gives ``out_channels`` maps, cropped to ``(H, W)``. For 8x8 images
    and the default two stages: ``z -> (64, 2, 2) -> (64, 4, 4) -> (32, 8, 8) -> (C, 8, 8)``.
    The output is unconstrained (logits or means); the caller picks the likelihood.

    Parameters
    ----------
    in_dim
        Size of the input vector (the latent dimension).
    out_channels
        Number of output maps ``C`` (1 for a Gaussian or Bernoulli grey-level image, the number
        of grey levels for a per-pixel categorical).
    image_shape
        ``(H, W)`` of the output.
    channels
        Output channels of the upsampling stages.
    hidden_dims
        Hidden widths of the input MLP.
    activation, device, dtype
        As for :class:`MLP`.

    Raises
    ------
    ConfigError
        Non-positive sizes or a malformed ``image_shape``.

    Examples
    --------
    >>> dec = ConvDecoder(2, 1, (8, 8), channels=(8, 8), hidden_dims=(16,))
    >>> dec(torch.randn(3, 5, 2)).shape
    torch.Size([3, 5, 1, 8, 8])
    """

    def __init__(
        self,
        in_dim: int,
        out_channels: int,
        image_shape: tuple[int, int],
        channels: Sequence[int] = (64, 32),
        hidden_dims: Sequence[int] = (256,),
        activation: ActivationFactory = nn.SiLU,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        self.out_channels = check_positive_int(out_channels, "out_channels")
        channels = _check_dims(channels, "channels", allow_empty=False)
        factory = {"device": device, "dtype": dtype}
        scale = 2 ** len(channels)
        self._start = (channels[0], math.ceil(self.image_shape[0] / scale), math.ceil(self.image_shape[1] / scale))
        self.project = MLP(
            in_dim, math.prod(self._start), hidden_dims, activation, output_activation=activation, **factory
        )
        layers: list[nn.Module] = []
        prev = channels[0]
        for c in channels:
            layers += [nn.ConvTranspose2d(prev, c, 4, stride=2, padding=1, **factory), _make_activation(activation)]
            prev = c
        layers.append(nn.Conv2d(prev, self.out_channels, 3, padding=1, **factory))
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """Map ``z`` of shape ``(..., in_dim)`` to maps of shape ``(..., out_channels, H, W)``."""
        lead = z.shape[:-1]
        h = self.project(z).reshape(-1, *self._start)  # (prod(lead), c0, h0, w0)
        height, width = self.image_shape
        out = self.deconvs(h)[..., :height, :width]  # crop when H or W is not a multiple of 2**S
        return out.reshape(*lead, self.out_channels, height, width)
