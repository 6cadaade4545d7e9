"""TensorRT-LLM: `trtllm-serve` per pool with its extra LLM-API YAML, and `trtllm-serve disaggregated` in front
of prefill (context) and decode (generation) servers (nvidia.github.io/TensorRT-LLM: "trtllm-serve", "LLM API
options", "Disaggregated serving"; the DeepSeek-R1 wide-EP examples).

How the plan's layout maps onto TensorRT-LLM's settings:
- `tensor_parallel_size` is the instance's ranks (one per device); `enable_attention_dp: true` makes every rank
  its own attention group (the plan's DP attention), false makes attention TP over all of them: TensorRT-LLM has
  no TP x DP attention, so the planner leaves those layouts out when the engine is trtllm;
- `moe_expert_parallel_size` x `moe_tensor_parallel_size` = the instance's ranks;
- pipeline stages: `pipeline_parallel_size` P (`--pp_size`), the world size tensor_parallel_size x P, so
  `tensor_parallel_size` and the MoE sizes above are one stage's (TP attention inside a stage: the layouts planned
  for TensorRT-LLM with PP have no attention DP, hwmodels.layouts); `max_batch_size` is one micro-batch's;
- redundant expert slots: the MoE load balancer, `num_slots` = experts + redundant slots (it places and moves
  experts at run time), on the CUTLASS MoE backend (WIDEEP, the 1.1 / 1.2 releases' wide-EP backend, is no
  longer a choice in the pinned source; CUTLASS is in every release's list);
- `max_batch_size` and `cuda_graph_config.max_batch_size` are one rank's sequences, `max_num_tokens` one rank's
  tokens per step;
- `kv_cache_config.free_gpu_memory_fraction` is a share of the memory left after the weights (not of HBM):
  the plan's KV cache over the HBM its weights and workspace leave free;
- MTP speculative decoding: `speculative_config` with decoding_type MTP and the plan's drafts
  (num_nextn_predict_layers: newer releases read it as max_draft_len);
- a multi-node instance runs under MPI: `mpirun -n RANKS trtllm-llmapi-launch trtllm-serve ...`.
"""

from __future__ import annotations

import yaml

from moeplan.launch.pools import ROUTER_PORT, Launch, PoolLaunch
from moeplan.launch.shell import script
from planner.plan import Mode

ENGINE = "trtllm"
# powers of two up to the rank's batch, the batch itself last (AIConfigurator's TensorRT-LLM template captures
# 1, 2, 4, ... 256 by default)
CUDA_GRAPH_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def llm_api_options(launch: Launch, p: PoolLaunch) -> dict:
    """The pool's extra LLM-API YAML."""
    options: dict = {
        "tensor_parallel_size": p.stage_devices,
        "pipeline_parallel_size": p.pipeline_stages,
        "enable_attention_dp": p.attention_dp > 1,
        "max_num_tokens": p.chunk_tokens_per_rank,
        "kv_cache_config": {"free_gpu_memory_fraction": round(p.kv_free_fraction, 3),
                            "dtype": "fp8" if launch.kv_cache_fp8 else "auto"},
    }
    if launch.is_moe:
        options["moe_expert_parallel_size"] = p.expert_parallel
        options["moe_tensor_parallel_size"] = p.moe_tp
        options["moe_config"] = {"backend": "CUTLASS"}
        if p.redundant_experts:
            options["moe_config"]["load_balancer"] = {"num_slots": launch.num_experts + p.redundant_experts}
    if p.sequences_per_rank is not None:
        options["max_batch_size"] = p.sequences_per_rank
        options["cuda_graph_config"] = {"enable_padding": True, "max_batch_size": p.sequences_per_rank,
                                        "batch_sizes": [b for b in CUDA_GRAPH_BATCHES if b < p.sequences_per_rank]
                                        + [p.sequences_per_rank]}
    else:
        # a prefill rank's step holds this many mean prompts (more, shorter ones share it: the + 1)
        options["max_batch_size"] = p.chunk_tokens_per_rank // launch.input_tokens + 1
    if launch.context_tokens:
        options["max_seq_len"] = launch.context_tokens
    if p.draft_tokens:
        options["speculative_config"] = {"decoding_type": "MTP", "num_nextn_predict_layers": p.draft_tokens}
    if launch.mode == Mode.DISAGGREGATED:
        options["cache_transceiver_config"] = {"backend": "DEFAULT"}
        options["disable_overlap_scheduler"] = str(p.role) == "prefill"  # context servers run without it
    return options


def server_argv(launch: Launch, p: PoolLaunch) -> list[str]:
    options = llm_api_options(launch, p)
    argv = ["trtllm-serve", "${MODEL}", "--backend", "pytorch", "--tp_size", str(p.stage_devices),
            "--pp_size", str(p.pipeline_stages)]
    if launch.is_moe:
        argv += ["--ep_size", str(p.expert_parallel)]
    argv += ["--max_batch_size", str(options["max_batch_size"]), "--max_num_tokens", str(options["max_num_tokens"]),
             "--kv_cache_free_gpu_memory_fraction", str(options["kv_cache_config"]["free_gpu_memory_fraction"]),
             "--extra_llm_api_options", f"{p.role}.yaml", "--host", "0.0.0.0", "--port", "${PORT}"]
    if p.nodes > 1:
        argv = ["mpirun", "-H", "${HOSTS}", "-n", str(p.devices), "trtllm-llmapi-launch", *argv]
    return argv


def disaggregated_config(launch: Launch) -> dict:
    prefill, decode = launch.pools
    return {"hostname": "0.0.0.0", "port": ROUTER_PORT,
            "context_servers": {"num_instances": prefill.instances,
                                "urls": [f"PREFILL_{i}_HOST:{prefill.port + i}" for i in range(prefill.instances)]},
            "generation_servers": {"num_instances": decode.instances,
                                   "urls": [f"DECODE_{i}_HOST:{decode.port + i}" for i in range(decode.instances)]}}


def files(launch: Launch) -> dict[str, tuple[list[str] | dict, str]]:
    out: dict = {}
    for p in launch.pools:
        options = llm_api_options(launch, p)
        out[f"{p.role}.yaml"] = (options, yaml.safe_dump(options, sort_keys=False))
        argv = server_argv(launch, p)
        where = f"over its {p.nodes} nodes (HOSTS = node:{p.devices_per_node},...)" if p.nodes > 1 else \
            f"on {p.devices} GPU{'s' * (p.devices > 1)}"
        comment = [f"{p.role} pool: {p.instances} instance(s) of {p.devices} devices, each {where}; PORT={p.port}+i"]
        out[f"{p.role}.sh"] = (argv, script(comment, argv, {"MODEL": launch.model_path, "PORT": str(p.port)}))
    if launch.mode == Mode.DISAGGREGATED:
        config = disaggregated_config(launch)
        out["disaggregated.yaml"] = (config, "# replace each *_HOST with that instance's address\n"
                                     + yaml.safe_dump(config, sort_keys=False))
        argv = ["trtllm-serve", "disaggregated", "-c", "disaggregated.yaml"]
        out["router.sh"] = (argv, script(["the disaggregated front end: start it last"], argv))
    return out
