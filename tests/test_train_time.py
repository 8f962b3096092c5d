"""TrainTimeHook on a scripted clock (no real timing): what counts as training, validation and neither, and how the
sums travel through a checkpoint's message_hub into a resumed segment. The end-to-end checks (a mini run, a real
resume) are assertions in tests/test_runner.py and tests/test_resume.py."""
from __future__ import annotations

import json
import types
import uuid
from pathlib import Path

from mmengine.logging import MessageHub

from rs_transfer.runner.hooks import TIMING_KEY, TrainTimeHook


class Clock:
    """A clock the test advances by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _runner(world_size: int = 2, work_dir: Path | None = None) -> types.SimpleNamespace:
    hub = MessageHub.get_instance(f"train-time-{uuid.uuid4().hex}")
    return types.SimpleNamespace(message_hub=hub, world_size=world_size, work_dir=work_dir, iter=0, max_iters=10,
                                 train_dataloader=types.SimpleNamespace(batch_size=99))


def _iteration(hook: TrainTimeHook, runner, clock: Clock, *, data_wait: float, step: float, images: int = 4,
               save_seconds: float | None = None) -> dict | None:
    """One IterBasedTrainLoop iteration: next(loader), before_train_iter, train_step, after_train_iter (where the
    checkpoint hook, priority VERY_LOW, saves before this hook's LOWEST after_train_iter)."""
    clock.advance(data_wait)
    hook.before_train_iter(runner, 0, data_batch={"inputs": [object()] * images})
    clock.advance(step)
    checkpoint = None
    if save_seconds is not None:
        clock.advance(0.25)   # Runner.save_checkpoint copies the state to CPU before calling the hook
        checkpoint = {"message_hub": runner.message_hub.state_dict()}
        hook.before_save_checkpoint(runner, checkpoint)
        clock.advance(save_seconds)   # torch.save, rename, rotation
    hook.after_train_iter(runner, 0)
    return checkpoint


def _validate(hook: TrainTimeHook, runner, clock: Clock, seconds: float) -> None:
    hook.before_val(runner)
    clock.advance(seconds)
    hook.after_val(runner)


def test_training_time_counts_iterations_and_data_waits_not_validation_saves_or_replay() -> None:
    clock, runner = Clock(), _runner()
    hook = TrainTimeHook(clock=clock)
    hook.before_train(runner)
    clock.advance(50.0)   # start-up inside the loop: data-loader start, resume replay, the first batch
    _iteration(hook, runner, clock, data_wait=0.0, step=1.0)
    checkpoint = _iteration(hook, runner, clock, data_wait=0.5, step=1.0, save_seconds=10.0)
    _validate(hook, runner, clock, 3.0)
    _iteration(hook, runner, clock, data_wait=0.5, step=1.0)
    hook.after_train_epoch(runner)
    hook.after_train(runner)
    clock.advance(7.0)   # after training (export, results): not training
    _validate(hook, runner, clock, 2.0)   # a validation after the train loop counts as validation only

    # 3 steps + 2 data waits + the 0.25 s CPU copy that precedes before_save_checkpoint
    assert hook.summary() == {"train_time_s": 4.25, "eval_time_s": 5.0, "train_images": 24,
                              "train_images_per_s": round(24 / 4.25, 3), "train_segments": 1}
    assert hook.segment == {"train_time_s": 4.25, "eval_time_s": 5.0, "train_images": 24}
    # The checkpoint holds the sums as of its save (two iterations, no validation yet), as a resumed key.
    saved = checkpoint["message_hub"]
    assert saved["runtime_info"][TIMING_KEY] == {"train_time_s": 2.75, "eval_time_s": 0.0, "train_images": 16,
                                                 "train_iters": 2, "segments": 1, "complete": True,
                                                 "eval_through_iter": -1}
    assert saved["resumed_keys"][TIMING_KEY] is True
    assert runner.message_hub.get_info(TIMING_KEY)["eval_time_s"] == 5.0


def test_a_resumed_segment_continues_the_checkpoint_sums() -> None:
    clock, first = Clock(), _runner(world_size=1)
    hook = TrainTimeHook(clock=clock)
    hook.before_train(first)
    checkpoint = _iteration(hook, first, clock, data_wait=0.0, step=2.0, save_seconds=1.0)
    _iteration(hook, first, clock, data_wait=0.0, step=5.0)   # killed after this: repeated after the resume

    second = _runner(world_size=1)
    second.message_hub.load_state_dict(checkpoint["message_hub"])   # what Runner.resume does
    resumed = TrainTimeHook(clock=clock)
    resumed.before_train(second)
    clock.advance(30.0)   # data-loader replay of the resumed iterations: not training
    _iteration(resumed, second, clock, data_wait=0.0, step=3.0)
    _validate(resumed, second, clock, 1.5)
    resumed.after_train(second)

    assert resumed.summary() == {"train_time_s": 5.25, "eval_time_s": 1.5, "train_images": 8,
                                 "train_images_per_s": round(8 / 5.25, 3), "train_segments": 2}
    assert resumed.segment == {"train_time_s": 3.0, "eval_time_s": 1.5, "train_images": 4}   # this process only



def test_batch_size_fallback_when_the_batch_has_no_inputs() -> None:
    clock, runner = Clock(), _runner(world_size=3)
    hook = TrainTimeHook(clock=clock)
    hook.before_train(runner)
    hook.before_train_iter(runner, 0, data_batch=None)
    hook.after_train(runner)
    assert hook.summary()["train_images"] == 99 * 3 and hook.summary()["train_images_per_s"] is None


def test_resuming_a_checkpoint_without_the_sums_reports_no_training_time() -> None:
    """A checkpoint from before the measurement: the earlier segments are unknown, so no time (never a part)."""
    clock, runner = Clock(), _runner(world_size=1)
    runner.iter = 15   # resumed mid-run, nothing under TIMING_KEY in the restored hub
    hook = TrainTimeHook(clock=clock)
    hook.before_train(runner)
    _iteration(hook, runner, clock, data_wait=0.0, step=2.0)
    hook.after_train(runner)
    assert hook.summary() == {"train_time_s": None, "eval_time_s": None, "train_images": None,
                              "train_images_per_s": None, "train_segments": 1}
    assert hook.segment["train_time_s"] == 2.0 and runner.message_hub.get_info(TIMING_KEY)["complete"] is False


def test_a_segment_resumed_from_the_final_checkpoint_adds_no_training_time() -> None:
    """mmengine's iteration loop calls after_train_epoch once, at its end: the clock must not restart there (it did,
    and the time up to after_train was billed to training: a flaky extra millisecond under load)."""
    clock, runner = Clock(), _runner(world_size=1)
    runner.message_hub.update_info(TIMING_KEY, {"train_time_s": 7.0, "eval_time_s": 1.0, "train_images": 40,
                                                "train_iters": 10, "segments": 1, "complete": True}, resumed=True)
    runner.iter = runner.max_iters = 10
    hook = TrainTimeHook(clock=clock)
    hook.before_train(runner)
    clock.advance(3.0)
    hook.after_train_epoch(runner)
    clock.advance(2.0)
    hook.after_train(runner)
    _validate(hook, runner, clock, 1.5)
    assert hook.summary()["train_time_s"] == 7.0 and hook.summary()["eval_time_s"] == 2.5
    runner.iter = 5   # an epoch-based loop with epochs to go: the next epoch's loader start is training again
    hook.before_train(runner)
    hook.after_train_epoch(runner)
    clock.advance(0.5)
    hook.after_train(runner)
    assert hook.summary()["train_time_s"] == 7.5


def test_the_validation_after_the_resume_checkpoint_is_counted_once(tmp_path: Path) -> None:
    """mmengine saves before validating: the validation of the checkpoint's iteration is not in the checkpoint's
    sums and a resumed run does not repeat it. The work dir's eval log carries it into the resumed segment, once,
    also when the same checkpoint is resumed twice; a fresh run in the same work dir starts a new log."""
    clock, first = Clock(), _runner(world_size=1, work_dir=tmp_path)
    hook = TrainTimeHook(clock=clock)
    hook.before_train(first)
    _iteration(hook, first, clock, data_wait=0.0, step=1.0)
    first.iter = 1
    _validate(hook, first, clock, 2.0)                       # validation at iteration 1 (before any checkpoint)
    checkpoint = _iteration(hook, first, clock, data_wait=0.0, step=1.0, save_seconds=0.5)
    first.iter = 2
    _validate(hook, first, clock, 4.0)                       # validation at 2, after the checkpoint of 2: killed
    assert json.loads((tmp_path / "eval_times.json").read_text()) == [{"iter": 1, "s": 2.0}, {"iter": 2, "s": 4.0}]

    for _ in range(2):                                       # resumed from iteration 2, twice
        second = _runner(world_size=1, work_dir=tmp_path)
        second.message_hub.load_state_dict(checkpoint["message_hub"])
        second.iter = 2
        resumed = TrainTimeHook(clock=clock)
        resumed.before_train(second)
        _iteration(resumed, second, clock, data_wait=0.0, step=1.0)
        second.iter = 3
        _validate(resumed, second, clock, 1.0)
        resumed.after_train(second)
        assert resumed.summary()["eval_time_s"] == 2.0 + 4.0 + 1.0       # as an uninterrupted run: 3 validations

    fresh = TrainTimeHook(clock=clock)
    fresh.before_train(_runner(world_size=1, work_dir=tmp_path))
    assert not (tmp_path / "eval_times.json").exists()
