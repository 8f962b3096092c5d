"""``--cfg-options`` checked before they are merged, so that a bad one is a one-line error naming the fix.

Why: mmengine merges any key into the config, so ``max_iters=5`` (instead of ``train_cfg.max_iters=5``) used to be
accepted and change nothing, and ``train_cfg.max_iters=abc`` ended in a traceback far from the option. Rules:

- an existing key keeps its kind of value: a count stays an integer (>= 1 for lengths, intervals and batch
  sizes), a number a number, a flag true/false, a list a list, a dict a dict (or ``None`` to switch it off);
- a new top-level key must be one something reads: mmengine's ``Runner`` (``load_from``, ``log_level``, ...), or
  a runner switch of :mod:`rs_transfer.runner.config` (``amp``, ``checkpoint_interval``, ``global_batch_size``, ...);
- a new key inside a dict that names its class (``type=...``; ``train_cfg`` / ``val_cfg`` / ``test_cfg`` /
  ``optim_wrapper`` without one: mmengine's default classes) must be an argument of that class;
- a top-level variable of the config file that nothing reads but whose name is a key further down
  (``max_iters=5`` where the runner reads ``train_cfg.max_iters``) is an error naming the key to set;
- a new key that nearly matches an existing one is a typo (``train_cfg.max_iter``). Other new nested keys are
  allowed (their reader cannot be known here).
"""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Iterator
from typing import Any

from rs_transfer.errors import UserError

# Counts that must be positive integers wherever they appear.
POSITIVE_INTS = frozenset({"max_iters", "max_epochs", "val_interval", "interval", "batch_size", "checkpoint_interval",
                           "log_interval", "global_batch_size", "max_per_process_batch", "accumulation",
                           "accumulative_counts"})
# Runner switches that a config may leave out (so there is no value to compare with): their kinds.
SWITCH_KINDS: dict[str, tuple[type, ...]] = {"amp": (str, type(None)), "ema_momentum": (int, float, type(None)),
                                             "checkpoint_interval": (int,), "log_interval": (int,)}
AMP_CHOICES = ("bf16", "fp16", None)
# Read with ``self.cfg.get`` by mmengine 0.10's Runner, besides its constructor's arguments.
_RUNNER_CFG_EXTRA = ("model_wrapper_cfg", "compile", "sync_bn", "find_unused_parameters",
                     "activation_checkpointing", "efficient_conv_bn_eval")


def runner_keys() -> set[str]:
    """Top-level keys mmengine's ``Runner.from_cfg`` reads."""
    from mmengine.runner import Runner

    return (set(inspect.signature(Runner.__init__).parameters) - {"self", "cfg"}) | set(_RUNNER_CFG_EXTRA)


def check_cfg_options(cfg: Any, options: dict[str, Any], switches: Iterable[str]) -> None:
    """Raise :class:`UserError` for the first option that no part of the run would read correctly."""
    switches = list(switches)
    for dotted, value in options.items():
        if dotted in SWITCH_KINDS:
            _check_switch(dotted, value)
        _check_one(cfg, dotted, value, switches)


def _check_switch(key: str, value: Any) -> None:
    kinds = SWITCH_KINDS[key]
    if isinstance(value, bool) or not isinstance(value, kinds) or (key == "amp" and value not in AMP_CHOICES):
        expected = ("bf16, fp16 or None" if key == "amp" else " or ".join(k.__name__ for k in kinds))
        raise UserError(f"--cfg-options {key}={value!r}: expected {expected}")


def _is_dict(node: Any) -> bool:
    return hasattr(node, "keys") and hasattr(node, "__getitem__")


def _check_one(cfg: Any, dotted: str, value: Any, switches: list[str]) -> None:
    parts = dotted.split(".")
    node: Any = cfg
    for i, part in enumerate(parts):
        where = ".".join(parts[:i])
        if isinstance(node, (list, tuple)):
            if part.isdigit() and int(part) < len(node):
                node = node[int(part)]
                continue
            raise UserError(f"--cfg-options {dotted}: {where} is a list of {len(node)} entries; {part!r} is not "
                            "one of its indices")
        if node is None:
            return  # a switched-off section being filled in: mmengine replaces None
        if not _is_dict(node):
            raise UserError(f"--cfg-options {dotted}: {where} is {node!r}, not a dict, so it has no key {part!r}")
        if part in node:
            if i == 0 and len(parts) == 1:
                _check_inert(cfg, part, switches)
            node = node[part]
            continue
        _check_new_key(cfg, node, parts, i, switches)
        if i == len(parts) - 1:
            _check_positive(dotted, part, value)
        return
    _check_value(dotted, parts[-1], node, value)


