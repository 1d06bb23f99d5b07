"""Model configuration: one dataclass that builds any model in the registry.

Torch-free on purpose (the CLI lists presets without importing torch).

A config has general fields every architecture uses (``name``, ``arch``, ``input_size``,
``description``, ``extra``) and the fields of the memory models (STCN, STCN+C&T, STNAN).
Per-frame baselines put their own keyword arguments in ``extra`` and ignore the rest.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from needletrack.errors import NeedletrackError

_TUPLE_FIELDS = ("encoder_depths", "encoder_widths", "encoder_heads", "encoder_reductions",
                 "value_widths", "value_blocks", "decoder_dims")


@dataclass
class ModelConfig:
    # --- general (every architecture) ---
    name: str
    arch: str  # key into the arch registry: "stcn", "stnan" (memory models) or a baseline's name
    input_size: int = 448  # square side the model is run at (divisible by 32)
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # free keyword arguments for the builder

    # --- memory models: query (key) encoder ---
    key_encoder: str = "cmt"  # "cmt" (C&T) or "resnet50" / "resnet18" / "resnet34"
    encoder_depths: tuple[int, ...] | None = (3, 3, 16, 3)  # CMT blocks per stage (stage 4 may be 0)
    encoder_widths: tuple[int, ...] | None = (64, 128, 256, 512)  # CMT channels per stage
    encoder_heads: tuple[int, ...] | None = (1, 2, 4, 8)
    encoder_reductions: tuple[int, ...] | None = (8, 4, 2, 1)  # K/V spatial reduction r per stage
    stem_width: int = 32
    ffn_ratio: float = 4.0
    key_base_width: int = 64  # ResNet key encoder: stem/layer1 width (64 in ResNet50; layers 1x, 2x, 4x)
    key_dim: int = 64

    # --- memory (value) encoder ---
    value_encoder: str = "resnet18"
    value_widths: tuple[int, ...] = (64, 128, 256)  # ResNet stem/layer1, layer2, layer3 widths
    value_blocks: tuple[int, ...] = (2, 2, 2)  # BasicBlocks per layer (ResNet18: 2, 2, 2)
    value_dim: int = 512

    # --- flow regression + MAFFM (STNAN only; None = no flow) ---
    flow_window: int | None = None  # U = V in {5, 7, 9, 11}
    flow_dim: int = 64  # channels of the matching features
    flow_match_dim: int = 64  # hidden channels of the matching network
    motion_dim: int = 64  # channels of the motion features
    flow_chunk: int = 0  # displacements per chunk in the matching network (0 = automatic)

    # --- decoder ---
    decoder_dims: tuple[int, ...] = (512, 256, 256)  # channels at strides 16, 8, 4

    # --- behaviour ---
    freeze_bn: bool = False  # BatchNorm in eval mode during training (STCN practice)
    top_k: int | None = 20  # top-k in the memory read at inference (None = dense)
    mem_every: int = 5  # the memory write interval the model is costed with: `needletrack models` counts the
    #                     value encoder once every N frames, and the ONNX manifest records it. Not read when
    #                     training (the rollout writes every clip frame) nor tracking (`Tracker(mem_every=)`,
    #                     default 5, writes only confident, consistent frames)
    mem_frames: int = 9  # the default memory size in slots (the first frame + the recent ring; `memory_slots`
    #                      elsewhere) of the ONNX export's fixed shape and of `needletrack models`' cost. Not read
    #                      when training (a clip keeps all its frames) nor by a torch `Tracker(memory_slots=)`
    #                      (default 9)

    def __post_init__(self):
        for f in _TUPLE_FIELDS:
            v = getattr(self, f)
            if isinstance(v, list):
                setattr(self, f, tuple(v))
        self.extra = dict(self.extra or {})

    # -- (de)serialisation --
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for f in _TUPLE_FIELDS:
            if d[f] is not None:
                d[f] = list(d[f])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        if not isinstance(d, dict):
            raise NeedletrackError(f"model config must be a mapping, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise NeedletrackError(f"unknown model config keys: {', '.join(unknown)}")
        for req in ("name", "arch"):
            if req not in d:
                raise NeedletrackError(f"model config lacks '{req}'")
        return cls(**copy.deepcopy(d))

    def replace(self, **changes) -> "ModelConfig":
        """A copy with some fields changed (unknown field names raise NeedletrackError)."""
        known = {f.name for f in dataclasses.fields(self)}
        bad = sorted(set(changes) - known)
        if bad:
            raise NeedletrackError(f"unknown model config keys: {', '.join(bad)}")
        return dataclasses.replace(copy.deepcopy(self), **changes)

    def to_yaml(self) -> str:
        import yaml

        head = f"# model preset '{self.name}' (generated from needletrack.models.config; edit the code, not this)\n"
        return head + yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=110)

    # -- derived --
    @property
    def is_memory_model(self) -> bool:
        return self.arch in ("stcn", "stnan")

    @property
    def has_flow(self) -> bool:
        return self.flow_window is not None

    def check(self) -> "ModelConfig":
        """Raise NeedletrackError naming the problem if this config cannot build a model."""
        def bad(msg):
            raise NeedletrackError(f"model config '{self.name}': {msg}")

        if not isinstance(self.input_size, int) or self.input_size <= 0 or self.input_size % 32:
            bad(f"input_size must be a positive multiple of 32, got {self.input_size!r}")
        if not self.is_memory_model:
            return self
        if self.key_encoder == "cmt":
            for f in ("encoder_depths", "encoder_widths", "encoder_heads", "encoder_reductions"):
                v = getattr(self, f)
                if v is None or len(v) != 4:
                    bad(f"{f} must have 4 entries for the C&T encoder, got {v!r}")
            if min(self.encoder_depths[:3]) < 1 or self.encoder_depths[3] < 0:
                bad(f"encoder_depths must be >= 1 (stage 4 may be 0), got {self.encoder_depths}")
            for w, h in zip(self.encoder_widths, self.encoder_heads):
                if w % h:
                    bad(f"encoder width {w} is not divisible by its {h} heads")
        elif self.key_encoder not in ("resnet18", "resnet34", "resnet50"):
            bad(f"unknown key_encoder '{self.key_encoder}' (cmt, resnet18, resnet34, resnet50)")
        if self.flow_window is not None:
            if self.arch != "stnan":
                bad("flow_window is only used by arch 'stnan'")
            if self.flow_window < 1 or self.flow_window % 2 == 0:
                bad(f"flow_window must be odd (5, 7, 9, 11), got {self.flow_window}")
        if len(self.decoder_dims) != 3:
            bad(f"decoder_dims must have 3 entries, got {self.decoder_dims!r}")
        if len(self.value_widths) != 3 or len(self.value_blocks) != 3:
            bad("value_widths and value_blocks must have 3 entries")
        if self.top_k is not None and self.top_k < 1:
            bad(f"top_k must be >= 1 or null, got {self.top_k}")
        return self


# ----------------------------------------------------------------------------------------------------
# Presets. The paper's rows run at 448x448. CMT widths: Ti 46/92/184/368 (stem 16, FFN 3.6),
# XS 52/104/208/416 (stem 16, FFN 3.8), S 64/128/256/512 (stem 32, FFN 4); each depth row of Table 1 uses
# the widths of the CMT variant with that depth ((2,2,6,2) takes Ti's widths).
CMT_WIDTHS = {
    "ti": dict(encoder_widths=(46, 92, 184, 368), stem_width=16, ffn_ratio=3.6),
    "xs": dict(encoder_widths=(52, 104, 208, 416), stem_width=16, ffn_ratio=3.8),
    "s": dict(encoder_widths=(64, 128, 256, 512), stem_width=32, ffn_ratio=4.0),
}
_DEPTH_WIDTH = {(2, 2, 6, 2): "ti", (2, 2, 10, 2): "ti", (3, 3, 12, 3): "xs", (3, 3, 16, 3): "s"}


def _dname(depths) -> str:
    return "d" + "-".join(str(d) for d in depths)


def _stnan(depths, window, name=None, desc=""):
    return ModelConfig(
        name=name or f"stnan_{_dname(depths)}_w{window}", arch="stnan", input_size=448,
        description=desc or f"STNAN: C&T encoder depths {tuple(depths)} (CMT-{_DEPTH_WIDTH[depths].upper()} widths), "
                            f"flow window {window}x{window}",
        key_encoder="cmt", encoder_depths=depths, flow_window=window, **CMT_WIDTHS[_DEPTH_WIDTH[depths]])


def _paper_presets():
    out = []
    t1 = [(2, 2, 6, 2), (2, 2, 10, 2), (3, 3, 12, 3), (3, 3, 16, 3)]
    for d in t1:
        out.append(_stnan(d, 9))
    for w in (5, 7, 11):
        out.append(_stnan((3, 3, 16, 3), w))
    out.append(ModelConfig(
        name="stcn", arch="stcn", input_size=448,
        description="STCN (Cheng et al. 2021): ResNet50 key encoder, ResNet18 value encoder, L2 affinity",
        key_encoder="resnet50", encoder_depths=None, encoder_widths=None, encoder_heads=None,
        encoder_reductions=None, freeze_bn=False))
    out.append(ModelConfig(
        name="stcn_ct", arch="stcn", input_size=448,
        description="STCN with the C&T query encoder (CMT-S widths, depths (3,3,16,3)), no flow",
        key_encoder="cmt", encoder_depths=(3, 3, 16, 3), **CMT_WIDTHS["s"]))
    out.append(_stnan((3, 3, 16, 3), 9, name="stnan",
                      desc="STNAN as published: STCN + C&T (depths (3,3,16,3), CMT-S widths) + flow regression "
                           "(window 9x9) + MAFFM"))
    return out


# Fast presets for CPU real time (chosen by measurement: see README.md).
_FAST = dict(
    input_size=256, key_encoder="cmt", encoder_depths=(1, 1, 2, 1), encoder_widths=(24, 48, 96, 192),
    encoder_heads=(1, 2, 4, 8), encoder_reductions=(8, 4, 2, 1), stem_width=8, ffn_ratio=2.0, key_dim=64,
    value_widths=(16, 32, 64), value_blocks=(1, 1, 1), value_dim=64,
    flow_dim=16, flow_match_dim=16, motion_dim=16, decoder_dims=(64, 32, 16), top_k=20,
)
_TINY = dict(
    input_size=64, key_encoder="cmt", encoder_depths=(1, 1, 1, 1), encoder_widths=(8, 16, 32, 32),
    encoder_heads=(1, 1, 2, 2), encoder_reductions=(4, 2, 1, 1), stem_width=8, ffn_ratio=2.0, key_dim=8,
    value_widths=(8, 8, 16), value_blocks=(1, 1, 1), value_dim=16,
    flow_dim=8, flow_match_dim=8, motion_dim=8, decoder_dims=(16, 8, 8), top_k=20,
)


def _fast_presets():
    return [
        ModelConfig(name="stnan_fast", arch="stnan", flow_window=9,
                    description="STNAN for CPU real time: narrow C&T encoder, 9x9 flow, value dim 64", **_FAST),
        ModelConfig(name="stcn_ct_fast", arch="stcn",
                    description="stnan_fast without flow regression (STCN + C&T)", **_FAST),
        ModelConfig(name="stcn_fast", arch="stcn", description="STCN (ResNet50 key, ResNet18 value) at "
                    "stnan_fast's input size, for a fair speed ratio",
                    **{**_FAST, "key_encoder": "resnet50", "encoder_depths": None, "encoder_widths": None,
                       "encoder_heads": None, "encoder_reductions": None, "value_widths": (64, 128, 256),
                       "value_blocks": (2, 2, 2), "value_dim": 512, "decoder_dims": (512, 256, 256)}),
        ModelConfig(name="stnan_tiny", arch="stnan", flow_window=5,
                    description="tiny STNAN for tests", **_TINY),
        ModelConfig(name="stcn_tiny", arch="stcn", description="tiny STCN (narrow ResNet50 key) for tests",
                    **{**_TINY, "key_encoder": "resnet50", "key_base_width": 8, "encoder_depths": None,
                       "encoder_widths": None, "encoder_heads": None, "encoder_reductions": None}),
    ]


def _quick(cfg: ModelConfig) -> ModelConfig:
    """The tables' CPU quick scale of a paper row: input 128, widths / 4 (depths and window kept)."""
    ch = dict(name=f"{cfg.name}_quick", input_size=128, description=f"{cfg.description} [quick: 128 px, narrow]",
              value_widths=(16, 32, 64), value_dim=64, decoder_dims=(64, 32, 16), flow_dim=16, flow_match_dim=16,
              motion_dim=16)
    if cfg.key_encoder == "cmt":
        ch.update(encoder_widths=tuple(-(-w // 32) * 8 for w in cfg.encoder_widths), stem_width=8)
    else:
        ch.update(key_base_width=16)
    return cfg.replace(**ch)


_PAPER = _paper_presets()
PRESETS: list[ModelConfig] = _PAPER + [_quick(c) for c in _PAPER] + _fast_presets()

# The paper's tables, row by row (preset names; rows may share a preset).
PAPER_TABLES: dict[str, list[str]] = {
    "table1": [f"stnan_{_dname(d)}_w9" for d in [(2, 2, 6, 2), (2, 2, 10, 2), (3, 3, 12, 3), (3, 3, 16, 3)]],
    "table2": [f"stnan_d3-3-16-3_w{w}" for w in (5, 7, 9, 11)],
    "table3": ["stcn", "stcn_ct", "stnan"],
}
QUICK_SUFFIX = "_quick"  # f"{row}_quick" is the row's preset at the tables' CPU quick scale
