"""Checkpoint loading: each source's real key format, written by the test, through the real loader."""
from __future__ import annotations

import hashlib
import http.server
import threading
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn

from rs_transfer import create_model, load_weights, save_weights
from rs_transfer.errors import UserError
from rs_transfer.weights import (IMAGENET, UNIT, CheckpointError, NormalizationWarning, WeightsMismatchError,
                                 decide_normalization, parse_normalization, sources)


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def test_a_bare_state_dict_wrapper_is_not_evidence_of_simclr(tmp_path, randomize) -> None:
    """Replaces the old test that asserted the wrapper-based guess ({'state_dict'} -> [0, 1] inputs): a bare
    {'state_dict'} is what pytorch/examples, Lightning and MoCo write too. Undeclared -> ImageNet, with a warning;
    the named source or an explicit choice declares it."""
    import torchvision

    ref = randomize(torchvision.models.resnet50()).eval()
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "resnet50-1x.pth")
    m = create_model("resnet50")
    with pytest.warns(NormalizationWarning, match="nothing declares the input normalisation"):
        report = load_weights(m, tmp_path / "resnet50-1x.pth")
    assert (report.wrapper, report.normalization, report.normalization_how) == ("state_dict", IMAGENET, "default")
    assert "WARNING" in report.summary() and report.to_dict()["normalization_how"] == "default"
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(_logits(m, x), _logits(ref, x), atol=1e-4)
    for explicit, expected in (("unit", UNIT), ("imagenet", IMAGENET),
                               ("0.485,0.456,0.406,0.229,0.224,0.225", IMAGENET)):
        report = load_weights(create_model("resnet50"), tmp_path / "resnet50-1x.pth", normalization=explicit)
        assert (report.normalization, report.normalization_how, report.normalization_warning) == (
            expected, "explicit", None)


def test_normalisation_decision_order_and_parsing() -> None:
    norm = parse_normalization("127.5,127.5")
    assert (norm.name, norm.mean, norm.std) == ("custom", (127.5,) * 3, (127.5,) * 3)
    assert parse_normalization("0.5,0.5") == norm  # [0, 1] units when every value is <= 1
    assert parse_normalization(norm.spec) == norm and parse_normalization("unit-range") == UNIT
    for bad in ("imagenett", "1,2,3", "0.5,0", "-1,2"):
        with pytest.raises(UserError, match="--normalization"):
            parse_normalization(bad)
    d = decide_normalization(source="x.pth", named=("simclrv1-r50-1x", UNIT), metadata="imagenet",
                             layout=("torchvision-resnet", None), warn=False)
    assert (d.normalization, d.how) == (UNIT, "named-source")  # the named source first
    d = decide_normalization(source="x.pth", metadata={"name": "custom", "mean": [1, 2, 3], "std": [4, 5, 6]},
                             layout=("simclrv2", UNIT), warn=False)
    assert (d.normalization.mean, d.how) == ((1.0, 2.0, 3.0), "checkpoint-metadata")  # then the metadata
    d = decide_normalization(source="x.pth", layout=("simclrv2", UNIT), warn=False)
    assert (d.normalization, d.how, d.warning) == (UNIT, "layout", None)  # then an identifying layout
    with pytest.warns(NormalizationWarning, match="overrides unit-range"):  # explicit wins, loudly
        d = decide_normalization(source="x.pth", explicit="imagenet", named=("simclrv2-r50-1x-sk0", UNIT))
    assert (d.normalization, d.how) == (IMAGENET, "explicit")
    d = decide_normalization(source=None)
    assert (d.normalization, d.how, d.warning) == (IMAGENET, "no-weights", None)
    with pytest.raises(UserError, match="cannot read"):
        decide_normalization(source="x.pth", metadata="yuv-something")