def _check_new_key(cfg: Any, node: Any, parts: list[str], i: int, switches: list[str]) -> None:
    """``parts[i]`` is not in ``node``: allowed, or a one-line error."""
    part, dotted = parts[i], ".".join(parts)
    known = list(switches) + sorted(runner_keys()) if i == 0 else []
    siblings = [str(k) for k in node.keys()] + known
    close = difflib.get_close_matches(part, siblings, n=1, cutoff=0.85)
    if close and close[0] != part:
        fixed = ".".join(parts[:i] + [close[0]] + parts[i + 1:])
        if i == 0 and close[0] in node and close[0] not in known and not _is_dict(node[close[0]]):
            fixed = " or ".join([p for p in _find_key(cfg, close[0]) if "." in p][:3]) or fixed  # not the variable
        raise UserError(f"--cfg-options {dotted}: no such key; did you mean {fixed}?")
    if i == 0:
        if part in known:
            return
        found = [p for p in _find_key(cfg, part) if "." in p][:3]
        hint = f" Did you mean {' or '.join(found)}?" if found else ""
        raise UserError(f"--cfg-options {dotted}: no part of the run reads a top-level {part!r} (it is not in the "
                        f"config and not a runner switch).{hint}")
    target = _target(node, parts[:i])
    if target is None:
        return
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    names = [n for n in params if n not in ("self", "runner", "dataloader", "params", "model")] + (
        ["by_epoch"] if parts[:i] == ["train_cfg"] else [])
    if part not in names:
        close = difflib.get_close_matches(part, names, n=1)
        hint = f" (did you mean {'.'.join(parts[:i] + [close[0]])}?)" if close else ""
        raise UserError(f"--cfg-options {dotted}: {getattr(target, '__name__', target)} (what "
                        f"{'.'.join(parts[:i])} builds) has no argument {part!r}{hint}; it takes: {', '.join(names)}")


def _check_inert(cfg: Any, key: str, switches: list[str]) -> None:
    """A top-level value of a pure-Python config that nothing reads is a variable of the file (``max_iters =
    20000``), already used where the file wrote it (``train_cfg = dict(max_iters=max_iters)``): overriding it now
    changes nothing. Flagged when the runner does not read it and the name is a key further down."""
    if key in switches or key in runner_keys() or _is_dict(cfg[key]):
        return
    found = [p for p in _find_key(cfg, key) if "." in p][:3]
    if found and key == "data_root":  # the task points every dataset at the data folder itself
        raise UserError(f"--cfg-options {key}: the data folder is an option of its own: use --data-root DIR")
    if found:
        raise UserError(f"--cfg-options {key}: the top-level {key!r} is a variable of the config file, already used "
                        f"when the file was read, so setting it changes nothing; set {' or '.join(found)} instead")


def _target(node: Any, path: list[str]) -> Any:
    """The class a config dict builds, when it can be known without a registry scope; else None."""
    t = node.get("type")
    if t is not None:
        if hasattr(t, "build") and type(t).__name__ == "LazyObject":
            try:
                t = t.build()
            except Exception:  # noqa: BLE001  (an import the run itself would report)
                return None
        return t if callable(t) and not isinstance(t, str) else None
    from mmengine.optim import OptimWrapper
    from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop, TestLoop, ValLoop

    if path == ["train_cfg"]:
        return EpochBasedTrainLoop if node.get("by_epoch", False) else IterBasedTrainLoop
    return {("val_cfg",): ValLoop, ("test_cfg",): TestLoop, ("optim_wrapper",): OptimWrapper}.get(tuple(path))


def _find_key(node: Any, key: str, prefix: str = "", depth: int = 4) -> Iterator[str]:
    """Dotted paths of every ``key`` inside ``node`` (for 'did you mean train_cfg.max_iters?')."""
    if depth < 0:
        return
    if _is_dict(node):
        for k in node.keys():
            path = f"{prefix}{k}"
            if k == key:
                yield path
            yield from _find_key(node[k], key, path + ".", depth - 1)
    elif isinstance(node, (list, tuple)):
        for j, item in enumerate(node):
            yield from _find_key(item, key, f"{prefix}{j}.", depth - 1)


def _check_positive(dotted: str, last: str, value: Any) -> None:
    if last in POSITIVE_INTS and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UserError(f"--cfg-options {dotted}={value!r}: expected a positive integer")


def _check_value(dotted: str, last: str, current: Any, value: Any) -> None:
    """A new value of the same kind as the config's."""
    def bad(expected: str) -> UserError:
        return UserError(f"--cfg-options {dotted}={value!r}: expected {expected} (the config has {current!r})")

    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
    elif isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
    elif isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
    elif isinstance(current, (list, tuple)):
        if value is not None and not isinstance(value, (list, tuple)):
            raise bad("a list such as [1,2]")
    elif _is_dict(current):
        if value is not None:
            raise bad(f"keys of their own ({dotted}.KEY=VALUE), or None")
    _check_positive(dotted, last, value)
