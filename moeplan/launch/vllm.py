"""vLLM: `vllm serve` per pool (docs.vllm.ai "Data Parallel Deployment", "Expert Parallel Deployment",
"Disaggregated Prefilling").

How the plan's layout maps onto vLLM's flags:
- `--tensor-parallel-size` is the attention TP of one rank, `--data-parallel-size` the instance's ranks; with
  `--enable-expert-parallel` the routed experts are spread over all tp x dp devices (without it they are
  tensor-parallel over them, the plan's pure MoE TP);
- a rank spanning nodes is not planned: each node runs `--data-parallel-size-local` ranks, node 0 with the
  API server, the others `--headless` from `--data-parallel-start-rank`;
- the all-to-all the step model prices is DeepEP's: `--all2all-backend deepep_low_latency` for a decode pool,
  `deepep_high_throughput` for prefill (and aggregated);
- redundant expert slots come from vLLM's EPLB (`--enable-eplb`, `--eplb-config` num_redundant_experts): vLLM
  places and moves experts itself and takes no placement file;
- pipeline stages: `--pipeline-parallel-size P` with TP attention in each stage (the layouts vLLM plans with PP
  have one rank, dp = 1; hwmodels.layouts); an instance over several nodes runs on a Ray cluster of them
  (`--distributed-executor-backend ray`, vLLM's multi-node serving recipe), started from its node 0;
- `--max-num-seqs` and `--max-num-batched-tokens` are one rank's (each DP rank schedules on its own; under PP one
  micro-batch's);
- `--gpu-memory-utilization` is serving.hbm_utilization;
- MTP speculative decoding: `--speculative-config` with method deepseek_mtp and the plan's draft tokens;
- disaggregated pools move KV with `--kv-transfer-config` (NixlConnector); vLLM has no prefill/decode router of
  its own, so the router is NVIDIA Dynamo's frontend (dynamo.yaml) or llm-d's.
"""

from __future__ import annotations

import json

from moeplan.launch.pools import Launch, PoolLaunch
from moeplan.launch.shell import script
from planner.plan import Mode

ENGINE = "vllm"
DP_RPC_PORT = 13345  # the data-parallel RPC port of vLLM's multi-node data-parallel example


def server_argv(launch: Launch, p: PoolLaunch) -> list[str]:
    argv = ["vllm", "serve", "${MODEL}", "--trust-remote-code", "--tensor-parallel-size", str(p.attention_tp),
            "--data-parallel-size", str(p.attention_dp)]
    if p.pipeline_stages > 1:
        argv += ["--pipeline-parallel-size", str(p.pipeline_stages)]
        if p.nodes > 1:
            argv += ["--distributed-executor-backend", "ray"]
    elif p.nodes > 1:
        argv += ["--data-parallel-size-local", str(p.devices_per_node // p.attention_tp),
                 "--data-parallel-address", "${HEAD_ADDR}", "--data-parallel-rpc-port", str(DP_RPC_PORT)]
    if launch.is_moe and p.moe_tp == 1 and p.expert_parallel > 1:
        argv += ["--enable-expert-parallel", "--all2all-backend",
                 "deepep_low_latency" if str(p.role) == "decode" else "deepep_high_throughput"]
    if p.redundant_experts:
        argv += ["--enable-eplb", "--eplb-config", json.dumps({"num_redundant_experts": p.redundant_experts})]
    if p.two_batch_overlap:
        argv += ["--enable-dbo"]
    if p.draft_tokens:
        argv += ["--speculative-config", json.dumps({"method": "deepseek_mtp", "num_speculative_tokens": p.draft_tokens})]
    if p.sequences_per_rank is not None:
        argv += ["--max-num-seqs", str(p.sequences_per_rank)]
    argv += ["--max-num-batched-tokens", str(p.chunk_tokens_per_rank), "--gpu-memory-utilization", f"{launch.hbm_utilization:g}"]
    if launch.online_fp8:  # vLLM's online dynamic fp8: bf16 weights to fp8 with per-tensor scales as they load
        argv += ["--quantization", "fp8"]
    if launch.kv_cache_fp8:
        argv += ["--kv-cache-dtype", "fp8"]
    if launch.context_tokens:
        argv += ["--max-model-len", str(launch.context_tokens)]
    if launch.mode == Mode.DISAGGREGATED:
        argv += ["--kv-transfer-config", json.dumps({"kv_connector": "NixlConnector", "kv_role": "kv_both"})]
    return argv + ["--host", "0.0.0.0", "--port", "${PORT}"]


def files(launch: Launch) -> dict[str, tuple[list[str], str]]:
    out = {}
    for p in launch.pools:
        argv = server_argv(launch, p)
        ranks_per_node = p.devices_per_node // p.attention_tp
        comment = [f"{p.role} pool: {p.instances} instance(s) of {p.devices} devices ({p.attention_dp} ranks of "
                   f"TP{p.attention_tp}); run instance i with PORT={p.port}+i"]
        if p.nodes > 1 and p.pipeline_stages > 1:
            comment.append(f"start a Ray cluster over the instance's {p.nodes} nodes (ray start --head on node 0, "
                           "ray start --address on the others), then run this on node 0")
        elif p.nodes > 1:
            comment.append(f"on node 0 of the instance as is (HEAD_ADDR = its address); on node k = 1..{p.nodes - 1} "
                           f"add --headless --data-parallel-start-rank k*{ranks_per_node}")
        out[f"{p.role}.sh"] = (argv, script(comment, argv, {"MODEL": launch.model_path, "PORT": str(p.port)}))
    return out
