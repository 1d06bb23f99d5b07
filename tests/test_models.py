"""Memory models (STCN, STCN+C&T, STNAN): registry, operations, position bias, flow, memory read, weights."""
from __future__ import annotations

import json
import math

import pytest
import torch

from needletrack.errors import InputError, NeedletrackError
from needletrack.models import (ModelConfig, build_model, get_config, list_presets, load_model, register_arch,
                                save_model)
from needletrack.models.config import PAPER_TABLES
from needletrack.models.memory import l2_affinity, read_memory


MEMORY_PRESETS = [n for n in list_presets() if get_config(n).is_memory_model]
SMALL = 64


def _tiny_inputs(b=1, t=2, s=SMALL, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(b, t, 1, s, s, generator=g)
    mask = (torch.rand(b, 1, s, s, generator=g) > 0.8).float()
    return frames, mask


# ---------------------------------------------------------------- registry (timm-style, every preset)
@pytest.mark.parametrize("name", MEMORY_PRESETS)
def test_every_preset_builds_runs_forward_backward(name):
    cfg = get_config(name)
    torch.manual_seed(0)
    model = build_model(cfg, input_size=SMALL)  # full widths and depths, tiny input
    assert model.is_memory_model and model.cfg.name == name
    frames, mask = _tiny_inputs()
    # the operations, frame 0 -> memory, frame 1 predicted
    q0 = model.encode_key(frames[:, 0])
    assert q0.key.shape == (1, cfg.key_dim, SMALL // 16, SMALL // 16)
    v0 = model.encode_value(frames[:, 0], mask, q0.f16)
    assert v0.shape == (1, cfg.value_dim, SMALL // 16, SMALL // 16)
    q1 = model.encode_key(frames[:, 1], q0.raw16)
    r = model.read_memory(q0.key.flatten(2), v0.flatten(2), q1.key)
    logit = model.segment(r, q1)
    assert logit.shape == (1, 1, SMALL, SMALL)  # one-channel logit at input size
    assert torch.isfinite(logit).all()
    torch.nn.functional.binary_cross_entropy_with_logits(logit, mask).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"


def test_fast_and_tiny_presets_logit_at_their_own_input_size():
    for name in ("stnan_fast", "stnan_tiny", "stcn_tiny"):
        cfg = get_config(name)
        model = build_model(cfg).eval()
        with torch.no_grad():
            out = model(torch.rand(1, 2, 1, cfg.input_size, cfg.input_size), torch.zeros(1, 1, cfg.input_size,
                                                                                          cfg.input_size))
        assert out.shape == (1, 1, 1, cfg.input_size, cfg.input_size)


def test_paper_tables_rows_are_presets_with_the_published_settings():
    t1 = [get_config(n) for n in PAPER_TABLES["table1"]]
    assert [c.encoder_depths for c in t1] == [(2, 2, 6, 2), (2, 2, 10, 2), (3, 3, 12, 3), (3, 3, 16, 3)]
    assert all(c.input_size == 448 and c.flow_window == 9 for c in t1)
    t2 = [get_config(n) for n in PAPER_TABLES["table2"]]
    assert [c.flow_window for c in t2] == [5, 7, 9, 11]
    assert all(c.encoder_depths == (3, 3, 16, 3) for c in t2)
    stcn, ct, full = (get_config(n) for n in PAPER_TABLES["table3"])
    assert (stcn.key_encoder, stcn.value_encoder, stcn.flow_window) == ("resnet50", "resnet18", None)
    assert (ct.key_encoder, ct.flow_window) == ("cmt", None)
    assert (full.key_encoder, full.flow_window, full.encoder_depths) == ("cmt", 9, (3, 3, 16, 3))
    for row in sum(PAPER_TABLES.values(), []):
        assert get_config(row + "_quick").input_size == 128


def test_stcn_resnet50_key_encoder_has_published_widths():
    m = build_model("stcn", input_size=SMALL)
    assert m.channels == (256, 512, 1024)  # ResNet50 layer1..3
    n_key = sum(p.numel() for p in m.key_encoder.parameters())
    assert 8.4e6 < n_key < 8.6e6  # ResNet50 up to layer3 (1-channel stem): ~8.5 M


def test_registry_contract():
    assert get_config("stnan_fast") is not get_config("stnan_fast")  # copies
    with pytest.raises(NeedletrackError, match="unknown model preset"):
        get_config("no_such_model")
    with pytest.raises(NeedletrackError, match="unknown arch"):
        build_model(ModelConfig(name="x", arch="no_such_arch"))
    with pytest.raises(NeedletrackError, match="multiple of 32"):
        build_model("stnan_tiny", input_size=100)
    with pytest.raises(NeedletrackError, match="flow_window"):
        build_model("stnan_tiny", flow_window=4)

    @register_arch("_test_identity")
    def _build(cfg):
        return torch.nn.Identity()

    m = build_model({"name": "t", "arch": "_test_identity", "extra": {"a": 1}})
    assert m.cfg.extra == {"a": 1} and m.is_memory_model is False
    with pytest.raises(ValueError):
        register_arch("_test_identity")(lambda cfg: None)


def test_config_dict_round_trip_and_unknown_keys():
    cfg = get_config("stnan")
    d = json.loads(json.dumps(cfg.to_dict()))
    assert ModelConfig.from_dict(d) == cfg
    with pytest.raises(NeedletrackError, match="unknown model config keys: bogus"):
        ModelConfig.from_dict({**d, "bogus": 1})


def test_yaml_mirror_matches_the_code_presets():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs" / "models"
    files = sorted(root.glob("*.yaml"))
    assert {f.stem for f in files} == set(MEMORY_PRESETS), "run: needletrack models --write-configs configs/models"
    for f in files:
        assert get_config(str(f)) == get_config(f.stem), f.name


def test_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text("name: x\narch: stnan\nbogus_key: 3\n")
    with pytest.raises(InputError, match=r"m\.yaml: .*bogus_key"):
        get_config(str(bad))
    bad.write_text("name: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        get_config(str(bad))
    with pytest.raises(InputError, match="cannot read"):
        get_config(str(tmp_path / "missing.yaml"))
    good = tmp_path / "g.yaml"
    good.write_text(get_config("stnan_tiny").replace(name="mine", input_size=96).to_yaml())
    assert build_model(str(good)).cfg.input_size == 96


# ---------------------------------------------------------------- C&T encoder: position bias at any size
def test_position_bias_depends_on_offset_not_size():
    from needletrack.models.cmt import RelPosBias

    torch.manual_seed(0)
    rb = RelPosBias(heads=2)
    ref = torch.zeros(1)
    a = rb(8, 8, 4, ref)
    b = rb(12, 16, 4, ref)
    assert a.shape == (2, 64, 4) and b.shape == (2, 192, 12)
    # query (y, x) and key cell (ky, kx) at the same offset get the same bias at both sizes
    ia, ka = 3 * 8 + 5, 0 * 2 + 1  # query (3, 5), key cell (0, 1) on an 8x8 grid, r = 4
    ib, kb = 3 * 16 + 5, 0 * 4 + 1  # the same on a 12x16 grid (key grid 3x4)
    assert torch.allclose(a[:, ia, ka], b[:, ib, kb])
    # and it really depends on the offset
    assert not torch.allclose(a[:, 0, 0], a[:, 0, 1])


def test_cmt_encoder_runs_at_two_sizes_and_uses_the_bias():
    from needletrack.models.cmt import create_encoder

    torch.manual_seed(0)
    enc = create_encoder("cmt_ti", depths=(1, 1, 1, 1)).eval()
    for h, w in ((64, 64), (96, 128)):
        feats = enc(torch.rand(1, 1, h, w))
        assert [tuple(f.shape[2:]) for f in feats] == [(h // s, w // s) for s in (4, 8, 16, 32)]
        assert [f.shape[1] for f in feats] == [46, 92, 184, 368]
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        before = enc(x)[2].clone()
        for blk in enc.stages[1]:
            blk.attn.bias.mlp[-1].bias.add_(1.0 * torch.arange(blk.attn.heads))  # change the bias only
            blk.attn.bias.mlp[-1].weight.mul_(3.0)
        after = enc(x)[2]
    assert not torch.allclose(before, after)


# ---------------------------------------------------------------- flow regression
def _explicit_matching_cost(flow, raw_t, raw_prev):
    """Reference: for each displacement, concat F_t with the shifted F_{t-1} explicitly and run M."""
    import torch.nn.functional as F

    from needletrack.models.flow import displacements

    r = flow.radius
    b, c, h, w = raw_t.shape
    weight = torch.cat([flow.m1_a.weight, flow.m1_b.weight], 1)
    pt = F.pad(raw_t, (1, 1, 1, 1))
    pp = F.pad(raw_prev, (r + 1,) * 4)
    outs = []
    for dy, dx in displacements(flow.window):
        win = pp[:, :, r + dy:r + dy + h + 2, r + dx:r + dx + w + 2]
        x = F.conv2d(torch.cat([pt, win], 1), weight, flow.m1_a.bias)
        outs.append(flow.m3(flow.m2(flow.m1_post(x))))
    return torch.cat(outs, 1)


@pytest.mark.parametrize("chunk", [0, 7])
def test_flow_cost_equals_explicit_concatenation(chunk):
    from needletrack.models.flow import FlowRegression

    torch.manual_seed(0)
    flow = FlowRegression(feat_ch=6, window=5, dim=4, match_dim=6, motion_dim=4, chunk=chunk).eval()
    a, b = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        got = flow.matching_cost(a, b)
        ref = _explicit_matching_cost(flow, a, b)
    assert got.shape == (2, 25, 8, 8)
    assert torch.allclose(got, ref, atol=1e-5)


def test_flow_cost_peaks_at_the_known_global_shift():
    """Train the tiny matching network briefly on random features under random global shifts, then check
    that the cost peaks at the true displacement for fresh features (indexing, sign and order of u)."""
    from needletrack.models.flow import FlowRegression, displacements

    torch.manual_seed(0)
    win, h = 5, 12
    flow = FlowRegression(feat_ch=8, window=win, dim=8, match_dim=16, motion_dim=4)
    disp = displacements(win)
    assert disp[len(disp) // 2] == (0, 0)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)

    def pair(ks):
        prev = torch.randn(len(ks), 8, h + 8, h + 8)
        # F_t(p) = F_{t-1}(p + u): the best match of p in F_{t-1} is at p + u
        cur = torch.stack([prev[i, :, 4 + disp[k][0]:4 + disp[k][0] + h, 4 + disp[k][1]:4 + disp[k][1] + h]
                           for i, k in enumerate(ks)])
        return flow.project(cur), flow.project(prev[:, :, 4:4 + h, 4:4 + h])

    for _ in range(40):
        ks = torch.randint(len(disp), (4,)).tolist()
        cost = flow.matching_cost(*pair(ks))
        target = torch.tensor(ks)[:, None, None].expand(4, h - 4, h - 4)
        loss = torch.nn.functional.cross_entropy(cost[:, :, 2:-2, 2:-2], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    flow.eval()
    us = [(1, -2), (-2, 0), (0, 0), (2, 1)]
    with torch.no_grad():
        cost = flow.matching_cost(*pair([disp.index(u) for u in us]))
        full, motion = flow(*pair([0]))
    assert full.shape == (1, win * win, h, h) and motion.shape == (1, 4, h, h)
    for i, u in enumerate(us):
        votes = cost[i, :, 2:-2, 2:-2].argmax(0).flatten()  # interior: no border effects
        share = (votes == disp.index(u)).float().mean().item()
        assert share > 0.9, (u, share)


def test_first_frame_prev_none_is_zero_motion():
    m = build_model("stnan_tiny").eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        a = m.encode_key(x)
        b = m.encode_key(x, a.raw16)
        c = m.encode_key(x, torch.rand_like(a.raw16))
    assert torch.allclose(a.key, b.key) and not torch.allclose(a.key, c.key)


# ---------------------------------------------------------------- frozen BatchNorm
@pytest.mark.parametrize("name", ["stnan_tiny", "stcn_tiny"])
def test_frozen_batchnorm_is_honoured_in_train_mode(name):
    def bn_stats(m):
        return [b.running_mean.clone() for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]

    frames, mask = _tiny_inputs(t=3)
    frozen = build_model(name, freeze_bn=True).train()
    assert frozen.training
    assert all(not b.training for b in frozen.modules() if isinstance(b, torch.nn.BatchNorm2d))
    before = bn_stats(frozen)
    frozen(frames, mask).sum().backward()
    assert all(torch.equal(a, b) for a, b in zip(before, bn_stats(frozen)))
    live = build_model(name, freeze_bn=False).train()
    before = bn_stats(live)
    live(frames, mask)
    assert not all(torch.equal(a, b) for a, b in zip(before, bn_stats(live)))


# ---------------------------------------------------------------- memory read
def _explicit_read(mk, mv, q, valid=None, top_k=None):
    d2 = ((mk[:, :, :, None] - q.flatten(2)[:, :, None, :]) ** 2).sum(1)  # B×N×M
    logits = -d2 / math.sqrt(mk.shape[1])
    if valid is not None:
        logits = logits.masked_fill(~valid[:, :, None], -math.inf)
    if top_k is not None:
        kth = logits.topk(top_k, dim=1).values[:, -1:, :]
        logits = logits.masked_fill(logits < kth, -math.inf)
    a = torch.softmax(logits, 1)
    return torch.bmm(mv, a).view(mv.shape[0], mv.shape[1], *q.shape[2:])


def test_memory_read_equals_explicit_softmax_formula():
    g = torch.Generator().manual_seed(0)
    mk, mv, q = torch.randn(2, 16, 60, generator=g), torch.randn(2, 5, 60, generator=g), torch.randn(
        2, 16, 3, 4, generator=g)
    got = read_memory(mk, mv, q)
    assert torch.allclose(got, _explicit_read(mk, mv, q), atol=1e-5)
    # the ‖kQ‖² term dropped from the logits cancels: l2_affinity differs from −‖kM−kQ‖²/√C by a per-query const
    d2 = ((mk[:, :, :, None] - q.flatten(2)[:, :, None, :]) ** 2).sum(1) / 4.0
    diff = l2_affinity(mk, q.flatten(2)) + d2
    assert torch.allclose(diff, diff[:, :1, :].expand_as(diff), atol=1e-4)
    valid = torch.rand(2, 60, generator=g) > 0.3
    assert torch.allclose(read_memory(mk, mv, q, valid=valid), _explicit_read(mk, mv, q, valid=valid), atol=1e-5)
    assert torch.allclose(read_memory(mk, mv, q, top_k=7), _explicit_read(mk, mv, q, top_k=7), atol=1e-5)
    assert torch.allclose(read_memory(mk, mv, q, top_k=60), got, atol=1e-6)  # k >= N is dense
    # top-k with a mask ignores invalid positions
    got = read_memory(mk, mv, q, valid=valid, top_k=5)
    mv2 = mv.masked_fill(~valid[:, None, :], 1e6)  # invalid values would show up if they had any weight
    assert torch.allclose(read_memory(mk, mv2, q, valid=valid, top_k=5), got, atol=1e-4)


# ---------------------------------------------------------------- weights
def test_save_load_round_trip(tmp_path, monkeypatch):
    torch.manual_seed(0)
    m = build_model("stnan_tiny").eval()
    path = save_model(m, tmp_path / "m.safetensors", meta={"step": 3})
    assert not list(tmp_path.glob("*.partial*"))
    m2 = load_model(path)
    assert m2.cfg == m.cfg and m2.weights_meta == {"step": 3} and not m2.training
    frames, mask = _tiny_inputs(b=1, t=3)
    with torch.no_grad():
        assert torch.equal(m(frames, mask), m2(frames, mask))
    monkeypatch.setenv("NEEDLETRACK_WEIGHTS_DIR", str(tmp_path))
    assert load_model("m").cfg == m.cfg  # a bare name resolves in the weights dir


def test_load_errors_are_one_line_input_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("NEEDLETRACK_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "nope.safetensors")
    with pytest.raises(InputError, match="no trained weights for preset 'stnan_tiny'"):
        load_model("stnan_tiny")
    assert load_model("stnan_tiny", allow_random=True).cfg.name == "stnan_tiny"
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="bad.safetensors"):
        load_model(bad)
    # weights whose tensors do not fit the config in the metadata
    m = build_model("stnan_tiny")
    p = save_model(m, tmp_path / "w.safetensors")
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    with safe_open(str(p), framework="pt") as f:
        md = f.metadata()
    state = {k: v.clone() for k, v in load_file(str(p)).items() if k != "key_proj.weight"}
    save_file(state, str(p), metadata=md)
    with pytest.raises(InputError, match="do not match"):
        load_model(p)


# ---------------------------------------------------------------- ONNX
def test_streaming_step_exports_to_onnx_and_matches(tmp_path):
    import onnxruntime as ort
    from needletrack.commands.models import export_onnx

    torch.manual_seed(0)
    m = build_model("stnan_tiny").eval()

    class Step(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.m = model

        def forward(self, image, prev, mem_key, mem_val):
            q = self.m.encode_key(image, prev)
            return self.m.segment(self.m.read_memory(mem_key, mem_val, q.key, top_k=20), q), q.raw16

    img = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        prev = m.encode_key(torch.rand(1, 1, 64, 64)).raw16
    mk, mv = torch.randn(1, 8, 3 * 16), torch.randn(1, 16, 3 * 16)
    export_onnx(Step(m), (img, prev, mk, mv), tmp_path / "s.onnx", ["image", "prev", "mem_key", "mem_val"],
                ["logit", "raw16"])
    sess = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": img.numpy(), "prev": prev.numpy(), "mem_key": mk.numpy(), "mem_val": mv.numpy()})
    with torch.no_grad():
        ref = Step(m)(img, prev, mk, mv)
    assert got[0].shape == (1, 1, 64, 64)
    assert abs(got[0] - ref[0].numpy()).max() < 1e-3


# ---------------------------------------------------------------- CLI
def test_models_command_json(capsys):
    from needletrack.cli import main

    rc = main(["models", "--json", "--names", "stnan_tiny,stcn_tiny", "--steps", "1", "--threads", "1"])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["stnan_tiny", "stcn_tiny"]
    for r in rows:
        assert {"name", "encoder_depths", "flow_window", "input_size", "params", "gflops",
                "cpu_ms_per_frame"} <= set(r)
        assert r["params"] > 0 and r["gflops"] > 0 and r["cpu_ms_per_frame"] > 0
    assert rows[0]["encoder_depths"] == [1, 1, 1, 1] and rows[0]["flow_window"] == 5
    assert rows[1]["encoder_depths"] is None and rows[1]["flow_window"] is None


def test_models_command_bad_name_exits_2(capsys):
    from needletrack.cli import main

    assert main(["models", "--names", "nonexistent_model", "--no-timing"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nonexistent_model" in err[0]


def test_measure_onnxruntime_engine_times_the_exported_step():
    import onnxruntime  # noqa: F401 - a required dependency: a broken install fails here, it does not skip
    from needletrack.commands.models import measure

    row = measure("stnan_tiny", timing=True, steps=1, engine="onnxruntime", threads=1)
    assert row["engine"] == "onnxruntime" and row["cpu_ms_per_frame"] > 0 and row["cpu_ms_p99"] >= 0
    assert row["gflops"] == pytest.approx(measure("stnan_tiny", timing=False)["gflops"])
