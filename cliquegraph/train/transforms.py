"""The paper's ImageNet transforms (§6) on Pillow images: random-resized crop + horizontal flip for
training, resize + centre crop for single-crop validation, then a normalised CHW float tensor.

Randomness comes from a torch.Generator; with None it comes from torch's global generator, which
a DataLoader seeds differently in each worker, so workers do not repeat each other's crops and
`torch.manual_seed` reproduces a run.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_FRACTION = 0.875  # validation: resize to 256, crop 224 (224 / 256)


def _uniform(low: float, high: float, generator) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _randint(n: int, generator) -> int:
    """Uniform in 0..n-1."""
    return int(torch.randint(n, (), generator=generator).item())


def random_resized_crop(img: Image.Image, size: tuple[int, int], *, scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3), generator=None) -> Image.Image:
    """A crop of random area (a `scale` fraction of the image) and aspect ratio, resized to
    size = (H, W). The sampling is torchvision's (Inception-style), so recipes carry over."""
    out_h, out_w = size
    width, height = img.size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * _uniform(*scale, generator)
        aspect = math.exp(_uniform(*log_ratio, generator))  # log-uniform: 3/4 as likely as 4/3
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = _randint(height - h + 1, generator)
            left = _randint(width - w + 1, generator)
            break
    else:
        # Ten misses happen only for extreme aspect ratios: take the largest centred crop whose
        # ratio is inside the range.
        in_ratio = width / height
        if in_ratio < ratio[0]:
            w, h = width, max(1, round(width / ratio[0]))
        elif in_ratio > ratio[1]:
            w, h = max(1, round(height * ratio[1])), height
        else:
            w, h = width, height
        top, left = (height - h) // 2, (width - w) // 2
    # Pillow crops and resizes in one resampling step (antialiased when shrinking).
    return img.resize((out_w, out_h), Image.Resampling.BILINEAR,
                      box=(left, top, left + w, top + h))


def random_hflip(img: Image.Image, *, generator=None) -> Image.Image:
    if torch.rand((), generator=generator).item() < 0.5:
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


def resize_center_crop(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Single-crop validation: shorter side to max(H, W) / 0.875, then the centre H x W.

    For square inputs this is the usual round(H / 0.875); taking the larger side keeps the crop
    inside the image for non-square spec inputs too.
    """
    out_h, out_w = size
    short = round(max(out_h, out_w) / CROP_FRACTION)
    width, height = img.size
    if width <= height:
        new_w, new_h = short, max(short, round(height * short / width))
    else:
        new_w, new_h = max(short, round(width * short / height)), short
    top = round((new_h - out_h) / 2)
    left = round((new_w - out_w) / 2)
    # Only the crop is resampled, from its box in the original's coordinates (the pixels of
    # resizing the whole image, then cropping, up to rounding): a 1 x 300,000 strip would
    # resize to gigabytes.
    sx, sy = width / new_w, height / new_h
    box = (left * sx, top * sy, (left + out_w) * sx, (top + out_h) * sy)
    return img.resize((out_w, out_h), Image.Resampling.BILINEAR, box=box)


def to_tensor(img: Image.Image, mean, std) -> torch.Tensor:
    """RGB Pillow image -> float32 C x H x W, (pixel / 255 - mean) / std per channel."""
    x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float().div_(255)
    return (x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)


def train_transform(img: Image.Image, size: tuple[int, int], *, mean=IMAGENET_MEAN,
                    std=IMAGENET_STD, generator=None) -> torch.Tensor:
    img = random_resized_crop(img, size, generator=generator)
    img = random_hflip(img, generator=generator)
    return to_tensor(img, mean, std)


def eval_transform(img: Image.Image, size: tuple[int, int], *, mean=IMAGENET_MEAN,
                   std=IMAGENET_STD) -> torch.Tensor:
    return to_tensor(resize_center_crop(img, size), mean, std)
