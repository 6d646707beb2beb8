"""Per-batch preprocessing on the training device (paper §3).

Every data source hands over uint8 (B, 3, S, S) batches (S = 256 for ImageNet, already resized
and centre-cropped). Here they become the network's float input:

    1. subtract the per-pixel mean image (over all training images), so values are roughly in
       [-128, 128] (paper §3; the filter renormalisation to RMS 0.1 assumes this range),
    2. take a crop x crop sub-window (224): random offset + horizontal flip with p = 0.5 when
       training, the centre when evaluating, or the ten 4-corner + centre crops and their
       mirror images (:func:`ten_crop`, ``BatchPreprocess(..., crops=10)``) for test-time
       averaging.

Random draws come from a CPU ``torch.Generator`` and are moved to the batch's device afterwards,
so a seed gives the same crops on CPU and GPU.
"""
from __future__ import annotations

from typing import Optional

import torch


def _check(images: torch.Tensor, mean: torch.Tensor, crop: int) -> None:
    assert images.dim() == 4 and images.shape[1] == 3, (
        f"expected images (B, 3, H, W), got {tuple(images.shape)}")
    assert images.dtype == torch.uint8, f"expected uint8 images, got {images.dtype}"
    h, w = images.shape[-2:]
    assert crop <= h and crop <= w, f"crop {crop} larger than images {tuple(images.shape)}"
    assert mean.shape in ((3, h, w), (3, 1, 1)), (
        f"mean {tuple(mean.shape)} must be (3, {h}, {w}) or (3, 1, 1) for images "
        f"{tuple(images.shape)}")


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The centre ``size`` x ``size`` window of (..., H, W) images: what a model sees of an
    image when evaluated (paper §3: the centre 224 of 256), the region occlusion slides over
    and Fig 2's image patches are cut from. A view, not a copy."""
    h, w = images.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top:top + size, left:left + size]


