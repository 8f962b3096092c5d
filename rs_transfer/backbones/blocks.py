"""Bottleneck blocks per stage for every depth the family knows: plain data, importable without torch, so that
``rs-transfer list models`` and the model table need no heavy import."""
from __future__ import annotations

# Bottleneck blocks per stage. 26/300: the scaling study (paper sec. 6, TF Model Garden RESNET_SPECS); the rest:
# Table 2 and torchvision/timm.
BLOCKS_PER_DEPTH: dict[int, tuple[int, int, int, int]] = {
    26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3), 200: (3, 24, 36, 3),
    270: (4, 29, 53, 4), 300: (4, 36, 54, 4), 350: (4, 36, 72, 4), 420: (4, 44, 87, 4),
}
