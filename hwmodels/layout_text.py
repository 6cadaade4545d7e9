"""A parallel layout written as text, the way `moeplan estimate --layout` takes it:

    attention=dp16,experts=ep16            16 devices: DP16 attention, routed experts over EP16
    attention=tp8,experts=tp8              8 devices: TP8 attention, each expert split 8 ways (MoE TP)
    attention=tp2xdp8,experts=ep16,redundant=32,overlap=on
    attention=dp8,experts=ep8,pp=2          16 devices: two pipeline stages, each DP8 attention + EP8 on 8 devices
    attention=dp16,experts=ep16,cp=4        a prefill pool whose prompts are each split over 4 DP attention groups
    attention=dp8,experts=ep8,afd=on        16 devices: DP8 attention on 8, the routed experts EP8 on 8 others

Keys: `attention` (tpN, dpN or tpNxdpM: one pipeline stage's devices are their product), `experts` (epN, tpN, or
tpNxepM, over the same devices; default: EP over all of them), `redundant` (extra expert slots per MoE layer; default
the fewest that spread the experts evenly, as the search uses), `overlap` (two-batch overlap: on or off, default off),
`pp` (pipeline stages, default 1, also written ppN: the layout spans pp times a stage's devices, hwmodels.pipeline)
and `cp` (context parallel, default 1: each prompt split over cp of the DP attention groups, which it must divide;
prefill pools only) and `afd` (attention-FFN disaggregation, decode pools only: on puts the experts' EP group on
devices of its own, after the attention devices; default off). Names are as plan.json and the report print them.
"""

from __future__ import annotations

import re

from hwmodels.errors import InputError, excerpt
from hwmodels.layout import Layout
from hwmodels.model_arch import ModelArch

MAX_LAYOUT_CHARS = 200
MAX_PARALLEL = 100_000  # no serving instance comes near it; bounds the arithmetic on a hostile number
_AXES = re.compile(r"^(?:(tp)(\d+))?(?:[x*]?(dp|ep)(\d+))?$")
_STAGES = re.compile(r"^pp\d+$")
_SWITCH = {"on": True, "true": True, "yes": True, "off": False, "false": False, "no": False}
EXAMPLE = "attention=dp16,experts=ep16"


def parse_layout(text: str, arch: ModelArch, option: str = "--layout") -> Layout:
    """The Layout `text` names for `arch` (module docstring); an InputError naming `option` otherwise."""
    fields = _fields(text, option)
    attention = fields.pop("attention", None)
    if attention is None:
        raise InputError(option, f"{excerpt(text)} has no attention=", f"e.g. {EXAMPLE}")
    tp, dp = _axes(attention, "dp", f"{option} attention", default_first=1)
    devices = tp * dp
    experts = fields.pop("experts", None)
    afd_text = fields.pop("afd", "off").lower()
    if afd_text not in _SWITCH:
        raise InputError(f"{option} afd", f"is {excerpt(afd_text)}", "give on or off")
    moe_tp, ffn = 1, 0
    if _SWITCH[afd_text]:
        if not arch.is_moe or experts is None:
            raise InputError(f"{option} afd", "attention-FFN disaggregation needs an MoE and experts=epN",
                             "give experts=epN (its N devices run the routed experts), or afd=off")
        moe_tp, ffn = _axes(experts, "ep", f"{option} experts", default_first=1)
        if moe_tp > 1 or any(k in fields for k in ("pp", "cp", "overlap")):
            raise InputError(f"{option} afd", "attention-FFN disaggregation runs EP experts on one stage, without "
                             "context parallelism or two-batch overlap", "leave MoE TP, pp, cp and overlap out")
    elif experts is not None:
        if not arch.is_moe:
            raise InputError(f"{option} experts", f"{arch.name} has no routed experts", "leave experts= out")
        moe_tp, ep = _axes(experts, "ep", f"{option} experts", default_first=1)  # tpN alone: pure MoE TP
        if moe_tp * ep != devices:
            raise InputError(f"{option} experts", f"{experts} spans {moe_tp * ep} devices but attention={attention} "
                             f"spans {devices}", f"make them span the same devices, e.g. experts=ep{devices}")
    pp = _whole(fields.pop("pp", "1"), f"{option} pp")
    if pp > arch.num_layers:
        raise InputError(f"{option} pp", f"{pp} pipeline stages exceed {arch.name}'s {arch.num_layers} layers",
                         "give fewer stages")
    cp = _whole(fields.pop("cp", "1"), f"{option} cp")
    if dp % cp:
        raise InputError(f"{option} cp", f"{cp} does not divide the {dp} DP attention groups of attention={attention}",
                         "give a cp that divides the DP size")
    overlap_text = fields.pop("overlap", "off").lower()
    if overlap_text not in _SWITCH:
        raise InputError(f"{option} overlap", f"is {excerpt(overlap_text)}", "give on or off")
    ep = ffn or devices // moe_tp
    fewest = -arch.moe.num_experts % ep if arch.is_moe else 0
    redundant = _whole(fields.pop("redundant", str(fewest)), f"{option} redundant", low=0)
    if fields:
        raise InputError(f"{option} {next(iter(fields))}", "is not a layout key",
                         "use attention, experts, redundant, overlap, pp, cp, afd")
    if arch.attention.num_heads % tp:
        raise InputError(f"{option} attention", f"TP{tp} does not divide {arch.name}'s {arch.attention.num_heads} "
                         "attention heads", "use an attention TP that divides them")
    if arch.is_moe and (arch.moe.num_experts + redundant) % ep:
        raise InputError(f"{option} redundant", f"{arch.moe.num_experts} experts + {redundant} redundant slots do not "
                         f"spread evenly over EP{ep}", f"give redundant={fewest} or that plus a multiple of {ep}")
    return Layout(tp=tp, dp=dp, pp=pp, redundant_experts=redundant if arch.is_moe else 0,
                  two_batch_overlap=_SWITCH[overlap_text], moe_tp=moe_tp, cp=cp, ffn_devices=ffn)


