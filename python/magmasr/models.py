"""Model builders: SRCNN and its variants, and 3DSRnet (the published network and our poster's).

Every builder returns a :class:`magmasr.nn.Sequential` whose layer names, and so whose parameter names
(``conv1.weight``, ``conv1.bias``, ...), are stable across versions: weight files and importers rely on them.

================================  ==================================================================
builder                           layers (names)
================================  ==================================================================
``srcnn(f1, f2, f3, n1, n2)``     conv1 (1->n1, f1) relu1, conv2 (n1->n2, f2) relu2, conv3 (n2->1, f3)
``srcnn_nonlinear(...)``          as srcnn, plus conv2b (n2->n2, fb) relu2b before conv3
``tdsrnet_poster(head=...)``      conv1..conv5 (Conv3D 3x3x3, 32 filters, ReLU after each), fold,
                                  head (Conv2D 3x3, scale^2 outputs + pixel shuffle, or 1 output)
``tdsrnet(scale)``                conv1..conv6 (Conv3D 3x3x3, 64 filters, ReLU after conv1..conv5),
                                  fold, shuffle (x scale); the output is a residual
================================  ==================================================================

Padding: ``padding="valid"`` trains SRCNN on patches (33x33 in, 33 - f1 - f2 - f3 + 3 out);
``padding="same"`` with ``padding_mode="replicate"`` processes whole images as the original authors do.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import nn

SRCNN_PRESETS = {"9-1-5": (9, 1, 5), "9-3-5": (9, 3, 5), "9-5-5": (9, 5, 5)}


def _conv2d(cin, cout, k, padding, padding_mode, seed):
    return nn.Conv2d(cin, cout, k, padding=padding, padding_mode=padding_mode, seed=seed)


def _check_padding(padding: str, padding_mode: str) -> None:
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    if padding_mode not in ("zeros", "replicate"):
        raise ValueError(f"padding_mode must be 'zeros' or 'replicate', got {padding_mode!r}")


def srcnn(f1: int = 9, f2: int = 5, f3: int = 5, n1: int = 64, n2: int = 32, *, padding: str = "same",
          padding_mode: str = "replicate", seed: int = 0) -> nn.Sequential:
    """SRCNN (Dong et al.): patch extraction (f1), non-linear mapping (f2), reconstruction (f3) on the Y
    channel of the bicubic-upscaled image. Presets: :func:`srcnn_preset` ('9-1-5', '9-3-5', '9-5-5')."""
    _check_padding(padding, padding_mode)
    for name, f in (("f1", f1), ("f2", f2), ("f3", f3)):
        if f < 1 or (padding == "same" and f % 2 == 0):
            raise ValueError(f"{name} must be a positive odd filter size, got {f}")
    return nn.Sequential(
        ("conv1", _conv2d(1, n1, f1, padding, padding_mode, seed)),
        ("relu1", nn.ReLU()),
        ("conv2", _conv2d(n1, n2, f2, padding, padding_mode, seed + 1)),
        ("relu2", nn.ReLU()),
        ("conv3", _conv2d(n2, 1, f3, padding, padding_mode, seed + 2)),
    )


def srcnn_preset(name: str, **kwargs) -> nn.Sequential:
    """SRCNN '9-1-5', '9-3-5' or '9-5-5' (n1 = 64, n2 = 32)."""
    if name not in SRCNN_PRESETS:
        raise ValueError(f"unknown SRCNN preset {name!r}; expected one of {sorted(SRCNN_PRESETS)}")
    f1, f2, f3 = SRCNN_PRESETS[name]
    return srcnn(f1, f2, f3, **kwargs)


def srcnn_nonlinear(f1: int = 9, f2: int = 5, f3: int = 5, n1: int = 64, n2: int = 32, fb: int = 1, *,
                    padding: str = "same", padding_mode: str = "replicate", seed: int = 0) -> nn.Sequential:
    """The poster's variant: SRCNN with an added non-linear layer (conv2b: n2 -> n2, fb x fb, then ReLU)
    before the reconstruction. Its other layers carry SRCNN's names, so SRCNN weights load into them."""
    base = srcnn(f1, f2, f3, n1, n2, padding=padding, padding_mode=padding_mode, seed=seed)
    return nn.Sequential(
        ("conv1", base["conv1"]), ("relu1", base["relu1"]),
        ("conv2", base["conv2"]), ("relu2", base["relu2"]),
        ("conv2b", _conv2d(n2, n2, fb, padding, padding_mode, seed + 3)), ("relu2b", nn.ReLU()),
        ("conv3", base["conv3"]),
    )