def test_mmengine_ddp_and_own_formats_round_trip_their_normalisation(tmp_path, randomize) -> None:
    import torchvision
    from mmengine.logging import MessageHub

    ref = randomize(torchvision.models.resnet50()).eval()
    sd = ref.state_dict()
    x = torch.randn(1, 3, 64, 64)
    expected = _logits(ref, x)

    # an mmengine checkpoint as Runner.save_checkpoint writes it: message hub with HistoryBuffers, numpy inside;
    # `rs-transfer run` puts its input normalisation into meta
    hub = MessageHub.get_instance("test_weights")
    hub.update_scalar("train/loss", 1.25)
    custom = {"name": "custom", "mean": [10.0, 20.0, 30.0], "std": [40.0, 50.0, 60.0]}
    ckpt = {"meta": {"epoch": 1, "mmengine_version": "0.10.7", "normalization": custom},
            "message_hub": hub.state_dict(),
            "state_dict": {**{f"backbone.{k}": v for k, v in sd.items() if not k.startswith("fc.")},
                           "head.fc.weight": torch.zeros(10, 2048), "head.fc.bias": torch.zeros(10)}}
    torch.save(ckpt, tmp_path / "mmengine.pth")
    m = create_model("resnet50", num_classes=10)
    report = load_weights(m, tmp_path / "mmengine.pth")  # weights_only=True with the allow-list, no trust
    assert report.wrapper == "mmengine" and report.stripped_prefixes == ["backbone."] and report.ok
    assert set(report.head_skipped) == {"head.fc.weight", "head.fc.bias"}
    assert (report.normalization.mean, report.normalization_how) == ((10.0, 20.0, 30.0), "checkpoint-metadata")
    torch.testing.assert_close(m.layer4[2].conv3.weight, sd["layer4.2.conv3.weight"])

    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "ddp.pth")
    m = create_model("resnet50")
    with pytest.warns(NormalizationWarning):
        assert load_weights(m, tmp_path / "ddp.pth").stripped_prefixes == ["module."]
    assert torch.allclose(_logits(m, x), expected, atol=1e-4)

    for suffix in (".pth", ".safetensors"):  # our own format: reloading is exact, custom values included
        for norm in ("unit-range", custom):
            path = save_weights(ref, tmp_path / f"own{suffix}", normalization=norm)
            m = create_model("resnet50")
            report = load_weights(m, path)
            assert report.container == ("safetensors" if suffix == ".safetensors" else "torch")
            assert report.normalization_how == "checkpoint-metadata"
            assert list(report.normalization.mean) == (list(UNIT.mean) if norm == "unit-range" else custom["mean"])
            assert torch.allclose(_logits(m, x), expected, atol=1e-4)


def test_runner_weights_info_uses_the_same_decision(tmp_path) -> None:
    from rs_transfer.runner import weights_info

    tiny = dict(layers=(1, 1, 1, 1), width=0.25)
    path = save_weights(create_model("resnetrs50", **tiny), tmp_path / "w.safetensors", normalization="unit")
    info = weights_info(str(path))
    assert info["normalization"]["name"] == "unit-range" and info["normalization"]["how"] == "checkpoint-metadata"
    info = weights_info(str(path), normalization="imagenet")
    assert info["normalization"]["how"] == "explicit" and "overrides" in info["normalization"]["warning"]
    assert weights_info(None)["normalization"]["how"] == "no-weights"
    # a run's work dir holding the exported weights is a weight source too
    (tmp_path / "run").mkdir()
    save_weights(create_model("resnetrs50", **tiny), tmp_path / "run" / "weights.safetensors", normalization="swav")
    assert weights_info(str(tmp_path / "run"))["normalization"]["name"] == "swav"


def test_head_differences_are_allowed_backbone_differences_are_not(tmp_path) -> None:
    src = create_model("resnetrs50")
    torch.save(src.state_dict(), tmp_path / "rs50.pth")
    # another number of classes: the head is reported, not loaded, and the load succeeds
    report = load_weights(create_model("resnetrs50", num_classes=100), tmp_path / "rs50.pth")
    assert report.ok and any(k.startswith("fc.weight") for k in report.head_skipped)
    # a partial checkpoint: missing keys are listed and the load fails...
    partial_sd = {k: v for k, v in src.state_dict().items() if not k.startswith("layer4.")}
    torch.save(partial_sd, tmp_path / "partial.pth")
    with pytest.raises(WeightsMismatchError, match=r"missing \(\d+\): layer4\.0\.") as err:
        load_weights(create_model("resnetrs50"), tmp_path / "partial.pth")
    assert all(k.startswith("layer4.") for k in err.value.report.missing)
    # ...unless strict=False
    assert load_weights(create_model("resnetrs50"), tmp_path / "partial.pth", strict=False).missing
    # the wrong architecture: unexpected and mismatched keys are listed
    torch.save(create_model("resnet50").state_dict(), tmp_path / "tv.pth")
    with pytest.raises(WeightsMismatchError, match="unexpected") as err:
        load_weights(create_model("resnetrs50"), tmp_path / "tv.pth")
    assert "conv1.weight" in err.value.report.unexpected
    # another width: shape mismatches are listed with both shapes
    torch.save(create_model("resnetrs50", width=0.5).state_dict(), tmp_path / "half.pth")
    with pytest.raises(WeightsMismatchError, match=r"mismatched .*conv1\.0\.weight: \(16, 3, 3, 3\) -> \(32, 3, 3, 3\)"):
        load_weights(create_model("resnetrs50"), tmp_path / "half.pth")