class BatchPreprocess:
    """uint8 batch -> mean-subtracted float crops, on the batch's device (paper §3).

    The paper subtracts the mean from the full 256x256 image and then crops and flips; reading
    the image and the mean through the same (possibly mirrored) crop window and subtracting is
    the same arithmetic on fewer pixels. The train path is one gather per tensor, no loop over
    the batch, so it is a handful of kernels on a GPU.

    Args:
        mean: float (3, S, S) per-pixel mean image (paper) or (3, 1, 1) per-channel mean, in
            0..255 units. Copied once per device it is used on.
        crop: side of the output square (paper: 224).
        train: random crop offset per image and random horizontal flip; otherwise the centre
            crop without flip.
        flip: with ``train``, flip each image horizontally with probability 0.5 (default True).
        scale: multiplies the mean-subtracted values (default 1: the paper's roughly
            [-128, 128] inputs; the embedded data's small CPU model uses less, see its config).
            A float, or a (3, 1, 1) tensor for one factor per channel (weights trained elsewhere
            expect inputs divided by a per-channel std).
        crops: evaluation only: 1 (default) for the centre crop, 10 for :func:`ten_crop`'s four
            corners + centre and their mirror images, returned as (B, 10, 3, crop, crop).

    Call args:
        images_uint8: (B, 3, S, S) uint8, any device.
        generator: CPU ``torch.Generator`` for the train-time draws (offsets y, x, then flips);
            ``None`` uses the global CPU generator. Unused when not training.
        draws: the train-time draws ``(oy, ox, flipped)`` to use instead (from :meth:`draw`,
            one entry per image): a DDP rank applies its slice of the global batch's draws.

    Returns:
        (B, 3, crop, crop) float32 on the images' device: (pixel values minus the mean) x scale;
        (B, 10, 3, crop, crop) with ``crops=10``.

    >>> pre = BatchPreprocess(mean, crop=224, train=True)        # doctest: +SKIP
    >>> x = pre(images.cuda(), torch.Generator().manual_seed(0))  # doctest: +SKIP
    """

    def __init__(self, mean: torch.Tensor, crop: int, train: bool, flip: bool = True,
                 scale: float | torch.Tensor = 1.0, crops: int = 1) -> None:
        assert mean.dim() == 3 and mean.shape[0] == 3, (
            f"expected mean (3, S, S) or (3, 1, 1), got {tuple(mean.shape)}")
        if crops not in (1, 10) or (train and crops != 1):
            raise ValueError(f"crops must be 1 or 10 (10: evaluation only), got {crops}"
                             f"{' for training' if train else ''}")
        self.crops = int(crops)
        self.mean = mean.detach().to(torch.float32)
        self.crop = int(crop)
        self.train = bool(train)
        self.flip = bool(flip)
        if isinstance(scale, torch.Tensor):
            assert scale.numel() in (1, 3), f"expected a scale of 1 or 3 values, got {tuple(scale.shape)}"
            scale = scale.detach().to(torch.float32).reshape(-1, 1, 1) if scale.numel() == 3 \
                else float(scale)
        else:
            scale = float(scale)
        self.scale = scale
        self._mean_on: dict[torch.device, torch.Tensor] = {}
        self._scale_on: dict[torch.device, torch.Tensor] = {}

    def _mean_for(self, device: torch.device) -> torch.Tensor:
        if device not in self._mean_on:
            self._mean_on[device] = self.mean.to(device)
        return self._mean_on[device]

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.scale, torch.Tensor):  # (3, 1, 1): broadcasts over (..., 3, c, c)
            if x.device not in self._scale_on:
                self._scale_on[x.device] = self.scale.to(x.device)
            return x * self._scale_on[x.device]
        return x * self.scale if self.scale != 1.0 else x

    def draw(self, batch: int, height: int, width: int,
             generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The train-time draws for one batch, on the CPU.

        Returns:
            ``(oy, ox, flipped)``: (B,) int64 top and left offsets in ``0..H-crop`` and
            ``0..W-crop``, and a (B,) bool mask of images to mirror (all False without ``flip``).
        """
        oy = torch.randint(0, height - self.crop + 1, (batch,), generator=generator)
        ox = torch.randint(0, width - self.crop + 1, (batch,), generator=generator)
        if self.flip:
            flipped = torch.rand(batch, generator=generator) < 0.5
        else:
            flipped = torch.zeros(batch, dtype=torch.bool)
        return oy, ox, flipped

    def __call__(self, images_uint8: torch.Tensor, generator: Optional[torch.Generator] = None,
                 draws: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None
                 ) -> torch.Tensor:
        mean = self._mean_for(images_uint8.device)
        _check(images_uint8, mean, self.crop)
        b, _, h, w = images_uint8.shape
        c = self.crop
        if self.crops == 10:
            x = ten_crop(images_uint8, mean, c)  # (B, 10, 3, c, c)
            return self._scaled(x)
        if not self.train:
            x = center_crop(images_uint8, c).to(torch.float32)
            return self._scaled(x - (mean if mean.shape[-1] == 1 else center_crop(mean, c)))

        if draws is None:
            draws = self.draw(b, h, w, generator)
        oy, ox, flipped = (t.to(images_uint8.device) for t in draws)
        if c == h == w:  # nothing to crop (the embedded data): centre, then mirror the flipped
            x = images_uint8.to(torch.float32) - mean
            x = torch.where(flipped[:, None, None, None], x.flip(-1), x)
            return self._scaled(x)
        crop_flip = _crop_flip_cpu if images_uint8.device.type == "cpu" else _crop_flip_gather
        return self._scaled(crop_flip(images_uint8, mean, c, oy, ox, flipped))


def _crop_flip_gather(images_uint8: torch.Tensor, mean: torch.Tensor, c: int, oy: torch.Tensor,
                      ox: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
    """The train path on a GPU: random crop, mirror and mean subtraction as one gather."""
    b, _, h, w = images_uint8.shape
    # One gather with index arithmetic: output pixel (i, j) of image n reads input pixel
    # (oy[n] + i, ox[n] + j), or (oy[n] + i, ox[n] + c-1 - j) when n is flipped, so the
    # mirror image costs nothing extra. The mean is read through the same index: the
    # paper's flip(crop(x - mean)) equals flip(crop(x)) - flip(crop(mean)).
    ar = torch.arange(c, device=images_uint8.device)
    rows = oy[:, None] + ar                                             # (B, c)
    cols = ox[:, None] + torch.where(flipped[:, None], c - 1 - ar, ar)  # (B, c)
    index = rows[:, :, None] * w + cols[:, None, :]                     # (B, c, c)
    index = index.view(b, 1, c * c).expand(b, 3, c * c)                 # flat, per channel
    x = images_uint8.reshape(b, 3, h * w).gather(2, index).to(torch.float32)
    if mean.shape[-1] != 1:
        mean = mean.reshape(1, 3, h * w).expand(b, 3, h * w).gather(2, index)
        mean = mean.view(b, 3, c, c)
    return x.view(b, 3, c, c) - mean


def _crop_flip_cpu(images_uint8: torch.Tensor, mean: torch.Tensor, c: int, oy: torch.Tensor,
                   ox: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
    """The train path on the CPU: per image, one numpy subtraction of the (mirrored) crop window
    of the image and of the mean, straight into the output. Same numbers as the gather (uint8
    and float32 operands, float32 result), about 3x faster on the CPU, where the gather's index
    tensors cost more than the pixels (the packed loader benchmark, scripts/bench_loader.py)."""
    import numpy as np

    b = images_uint8.shape[0]
    out = np.empty((b, 3, c, c), dtype=np.float32)
    x = images_uint8.numpy()
    m = mean.numpy()
    per_pixel = m.shape[-1] != 1
    for n, (y0, x0, f) in enumerate(zip(oy.tolist(), ox.tolist(), flipped.tolist())):
        cols = slice(x0 + c - 1, x0 - 1 if x0 > 0 else None, -1) if f else slice(x0, x0 + c)
        img = x[n, :, y0:y0 + c, cols]
        mn = m[:, y0:y0 + c, cols] if per_pixel else m
        np.subtract(img, mn, out=out[n], dtype=np.float32)
    return torch.from_numpy(out)


def ten_crop(images_uint8: torch.Tensor, mean: torch.Tensor, crop: int) -> torch.Tensor:
    """The ten test-time views of each image: 4 corners + centre, then the same five mirrored.

    The paper (§3) trains on these ten sub-crops; how it tests is UNSTATED, and averaging the
    softmax over these ten views is the AlexNet convention.

    Args:
        images_uint8: (B, 3, S, S) uint8, any device.
        mean: float (3, S, S) per-pixel or (3, 1, 1) per-channel mean, 0..255 units.
        crop: side of each view (paper: 224).

    Returns:
        (B, 10, 3, crop, crop) float32 on the images' device, mean-subtracted, views in the order
        top-left, top-right, bottom-left, bottom-right, centre, then each of those five
        horizontally flipped (view 5 + k is view k mirrored).
    """
    mean = mean.detach().to(device=images_uint8.device, dtype=torch.float32)
    _check(images_uint8, mean, crop)
    h, w = images_uint8.shape[-2:]
    x = images_uint8.to(torch.float32) - mean  # (B, 3, S, S)
    cy, cx = (h - crop) // 2, (w - crop) // 2
    corners = [(0, 0), (0, w - crop), (h - crop, 0), (h - crop, w - crop), (cy, cx)]
    five = torch.stack([x[:, :, t:t + crop, l:l + crop] for t, l in corners], dim=1)
    return torch.cat([five, five.flip(-1)], dim=1)
