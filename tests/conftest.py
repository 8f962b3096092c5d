"""Shared fixtures."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture
def randomize():
    """Give a model non-trivial weights AND BN statistics, so that parity checks compare real numbers
    (zero-initialised last-BN gammas would otherwise make every residual branch vanish)."""

    def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, t in model.state_dict().items():
                if not t.is_floating_point():
                    continue
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                elif name.endswith("running_mean"):
                    t.copy_(torch.randn(t.shape, generator=g) * 0.1)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * 0.05)
        return model

    return _randomize
