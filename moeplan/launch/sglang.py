"""SGLang: `python -m sglang.launch_server` per pool, and `python -m sglang_router.launch_router` in front.

How the plan's layout maps onto SGLang's flags (SGLang server arguments, docs.sglang.ai "Server Arguments" and
the DeepSeek / Kimi K2 large-scale EP recipes, lmsys.org 2025-05-05 and 2025-07-20):
- `--tp-size` is the instance's devices (SGLang's world size); `--dp-size D --enable-dp-attention` splits them
  into D attention groups, each tensor-parallel over tp/D devices; `--ep-size` spreads the routed experts;
- pipeline stages: `--pp-size P`, the world size tp x pp, so `--tp-size` (and `--dp-size`, `--ep-size`) are one
  stage's; `--max-running-requests` stays the instance's (SGLang splits it over the P micro-batches it keeps in
  flight, `pp_max_micro_batch_size`), `--cuda-graph-max-bs` one micro-batch's rank;
- the all-to-all the step model prices is DeepEP's (`--moe-a2a-backend deepep`), in its low-latency kernels for a
  decode pool, normal ones for prefill, and `auto` (SGLang picks per batch) for an aggregated instance;
- redundant expert slots: `--ep-num-redundant-experts`, placed by the plan's `--init-expert-location` file
  where the plan placed experts from routing statistics;
- `--max-running-requests` is the instance's sequences (SGLang divides it over DP ranks), `--cuda-graph-max-bs`
  one rank's, `--chunked-prefill-size` the instance's prompt tokens per step (divided over DP ranks too);
- `--mem-fraction-static` is serving.hbm_utilization: the share of HBM for weights and KV cache;
- context parallel (a prefill pool the plan split prompts over attention groups): `--enable-prefill-cp
  --attn-cp-size C --cp-strategy zigzag`, SGLang's world dp x attn_cp x attn_tp, so `--dp-size` counts the
  attention_dp / C ranks that take prompts apart (SGLang server arguments at the pinned commit, and its Prefill
  Context Parallelism doc, docs.sglang.io/docs/advanced_features/prefill_cp);
- MTP speculative decoding (a decode pool the plan scored with it): `--speculative-algorithm EAGLE` with the
  model's own NextN module, `--speculative-num-steps` drafts, top-1 (docs.sglang.ai, DeepSeek usage: MTP).
"""

from __future__ import annotations

from moeplan.launch.pools import ROUTER_PORT, Launch, PoolLaunch
from moeplan.launch.shell import script
from planner.plan import Mode

ENGINE = "sglang"
TRANSFER_BACKEND = "mooncake"  # the KV transfer of the LMSYS PD recipes (nixl is the other choice)
CP_STRATEGY = "zigzag"  # each CP rank takes a chunk from each end of the prompt, balancing the causal mask
DIST_PORT = 5757  # any free port for torch.distributed between an instance's nodes (SGLang's multi-node examples use 5000)


def server_argv(launch: Launch, p: PoolLaunch) -> list[str]:
    argv = ["python", "-m", "sglang.launch_server", "--model-path", "${MODEL}", "--trust-remote-code",
            "--tp-size", str(p.stage_devices)]
    if p.pipeline_stages > 1:
        argv += ["--pp-size", str(p.pipeline_stages)]
    ranks = p.attention_dp // p.context_parallel  # SGLang splits its world into dp x attn_cp x attn_tp
    if ranks > 1:
        argv += ["--dp-size", str(ranks), "--enable-dp-attention"]
    if p.context_parallel > 1:
        argv += ["--enable-prefill-cp", "--attn-cp-size", str(p.context_parallel), "--cp-strategy", CP_STRATEGY]
    if launch.is_moe and p.expert_parallel > 1:
        argv += ["--ep-size", str(p.expert_parallel), "--moe-a2a-backend", "deepep",
                 "--deepep-mode", {"decode": "low_latency", "prefill": "normal"}.get(str(p.role), "auto")]
    if p.redundant_experts:
        argv += ["--ep-num-redundant-experts", str(p.redundant_experts)]
    if p.placement_file:
        argv += ["--init-expert-location", p.placement_file]
    if p.two_batch_overlap:
        argv += ["--enable-two-batch-overlap"]
    if p.draft_tokens:  # the model's MTP (NextN) module drafts, as SGLang's DeepSeek MTP recipe runs it
        argv += ["--speculative-algorithm", "EAGLE", "--speculative-num-steps", str(p.draft_tokens),
                 "--speculative-eagle-topk", "1", "--speculative-num-draft-tokens", str(p.draft_tokens + 1)]
    if p.sequences_per_instance is not None:
        argv += ["--max-running-requests", str(p.sequences_per_instance), "--cuda-graph-max-bs", str(p.sequences_per_rank)]
    argv += ["--chunked-prefill-size", str(p.chunk_tokens_per_instance), "--mem-fraction-static", f"{launch.hbm_utilization:g}"]
    if launch.online_fp8:  # "fp8: MOE + linear online quantization" (server_args.py QUANTIZATION_CHOICES)
        argv += ["--quantization", "fp8"]
    if launch.kv_cache_fp8:
        argv += ["--kv-cache-dtype", "fp8_e4m3"]
    if launch.context_tokens:
        argv += ["--context-length", str(launch.context_tokens)]
    if launch.mode == Mode.DISAGGREGATED:
        argv += ["--disaggregation-mode", str(p.role), "--disaggregation-transfer-backend", TRANSFER_BACKEND]
    if p.nodes > 1:
        argv += ["--nnodes", str(p.nodes), "--node-rank", "${NODE_RANK}", "--dist-init-addr", f"${{HEAD_ADDR}}:{DIST_PORT}"]
    return argv + ["--host", "0.0.0.0", "--port", "${PORT}"]


def router_argv(launch: Launch) -> list[str]:
    argv = ["python", "-m", "sglang_router.launch_router"]
    if launch.mode == Mode.DISAGGREGATED:
        argv += ["--pd-disaggregation"]
        for p in launch.pools:
            for i in range(p.instances):
                argv += [f"--{p.role}", f"http://${{{str(p.role).upper()}_{i}_HOST}}:{p.port + i}"]
    else:
        argv += ["--worker-urls", *(f"http://${{INSTANCE_{i}_HOST}}:{launch.pools[0].port + i}"
                                    for i in range(launch.pools[0].instances))]
    return argv + ["--host", "0.0.0.0", "--port", str(ROUTER_PORT)]


def files(launch: Launch) -> dict[str, tuple[list[str], str]]:
    """name -> (argv, script) of every pool's server and the router."""
    out = {}
    for p in launch.pools:
        argv = server_argv(launch, p)
        where = (f"on each of its {p.nodes} nodes with NODE_RANK=0..{p.nodes - 1} and HEAD_ADDR = its node 0"
                 if p.nodes > 1 else f"on {p.devices} GPU{'s' * (p.devices > 1)} (CUDA_VISIBLE_DEVICES)")
        comment = [f"{p.role} pool: {p.instances} instance(s) of {p.devices} devices; run instance i {where}, "
                   f"PORT={p.port}+i"]
        out[f"{p.role}.sh"] = (argv, script(comment, argv, {"MODEL": launch.model_path, "PORT": str(p.port)}))
    argv = router_argv(launch)
    out["router.sh"] = (argv, script(["the router: start it last; *_HOST are the instances' node 0 addresses"], argv))
    return out