def layout_text(layout: Layout, is_moe: bool = True) -> str:
    """The layout in parse_layout's form (it reads back to the same Layout)."""
    attention = "x".join(p for p in (f"tp{layout.tp}" if layout.tp > 1 else "", f"dp{layout.dp}" if layout.dp > 1 else "")
                         if p) or "tp1"
    parts = [f"attention={attention}"]
    if is_moe:
        experts = "x".join(p for p in (f"tp{layout.moe_tp}" if layout.moe_tp > 1 else "",
                                       f"ep{layout.ep}" if layout.ep > 1 or layout.moe_tp == 1 else "") if p)
        parts += [f"experts={experts}", f"redundant={layout.redundant_experts}"]
    if layout.two_batch_overlap:
        parts.append("overlap=on")
    if layout.pp > 1:
        parts.append(f"pp={layout.pp}")
    if layout.cp > 1:
        parts.append(f"cp={layout.cp}")
    if layout.ffn_devices:
        parts.append("afd=on")
    return ",".join(parts)


def _fields(text: str, option: str) -> dict[str, str]:
    if not isinstance(text, str) or not text.strip():
        raise InputError(option, "is empty", f"e.g. {EXAMPLE}")
    if len(text) > MAX_LAYOUT_CHARS:
        raise InputError(option, f"is {len(text):,} characters long", f"a layout is a few keys, e.g. {EXAMPLE}")
    fields: dict[str, str] = {}
    for item in text.replace(" ", "").lower().split(","):
        key, sep, value = item.partition("=")
        if not sep and _STAGES.match(item):  # `pp2` for pp=2
            key, sep, value = "pp", "=", item[2:]
        if not sep or not key or not value:
            raise InputError(option, f"{excerpt(item)} is not key=value", f"e.g. {EXAMPLE}")
        if key in fields:
            raise InputError(f"{option} {key}", "is given twice", "give each key once")
        fields[key] = value
    return fields


def _axes(text: str, second: str, option: str, default_first: int) -> tuple[int, int]:
    """(tp, dp) of 'tpN', 'dpM' or 'tpNxdpM' (`second` names dp or ep)."""
    match = _AXES.match(text)
    if not match or not (match.group(1) or match.group(3)) or (match.group(3) and match.group(3) != second):
        raise InputError(option, f"is {excerpt(text)}", f"give tpN, {second}N or tpNx{second}M")
    first = _whole(match.group(2), option) if match.group(1) else default_first
    other = _whole(match.group(4), option) if match.group(3) else 1
    return first, other


def _whole(text: str, option: str, low: int = 1) -> int:
    if not text.isdigit() or len(text) > 6 or not low <= int(text) <= MAX_PARALLEL:
        raise InputError(option, f"is {excerpt(text)}", f"give a whole number from {low} to {MAX_PARALLEL:,}")
    return int(text)
