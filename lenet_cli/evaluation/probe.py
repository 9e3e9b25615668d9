"""Translation probe: how accuracy falls when every digit is moved by 1, 2, 3... pixels in each of
8 directions (a diagonal moves s pixels along both axes), background filling the border. Shared
weights and pooling keep a CNN's answer stable under small shifts; an MLP sees another input."""

from __future__ import annotations

import torch
from torch.nn import functional as F

DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1))
BATCH = 512  # digits a forward pass (each shift multiplies them by 8)


def shift(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Move images (N, C, H, W) right by dx and down by dy pixels; uncovered pixels become 0."""
    h, w = images.shape[-2:]
    if abs(dx) >= w or abs(dy) >= h:
        return torch.zeros_like(images)
    return F.pad(images, (dx, -dx, dy, -dy))  # a negative padding crops that side


@torch.no_grad()
def probe_counts(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, max_shift: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Correct and total answers at each shift 0..max_shift of images (N, C, H, W) in [0, 1]:
    sums, so that they add up across processes."""
    correct = torch.zeros(max_shift + 1, dtype=torch.long, device=images.device)
    total = torch.zeros_like(correct)
    for start in range(0, len(labels), BATCH):
        x, y = images[start : start + BATCH], labels[start : start + BATCH]
        correct[0] += (model(x).argmax(1) == y).sum()
        total[0] += len(y)
        for s in range(1, max_shift + 1):
            moved = torch.cat([shift(x, dx * s, dy * s) for dx, dy in DIRECTIONS])
            correct[s] += (model(moved).argmax(1) == y.repeat(len(DIRECTIONS))).sum()
            total[s] += len(y) * len(DIRECTIONS)
    return correct, total
