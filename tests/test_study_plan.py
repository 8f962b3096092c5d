"""A study as a plan of cells: --dry-run, the cell's own world size, per-cell state, `study status`, resubmitting
failed cells, and a mini Table 4 through the SLURM executor (tests/fake_slurm.py runs the jobs here)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY, slurm_settled
from rs_transfer.atomic import write_json_atomic
from rs_transfer.cli import main
from rs_transfer.runner.lock import WorkDirLock

TINY_OPTS = ["--backbone-options", *[f"{k}={v}".replace(" ", "") for k, v in TINY.items()]]
STUDY = ["study", "table4", "--preset", "mini", "--backbone", "resnetrs50", "--weights", "none", *TINY_OPTS]


def _plan(out: Path) -> dict:
    return json.loads((out / "plan.json").read_text())


def test_dry_run_prints_and_writes_the_plan(tmp_path: Path, capsys) -> None:
    out = tmp_path / "s"
    assert main([*STUDY, "--tasks", "cifar100", "voc-seg", "--seeds", "2", "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "cifar100/resnetrs50-scratch-finetune-seed1" in text and "4 cells: 0 done, 4 to run" in text
    plan = _plan(out)
    cells = {c["name"]: c for c in plan["cells"]}
    assert len(cells) == 4 and all(c["state"] == "to run" for c in cells.values())
    # mini cifar100: 30 iterations x global batch 16
    assert cells["cifar100/resnetrs50-scratch-finetune-seed0"]["train_samples"] == 480
    # training FLOPs = 3 x the forward FLOPs `inspect` counts (multiply-add = 2) at the cell's crop x samples
    from rs_transfer.backbones import create_model
    from rs_transfer.bench.flops import count_flops

    forward = count_flops(create_model("resnetrs50", num_classes=100, **TINY), (1, 3, 16, 16))   # mini: 16 px
    assert cells["cifar100/resnetrs50-scratch-finetune-seed0"]["train_flops"] == 3 * forward * 480
    seg = cells["voc-seg/resnetrs50-scratch-finetune-seed0"]
    assert seg["train_flops"] > 3 * forward * 320 and "whole model at 64x64" in seg["info"]["flops"]
    assert "train FLOPs: 3 x forward FLOPs of the classifier at 16 px" in text
    # evaluation: forward FLOPs at the eval crop (mini: 16 px) x the test set (read by the task's own data check,
    # not the dataset the planner builds) x validations (mini: once, at the end)
    from rs_transfer.runner import prepare_run

    prep = prepare_run("cifar100", "resnetrs50", preset="mini", model_overrides=TINY, work_dir=tmp_path / "x",
                       check_data=False)
    test_images = prep.task.check(prep.data_root).counts["test"]
    assert test_images > 0 and prep.cfg.val_dataloader.dataset.size == 16
    assert cells["cifar100/resnetrs50-scratch-finetune-seed0"]["eval_flops"] == forward * test_images * 1
    assert f"eval FLOPs: forward FLOPs of the classifier at 16 px x {test_images} eval samples x 1 validation" in text
    assert "eval FLOPs ? voc-seg: not counted" in text and seg["eval_flops"] is None
    assert "evaluation not included" not in text and "eval FLOPs" in text.splitlines()[0]
    assert not any(out.glob("*/*/results.json")) and not (out / "report.md").exists()   # nothing ran


def test_estimate_from_peak_flops_is_stated(tmp_path: Path, capsys) -> None:
    out = tmp_path / "s"
    assert main([*STUDY, "--tasks", "cifar100", "--out", str(out), "--dry-run", "--gpu", "A100",
                 "--assume-mfu", "0.5", "--cfg-options", "train_cfg.val_interval=8"]) == 0
    cell, = _plan(out)["cells"]
    # 30 mini iterations validated every 8: at 8, 16, 24 and after the last (30); the estimate counts them
    per_validation = cell["eval_flops"] / 4
    assert cell["eval_flops"] > 0 and "x 4 validation(s)" in cell["info"]["eval_flops"]
    assert per_validation == pytest.approx(cell["train_flops"] / 3 / 480 * 100)   # 100 test images at 16 px
    total = cell["train_flops"] + cell["eval_flops"]
    assert cell["estimate_s"] > 0 and cell["estimate_s"] == pytest.approx(total / (312e12 * 0.5), rel=1e-3)
    assert "A100 peak 312 TFLOP/s x assumed MFU 0.5, train + eval FLOPs" in capsys.readouterr().out
    assert main([*STUDY, "--tasks", "cifar100", "--out", str(out), "--dry-run", "--gpu", "K80"]) == 2
    assert "not in the peak TFLOP/s table" in capsys.readouterr().err


def test_validations_follow_mmengines_train_loops() -> None:
    from mmengine.config import Config

    from rs_transfer.studies.planning import validations

    def runs(**train_cfg: int) -> int | None:
        return validations(Config(dict(train_cfg=train_cfg, val_dataloader=dict(batch_size=1), val_cfg=dict(),
                                       val_evaluator=dict())))

    assert runs(max_iters=30, val_interval=30) == 1 and runs(max_iters=30, val_interval=10) == 3
    assert runs(max_iters=30, val_interval=8) == 4 and runs(max_iters=30, val_interval=8, val_begin=17) == 2
    assert runs(max_epochs=350, val_interval=350) == 1 and runs(max_epochs=12) == 12   # epochs: interval 1
    assert validations(Config(dict(train_cfg=dict(max_iters=30)))) == 0                 # no validation loop


def test_detector_flops_equal_mmengines_count_of_the_same_model(tmp_path: Path) -> None:
    """The whole detector (backbone, FPN, RPN head, RoI box head on the RoIs its config names) at its resize scale,
    counted independently by mmengine's jit analysis restricted to its multiply-add operators (convolutions, linear
    layers: all torch's FlopCounterMode counts), x2 for multiply-add = 2."""
    from mmengine.analysis import FlopAnalyzer
    from mmengine.analysis.complexity_analysis import _DEFAULT_SUPPORTED_FLOP_OPS
    from mmengine.registry import MODELS, DefaultScope

    from rs_transfer.bench.flops import MMENGINE_TO_FLOPS
    from rs_transfer.runner import prepare_run
    from rs_transfer.studies.planning import plan_cell

    cell = plan_cell(tmp_path, "voc-det/x", "voc-det", "resnetrs50", tmp_path / "x", 1,
                     {"preset": "mini", "model_overrides": TINY}, {}, flops=True)
    prep = prepare_run("voc-det", "resnetrs50", preset="mini", model_overrides=TINY, work_dir=tmp_path / "x",
                       check_data=False)
    with DefaultScope.overwrite_default_scope("mmdet"):
        det = MODELS.build(prep.cfg.model).eval()

    class Whole(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.det = det

        def forward(self, img: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, ...]:
            x = self.det.extract_feat(img)
            cls, reg = self.det.rpn_head(x)
            out = self.det.roi_head._bbox_forward(x, rois)
            return (*cls, *reg, out["cls_score"], out["bbox_pred"])

    def mmengine_flops(n_rois: int) -> int:
        rois = torch.tensor([[0.0, 10.0, 10.0, 60.0, 50.0]]).repeat(n_rois, 1)
        analyzer = FlopAnalyzer(Whole(), (torch.zeros(1, 3, 96, 128), rois))   # mini scale 128x96, /32 already
        keep = ("aten::addmm", "aten::bmm", "aten::_convolution", "aten::einsum", "aten::matmul", "aten::mm",
                "aten::linear")
        analyzer.clear_op_handles().set_op_handle(**{k: _DEFAULT_SUPPORTED_FLOP_OPS[k] for k in keep})
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        return analyzer.total() * MMENGINE_TO_FLOPS

    train_rois = prep.cfg.model.train_cfg.rcnn.sampler.num
    eval_rois = prep.cfg.model.test_cfg.rpn.max_per_img
    assert (train_rois, eval_rois) == (128, 100)     # mini's head settings (tasks/voc_det.py)
    forward_train, forward_eval = mmengine_flops(train_rois), mmengine_flops(eval_rois)
    assert forward_train > forward_eval > 0
    assert cell.train_samples == 320 and cell.train_flops == 3 * forward_train * 320
    test_images = prep.task.check(prep.data_root).counts["VOC2007/test"]
    assert test_images > 0 and cell.eval_flops == forward_eval * test_images * 1
    assert "whole detector at 128x96" in cell.info["flops"] and "NMS not counted" in cell.info["flops"]
    assert f"x {test_images} eval samples x 1 validation" in cell.info["eval_flops"]


def test_plan_uses_the_cells_world_size_not_the_planners(tmp_path: Path, fake_slurm, monkeypatch) -> None:
    from rs_transfer.runner import prepare_run

    monkeypatch.setenv("FAKE_SLURM_HOLD", "1")
    monkeypatch.setenv("WORLD_SIZE", "8")      # the login node's environment must not leak into the identity
    monkeypatch.setenv("SLURM_NTASKS", "8")
    out = tmp_path / "s"
    assert main([*STUDY, "--tasks", "cifar100", "--out", str(out), "--executor", "slurm", "--gpus-per-cell", "2",
                 "--timeout-min", "30"]) == 0
    cell, = _plan(out)["cells"]
    expected = prepare_run("cifar100", "resnetrs50", preset="mini", model_overrides=TINY, world_size=2,
                           work_dir=cell["work_dir"], check_data=False).config_hash
    assert cell["world_size"] == 2 and cell["config_hash"] == expected
    script = next((fake_slurm / "submitted").glob("*.sh")).read_text()
    assert "#SBATCH --ntasks-per-node=2" in script and "#SBATCH --time=30" in script


def _write_done(cell: dict, *, other_config: bool = False) -> None:
    """A results.json as the run would record it (identity from the same prepare_run)."""
    from rs_transfer.runner import prepare_run

    prep = prepare_run("cifar100", "resnetrs50", preset="mini", model_overrides=TINY, work_dir=cell["work_dir"],
                       seed=int(cell["run_args"][cell["run_args"].index("--seed") + 1]), check_data=False,
                       cfg_options={"train_cfg.max_iters": 7} if other_config else None)
    write_json_atomic(Path(cell["work_dir"]) / "results.json", {
        "task": "cifar100", "metric": "top1", "value": 42.0, "metrics": {"top1": 42.0}, "backbone": "resnetrs50",
        "preset": "mini",
        "config": prep.resolved, "weights": prep.weights, "work_dir": str(prep.work_dir),
        "data_root": str(prep.data_root), "train_time_s": 36.0, "train_images_per_s": 13.3, "device": "cpu (2)"})


def test_status_shows_every_state_and_resubmits_failed_cells(tmp_path: Path, fake_slurm, monkeypatch,
                                                            capsys) -> None:
    monkeypatch.setenv("FAKE_SLURM_HOLD", "1")   # submitted jobs stay PENDING
    out = tmp_path / "s"
    assert main([*STUDY, "--tasks", "cifar100", "--seeds", "6", "--out", str(out), "--dry-run"]) == 0
    cells = _plan(out)["cells"]
    _write_done(cells[0])                                    # done
    _write_done(cells[1], other_config=True)                 # stale: ran another configuration
    (Path(cells[2]["work_dir"]) / ".keep").parent.mkdir(parents=True)
    torch.save({"meta": {"iter": 5}}, Path(cells[2]["work_dir"]) / "iter_5.pth")    # partial
    write_json_atomic(Path(cells[3]["work_dir"]) / "cell_job.json", {               # failed
        "state": "failed", "job_id": "77_3", "error": "rs-transfer run: error: data folder not found", "time": 1})
    lock = WorkDirLock(cells[4]["work_dir"], what="test")                           # running
    lock.acquire()
    capsys.readouterr()
    try:
        assert main(["study", "status", str(out)]) == 0
    finally:
        lock.release()
    text = capsys.readouterr().out
    lines = {ln.split()[0]: ln for ln in text.splitlines() if ln.startswith("cifar100/")}
    name = [c["name"] for c in cells]
    assert " done " in lines[name[0]] and "top1 = 42.0" in lines[name[0]] and lines[name[0]].endswith(" 0.01")
    assert " stale " in lines[name[1]] and " partial " in lines[name[2]] and "iteration 5" in lines[name[2]]
    assert " failed " in lines[name[3]] and "job 77_3: rs-transfer run: error: data folder not found" in lines[name[3]]
    assert " running " in lines[name[4]] and f"pid {os.getpid()}" in lines[name[4]]
    assert " to run" in lines[name[5]]
    assert "1 done, 1 stale, 1 partial, 1 failed, 1 running, 1 to run" in text
    assert "compute: 0.01 GPU-h of training spent by 1 done cell(s)" in text

    # Submit the study; the same command again submits nothing twice (the cells are queued now)
    assert main([*STUDY, "--tasks", "cifar100", "--seeds", "6", "--out", str(out), "--executor", "slurm",
                 "--timeout-min", "30"]) == 0
    scripts = sorted((fake_slurm / "submitted").glob("*.sh"))
    assert len(scripts) == 1 and "#SBATCH --array=0-4%5" in scripts[0].read_text()   # all but the done cell
    assert main([*STUDY, "--tasks", "cifar100", "--seeds", "6", "--out", str(out), "--executor", "slurm",
                 "--timeout-min", "30"]) == 0
    assert len(list((fake_slurm / "submitted").glob("*.sh"))) == 1
    capsys.readouterr()
    main(["study", "status", str(out)])
    assert "5 queued" in capsys.readouterr().out

    # One job fails; `status --resubmit` submits exactly that cell again (its state file is newer than its job)
    jobs = json.loads((out / "slurm" / "jobs.json").read_text())
    task = fake_slurm / "jobs" / f"{jobs[name[3]]['job_id']}.json"
    task.write_text(json.dumps({"state": "FAILED"}))
    time.sleep(0.01)
    write_json_atomic(Path(cells[3]["work_dir"]) / "cell_job.json", {
        "state": "failed", "job_id": jobs[name[3]]["job_id"], "error": "CUDA out of memory", "time": time.time()})
    capsys.readouterr()
    assert main(["study", "status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "CUDA out of memory" in text and f"rs-transfer study status {out} --resubmit" in text
    assert main(["study", "status", str(out), "--resubmit"]) == 0
    scripts = sorted((fake_slurm / "submitted").glob("*.sh"))
    assert len(scripts) == 2 and "#SBATCH --array" not in scripts[1].read_text()    # one cell: a plain job
    assert json.loads((out / "slurm" / "jobs.json").read_text())[name[3]]["job_id"] == scripts[1].stem


@pytest.mark.slow
def test_mini_table4_through_the_slurm_executor(tmp_path: Path, fake_slurm, capsys) -> None:
    out = tmp_path / "s"
    args = [*STUDY, "--tasks", "cifar100", "--seeds", "2", "--out", str(out), "--executor", "slurm",
            "--timeout-min", "20", "--max-parallel", "1", "--cfg-options", "train_cfg.max_iters=4"]
    assert main(args) == 0
    assert "submitted 2 cell(s) as SLURM job array" in capsys.readouterr().out
    assert not (out / "report.md").exists()
    deadline = time.time() + 300
    while time.time() < deadline and len(list(out.glob("cifar100/*/results.json"))) < 2:
        time.sleep(0.5)
    slurm_settled(fake_slurm, timeout=max(0.0, deadline - time.time()))
    assert main(args) == 0    # the same command collects: every cell done, nothing submitted, the report written
    text = capsys.readouterr().out
    assert "resnetrs50 / scratch [mini]" in text and len(list((fake_slurm / "submitted").glob("*.sh"))) == 1
    rep = json.loads((out / "report.json").read_text())
    assert rep["rows"]["resnetrs50 / scratch [mini]"]["cifar100"]["n"] == 2
    study = json.loads((out / "study.json").read_text())
    assert [c["state"] for c in study["cells"]] == ["done", "done"] and all("value" in c for c in study["cells"])
    main(["study", "status", str(out)])
    assert "2 done" in capsys.readouterr().out
    main([*args, "--dry-run"])    # measured throughput now gives an estimate
    assert "measured" in capsys.readouterr().out


def test_table1_rows_plan_and_submit(tmp_path: Path, fake_slurm, monkeypatch, capsys) -> None:
    """Table 1 (11 ImageNet pre-trainings in the paper) plans its rows and submits them as one array too."""
    monkeypatch.setenv("FAKE_SLURM_HOLD", "1")
    wd = tmp_path / "t1"
    base = ["study", "table1", "--preset", "mini", "--rows", "3", "--work-dir", str(wd), "--out", str(tmp_path / "rep")]
    assert main([*base, "--dry-run"]) == 0
    assert "3 cells: 0 done, 3 to run" in capsys.readouterr().out
    plan = _plan(wd)
    assert [c["name"] for c in plan["cells"]] == ["00_baseline", "01_cosine", "02_epochs"]
    assert "recipe.name=table1:01_cosine" in plan["cells"][1]["run_args"]
    assert main([*base, "--executor", "slurm", "--timeout-min", "600", "--slurm-partition", "a100"]) == 0
    script = next((fake_slurm / "submitted").glob("*.sh")).read_text()
    assert "#SBATCH --array=0-2%3" in script and "#SBATCH --partition=a100" in script
    assert not (tmp_path / "rep.md").exists()   # no report until the rows are done
    capsys.readouterr()
    assert main(["study", "status", str(wd)]) == 0
    assert "3 queued" in capsys.readouterr().out
