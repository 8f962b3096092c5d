"""rs-transfer's mmengine registry scope, ``rs_transfer``: what configs name by registry name, never by module path.

mmengine resolves a scoped name such as ``type="rs_transfer.Pretrained"`` by importing ``<scope>.registry`` (this
module) and asking the child registry of that scope, which imports its ``locations`` on first use. So:

- a backbone with ``weights=...`` hands its loading to the ``rs_transfer.Pretrained`` weight initialiser
  (:mod:`rs_transfer.weights.initializer`) without importing the weights package (the model does not import its
  loader; the loader imports the models);
- the hooks the runner installs (and the EMA model) are named ``rs_transfer.<Name>`` in the resolved config, so the
  config hash does not change when their module moves.

This module is a LAZY REGISTRY TABLE (tests/test_architecture.py names it): the ``locations`` strings are imported
by mmengine when a name is first looked up, not here.
"""
from __future__ import annotations

from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import WEIGHT_INITIALIZERS as MMENGINE_WEIGHT_INITIALIZERS
from mmengine.registry import Registry

SCOPE = "rs_transfer"

WEIGHT_INITIALIZERS = Registry("weight initializer", parent=MMENGINE_WEIGHT_INITIALIZERS, scope=SCOPE,
                               locations=["rs_transfer.weights.initializer"])
HOOKS = Registry("hook", parent=MMENGINE_HOOKS, scope=SCOPE,
                 locations=["rs_transfer.runner.hooks", "rs_transfer.runner.checkpoints",
                            "rs_transfer.runner.normcheck"])
# Models the runner builds by name: the EMA copy (``EMAHook(ema_type="rs_transfer.WarmupEMA")``).
MODELS = Registry("model", parent=MMENGINE_MODELS, scope=SCOPE, locations=["rs_transfer.runner.ema"])


def hook(name: str) -> str:
    """The scoped registry name of one of our hooks, as configs write it: ``rs_transfer.<name>``."""
    return f"{SCOPE}.{name}"