class Evil:  # a pickled object that is not a tensor: needs full unpickling
    def __reduce__(self):
        return (print, ("this would run",))


def test_untrusted_pickles_and_bad_files(tmp_path, monkeypatch) -> None:
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "obj": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="trust=True"):
        load_weights(create_model("resnet50"), tmp_path / "evil.pth")
    # random bytes are "not a checkpoint", with or without trust (never "pass --trust", never a pickle traceback)
    for name, data in (("junk.pth", b"not a checkpoint at all"), ("random.pth", bytes(range(256)) * 64),
                       ("pickle.pth", b"\x80\x04" + bytes(200)), ("short.pth", b"PK")):
        (tmp_path / name).write_bytes(data)
        for trust in (False, True):
            with pytest.raises(CheckpointError, match=f"{name}: not a checkpoint") as err:
                load_weights(create_model("resnet50"), tmp_path / name, trust=trust)
            assert "--trust" not in str(err.value) and "\n" not in str(err.value)
    good = tmp_path / "good.pth"
    torch.save(create_model("resnet50", layers=(1, 1, 1, 1)).state_dict(), good)
    (tmp_path / "cut.pth").write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # a download cut short
    for trust in (False, True):
        with pytest.raises(CheckpointError, match="cut.pth: damaged"):
            load_weights(create_model("resnet50"), tmp_path / "cut.pth", trust=trust)
    # a folder says what it is and what --weights takes
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text("{}")
    (tmp_path / "run" / "iter_30.pth").write_bytes(good.read_bytes())
    with pytest.raises(CheckpointError, match=r"is a run's work dir .*holds iter_30\.pth.*named source.*weights\."
                                              r"safetensors"):
        load_weights(create_model("resnet50"), tmp_path / "run")
    with pytest.raises(CheckpointError, match="not found: .*nothere.pth"):
        load_weights(create_model("resnet50"), tmp_path / "nothere.pth")
    monkeypatch.setenv("RS_TRANSFER_HOME", str(tmp_path / "home"))
    with pytest.raises(CheckpointError, match=r"expected .*home/weights/resnetrs50_ema-6b53758b\.pth.*Published at: https://"):
        load_weights(create_model("resnetrs50"), "resnetrs50.tf_in1k")
    with pytest.raises(CheckpointError, match="Closest: resnetrs50.tf_in1k"):
        load_weights(create_model("resnetrs50"), "resnetrs50.tf_in1")


def test_named_source_resolves_from_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RS_TRANSFER_HOME", str(tmp_path))
    spec = sources.get_source("mocov2-r50-800ep")
    (tmp_path / "weights").mkdir()
    q = create_model("resnet50", layers=(1, 1, 1, 1)).state_dict()
    sd = {f"module.encoder_{e}.{k}": v for e in "qk" for k, v in q.items()}
    torch.save({"epoch": 800, "arch": "resnet50", "state_dict": sd}, tmp_path / "weights" / spec.filename)
    report = load_weights(create_model("resnet50", layers=(1, 1, 1, 1)), "mocov2-r50-800ep")
    assert report.ok and (report.normalization, report.normalization_how) == (IMAGENET, "named-source")