def tdsrnet_poster(head: str = "shuffle", *, scale: int = 2, filters: int = 32, seed: int = 0) -> nn.Sequential:
    """3DSRnet as in our founding poster: five Conv3D 3x3x3 with 32 filters and ReLU (conv1..conv3 'same',
    conv4 and conv5 'valid' in all three axes, so 5x64x64 becomes 1x60x60), depth folded into channels,
    then a 3x3 Conv2D head.

    head='shuffle': scale^2 outputs and a pixel shuffle (sub-pixel head); at the poster's x2, 4 outputs and
    112,772 parameters — the poster's total (x4: 16 outputs, 116,240). Input [N, 1, 5, h, w], output
    [N, 1, scale*(h-4), scale*(w-4)]. :class:`magmasr.video.VideoSR` pads the frames by 2 pixels
    (replicating the border) so that whole frames keep their size, and adds the output as a residual to the
    bicubic-upscaled centre frame.
    head='single':  1 output on bicubic-upscaled input (zero padding in the head so its size is kept);
    `scale` does not apply.
    """
    if head not in ("shuffle", "single"):
        raise ValueError(f"head must be 'shuffle' or 'single', got {head!r}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    layers = []
    cin = 1
    for i in range(1, 6):
        pad = 1 if i <= 3 else 0
        layers += [(f"conv{i}", nn.Conv3d(cin, filters, 3, padding=pad, seed=seed + i)), (f"relu{i}", nn.ReLU())]
        cin = filters
    layers.append(("fold", nn.FoldDepth()))
    if head == "shuffle":
        layers += [("head", nn.Conv2d(filters, scale * scale, 3, padding=1, seed=seed + 6)),
                   ("shuffle", nn.PixelShuffle(scale))]
    else:
        layers.append(("head", nn.Conv2d(filters, 1, 3, padding=1, seed=seed + 6)))
    return nn.Sequential(*layers)


def tdsrnet(scale: int = 4, *, filters: int = 64, frames: int = 5, seed: int = 0) -> nn.Sequential:
    """3DSRnet as published (Kim et al.): six Conv3D 3x3x3 with `filters` filters, ReLU after the first
    five; conv1..conv4 padded in all axes, conv5 and conv6 only in space (5 frames -> 1); conv6 has
    scale^2 outputs that the pixel shuffle turns into the residual. The caller adds the bicubic-upscaled
    centre frame (see :class:`magmasr.sr.VideoSR`). Input [N, 1, 5, h, w], output [N, 1, scale*h, scale*w]."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    if frames != 5:
        raise ValueError(f"the published 3DSRnet takes 5 frames, got {frames}")
    layers = []
    cin = 1
    for i in range(1, 7):
        pad = 1 if i <= 4 else (0, 1, 1)
        cout = filters if i < 6 else scale * scale
        layers.append((f"conv{i}", nn.Conv3d(cin, cout, 3, padding=pad, seed=seed + i)))
        if i < 6:
            layers.append((f"relu{i}", nn.ReLU()))
        cin = cout
    layers += [("fold", nn.FoldDepth()), ("shuffle", nn.PixelShuffle(scale))]
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class Architecture:
    """A named architecture and its builder arguments, recorded in weight files' metadata."""

    name: str
    kwargs: dict

    def build(self) -> nn.Sequential:
        return ARCHITECTURES[self.name](**self.kwargs)


ARCHITECTURES = {
    "srcnn": srcnn,
    "srcnn_nonlinear": srcnn_nonlinear,
    "tdsrnet": tdsrnet,
    "tdsrnet_poster": tdsrnet_poster,
}
