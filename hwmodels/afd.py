"""Attention-FFN disaggregation (AFD): a decode pool whose routed experts run on devices of their own.

The layout (hwmodels.layout.Layout.ffn_devices > 0) puts attention, the dense layers, the router, the shared experts
and every KV cache on `tp * dp` attention devices (attention TP within a DP group as usual), and the routed experts,
expert-parallel, on `ffn_devices` FFN devices: MegaScale-Infer (ByteDance, arXiv 2504.02263), Step-3's AFD (StepFun,
arXiv 2507.19427) and Huawei's xDeepServe on CloudMatrix384 (arXiv 2508.02520) serve MoE decode this way. Two things
make it pay: an attention device keeps the HBM experts would take for KV cache, so it holds more sequences, and an
FFN device's experts see the tokens of every attention device, so their GEMMs run at a larger batch.

The step (MegaScale-Infer section 4.2, ping-pong pipeline): each step's batch is split into m
micro-batches that take turns, so the attention devices work on one while the FFN devices work on another and the
links carry a third. Per MoE layer a micro-batch takes T_a on an attention device (attention, router, shared
experts), T_d to dispatch its tokens, T_e on the busiest FFN device and T_c to combine them back; the devices cycle
through the m micro-batches with period P = max(T_a, T_e, T_d, T_c, (T_a + T_d + T_e + T_c) / m) (no stage can go
faster than its own work, and a micro-batch cannot re-enter a layer before its last round trip ends), and the step is

    m * P per MoE layer + the first micro-batch's fill, (T_a + T_d + T_e + T_c) - P, once,

the paper's (T_a + T_e + 2 T_c) + T_f (m L - 1) where its balance conditions (T_c < T_f, m >= 2 (1 + T_c / T_f))
hold, and paced by the slowest stage where they do not. Dense layers (DeepSeek's first three) and the LM head run
on the attention devices alone, every micro-batch in turn, while the FFN devices wait. The step takes the fastest
of 1, 2 and 3 micro-batches (`MICRO_BATCHES`), as the engine would pick m for its batch: 3 is the fewest that meets
the paper's condition once communication takes up to half a compute stage; but every micro-batch reads its experts'
weights again, so where the FFN devices are memory-bound fewer micro-batches that leave a side idle can be faster.

The dispatch and combine are one-directional (attention devices to FFN devices and back, the M2N and N2M transfers
the paper builds a library for): every token copy crosses between the two sets. The devices are laid out attention
first, then FFN, in the cluster's order, so a copy rides the scale-up links where its attention and FFN devices share
a domain and the scale-out fabric elsewhere; the busiest device's share on each link class is the larger of an
attention device's sends and an FFN device's receives (`link_copies`). Low-latency (decode) mode sends a copy per
(token, expert) pair, as DeepEP's low-latency kernels do; the all-to-all's fitted per-token and copy terms apply.

No engine moeplan writes launch files for serves AFD at its pinned version (catalogs/engine_flags.yaml), so the
search considers it only where the user named no engine (planner.search.afd_searched; an engine picked only for its
tables prices it), a named engine's layout space leaves it out (hwmodels.layouts.expressible), and `moeplan launch`
refuses it.
"""

from __future__ import annotations

import numpy as np

from hwmodels.collectives import ep_group_domains
from hwmodels.hardware import Cluster
from hwmodels.layout import Layout

MICRO_BATCHES = (1, 2, 3)


def link_copies(cluster: Cluster, layout: Layout, top_k: int, busiest_factor: float = 1.0) -> dict[str, float]:
    """Token copies per attention-device token on the busiest device of each link class (hwmodels.collectives'
    `rank_copies`), attention devices first then FFN devices on `cluster`; the busiest FFN device receives
    `busiest_factor` times the mean."""
    a, f = layout.attention_devices, layout.ffn_devices
    domains = ep_group_domains(cluster, a + f)
    attention, ffn = domains[:a], domains[a:]
    ffn_in = np.bincount(ffn, minlength=domains.max() + 1)  # FFN devices per domain
    attention_in = np.bincount(attention, minlength=domains.max() + 1)
    send_up = top_k * ffn_in[attention] / f  # an attention device's copies to FFN devices in its domain
    # an FFN device receives a / f times an attention device's sends (per attention-device token), from its domain's
    # attention devices over the scale-up links and the rest over the scale-out fabric
    receive = top_k * busiest_factor * a / f
    receive_up = receive * attention_in[ffn] / a
    up = max(send_up.max(), receive_up.max())
    out = max((top_k - send_up).max(), (receive - receive_up).max())
    return {"device": 0.0, "scaleup": float(up), "scaleout": float(out)}


def ping_pong_s(attention_s: np.ndarray, dispatch_s: np.ndarray, experts_s: np.ndarray, combine_s: np.ndarray,
                micro_batches: int) -> tuple[np.ndarray, float]:
    """(each MoE layer's m * P, the fill once per step) from each layer's per-micro-batch stage times (module
    docstring)."""
    stages = np.stack([np.asarray(x, float) for x in (attention_s, dispatch_s, experts_s, combine_s)])
    round_trip = stages.sum(axis=0)
    period = np.maximum(stages.max(axis=0), round_trip / micro_batches)
    fill = float(round_trip[0] - period[0]) if len(period) else 0.0
    return micro_batches * period, fill