def test_a_checkpoint_of_another_model_says_which_one_last(tmp_path, capsys) -> None:
    """issue 11: 'this is a torchvision resnet50: use --backbone resnet50' is the last thing printed."""
    import torchvision

    from rs_transfer.cli import main

    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "tv.pth")
    with pytest.raises(WeightsMismatchError) as err:
        load_weights(create_model("resnetrs50"), tmp_path / "tv.pth")
    assert str(err.value).splitlines()[-1] == ("this is a torchvision ResNet checkpoint that fits resnet50: use "
                                               "--backbone resnet50")
    assert main(["inspect", "resnetrs50", "--weights", str(tmp_path / "tv.pth")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("use --backbone resnet50")
    torch.save(create_model("resnetrs50", layers=(1, 1, 1, 1)).state_dict(), tmp_path / "odd.pth")
    with pytest.raises(WeightsMismatchError) as err:  # nothing registered fits: say so, still last
        load_weights(create_model("resnetrs50"), tmp_path / "odd.pth")
    assert str(err.value).splitlines()[-1].startswith("no registered model fits")
    with pytest.raises(WeightsMismatchError) as err:  # a video model is never told to use a 2D backbone
        load_weights(create_model("resnet3d50", num_classes=10), tmp_path / "tv.pth")
    assert "--backbone resnet50" not in str(err.value).splitlines()[-1]


def test_registry_and_named_sources_agree() -> None:
    """issue 9 §4: resnetrs350's named source is the i256 checkpoint (TF resnetrs350_i256.yaml: dropout 0.25), so
    the model registered under that name is the i256 variant; the i320 variant (dropout 0.4) is registered apart.
    Every named source fits a registered model, with its options."""
    from rs_transfer.backbones import get_spec

    rs350, i320 = get_spec("resnetrs350"), get_spec("resnetrs350_i320")
    assert "i256" in sources.get_source("resnetrs350.tf_in1k").url
    assert (rs350.resolution, rs350.kwargs["drop_rate"]) == (256, 0.25)
    assert (i320.resolution, i320.kwargs["drop_rate"]) == (320, 0.4)
    variants = set()
    for spec in sources.SOURCES.values():
        assert get_spec(spec.arch).family in ("resnet", "resnetrs"), spec.name
        assert spec.publisher and (spec.url or "convert" in spec.published)
        variants.add((spec.arch, tuple(spec.model_options.items())))
    for arch, options in variants:  # every variant a source declares can be built (shapes only)
        with torch.device("meta"):
            create_model(arch, **dict(options))


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support (the stdlib handler has none); counts bytes sent."""

    sent = 0

    def do_GET(self):  # noqa: N802
        path = Path(self.translate_path(self.path))
        data = path.read_bytes()
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if "Range" in self.headers else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        type(self).sent += len(data) - start  # before writing: the client may finish reading before we return
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


def test_download_is_resumable_checksummed_atomic(tmp_path, monkeypatch) -> None:
    served = tmp_path / "served"
    served.mkdir()
    payload = bytes(range(256)) * 4096  # 1 MiB
    digest = hashlib.sha256(payload).hexdigest()
    (served / "w.pth").write_bytes(payload)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_RangeHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/w.pth"
    monkeypatch.setenv("RS_TRANSFER_HOME", str(tmp_path / "home"))
    good = sources.WeightSource("t", "resnet50", f"t-{digest[:8]}.pth", url, url, digest[:8])
    bad = sources.WeightSource("b", "resnet50", "b-00000000.pth", url, url, "00000000")
    monkeypatch.setitem(sources.SOURCES, "t", good)
    monkeypatch.setitem(sources.SOURCES, "b", bad)
    try:
        dest = sources.weights_home() / good.filename
        dest.parent.mkdir(parents=True)
        dest.with_name(dest.name + ".part").write_bytes(payload[:300_000])  # an interrupted earlier download
        _RangeHandler.sent = 0
        assert sources.download("t", progress=False) == dest
        assert dest.read_bytes() == payload and _RangeHandler.sent == len(payload) - 300_000  # resumed
        assert not dest.with_name(dest.name + ".part").exists()
        with pytest.raises(CheckpointError, match="checksum mismatch"):
            sources.download("b", progress=False)
        assert not (sources.weights_home() / bad.filename).exists()  # nothing half-verified left in place
    finally:
        server.shutdown()


def test_run_with_explicit_normalisation_round_trips_through_the_export(tmp_path) -> None:
    """`run --normalization unit` on a checkpoint that declares nothing: the data preprocessor AND the backbone's
    load use it (the run's normalisation check passes), results.json says it was explicit, and the exported
    weights.safetensors declares it, so reloading the run's work dir is exact."""
    from rs_transfer.runner import run_experiment

    tiny = {"layers": [1, 1, 1, 1], "width": 0.25}
    torch.save({"state_dict": create_model("resnetrs50", **tiny).state_dict()}, tmp_path / "bare.pth")
    res = run_experiment("cifar100", "resnetrs50", preset="mini", model_overrides=tiny,
                         weights=str(tmp_path / "bare.pth"), work_dir=tmp_path / "wd", normalization="unit")
    norm = res["weights"]["normalization"]
    assert (norm["name"], norm["how"], norm["warning"]) == ("unit-range", "explicit", None)
    assert res["config"]["model"]["data_preprocessor"]["std"] == [255.0] * 3
    assert res["final_weights"] == str(tmp_path / "wd" / "weights.safetensors")
    report = load_weights(create_model("resnetrs50", num_classes=100, **tiny), tmp_path / "wd")
    assert (report.normalization, report.normalization_how) == (UNIT, "checkpoint-metadata")


def test_undeclared_normalisation_warns_once_per_run(tmp_path) -> None:
    """A run reads its weights once (before the model exists; the backbone's initialiser gets the same read), so
    the warning is issued once per run, fine-tuning and frozen-feature protocols alike, and again for the next run
    in the same process. pytest.warns records with the "always" filter, so a repeat from the same or another call
    site would be counted."""
    from rs_transfer.runner import run_experiment

    tiny = {"layers": [1, 1, 1, 1], "width": 0.25}
    torch.save({"state_dict": create_model("resnetrs50", **tiny).state_dict()}, tmp_path / "bare.pth")
    for protocol in ("finetune", "knn"):
        with pytest.warns(NormalizationWarning) as record:
            res = run_experiment("cifar100", "resnetrs50", preset="mini", model_overrides=tiny, protocol=protocol,
                                 weights=str(tmp_path / "bare.pth"), work_dir=tmp_path / protocol)
        ours = [str(w.message) for w in record if issubclass(w.category, NormalizationWarning)]
        assert len(ours) == 1 and "nothing declares the input normalisation" in ours[0], (protocol, ours)
        assert res["weights"]["normalization"]["how"] == "default"
        assert "nothing declares" in res["weights"]["normalization"]["warning"]
    with pytest.warns(NormalizationWarning) as record:  # outside a run, each load still warns
        for _ in range(2):
            load_weights(create_model("resnetrs50", **tiny), tmp_path / "bare.pth")
    assert sum(issubclass(w.category, NormalizationWarning) for w in record) == 2


def test_checkpoints_written_by_a_run_record_the_normalisation() -> None:
    """NormalizationMetaHook: what the data preprocessor really used goes into every mmengine checkpoint's meta."""
    from types import SimpleNamespace

    from mmengine.model import ImgDataPreprocessor

    from rs_transfer.runner.normcheck import NormalizationMetaHook

    pre = ImgDataPreprocessor(mean=[0.0, 0.0, 0.0], std=[255.0, 255.0, 255.0])
    runner = SimpleNamespace(model=SimpleNamespace(module=SimpleNamespace(data_preprocessor=pre)))
    ckpt: dict = {"meta": {"iter": 3}}
    NormalizationMetaHook().before_save_checkpoint(runner, ckpt)
    assert ckpt["meta"]["normalization"] == UNIT.to_dict()
    assert decide_normalization(source="iter_3.pth", metadata=ckpt["meta"]["normalization"]).normalization == UNIT


def test_list_weights_shows_the_zoo_with_checksums_and_options(capsys) -> None:
    from rs_transfer.cli import main

    assert main(["list", "weights"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith(" ")}
    for name in ("mocov2-r50-800ep", "mocov3-r50-1000ep", "swav-r50-800ep", "dino-r50", "barlowtwins-r50",
                 "vicreg-r50", "simsiam-r50-100ep", "byol-r50", "simclrv2-r152-3x-sk1", "simclrv1-r50-4x"):
        assert name in rows, name
    assert "md5:a04e12f8" in rows["mocov2-r50-800ep"] and "unknown (size)" in rows["dino-r50"]
    assert " swav " in rows["swav-r50-800ep"] and "unit-range" in rows["simclrv2-r152-3x-sk1"]
    assert "width=3" in out and "sk_ratio=0.0625" in out and "padding=tf-same" in out
    # listing is start-up only: the table is read without importing torch (checked on sys.modules, not timed)
    import subprocess
    import sys

    code = ("import sys\nfrom rs_transfer.cli import main\nmain(['list', 'weights'])\n"
            "print('HEAVY=' + ','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'mmengine'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1] == "HEAVY=", proc.stdout[-300:] + proc.stderr


def test_a_bad_normalisation_is_a_one_line_error_before_any_work(tmp_path) -> None:
    from rs_transfer.runner import run_experiment

    path = save_weights(create_model("resnetrs50", layers=(1, 1, 1, 1), width=0.25), tmp_path / "w.pth")
    with pytest.raises(UserError, match="--normalization 'imagnet'"):
        run_experiment("cifar100", "resnetrs50", preset="mini", weights=str(path), normalization="imagnet",
                       work_dir=tmp_path / "wd")
    assert not (tmp_path / "wd").exists()
