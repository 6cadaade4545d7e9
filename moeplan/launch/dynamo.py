"""A Kubernetes manifest that runs the plan under NVIDIA Dynamo: one DynamoGraphDeployment (apiVersion
nvidia.com/v1alpha1) with the Dynamo frontend (the router) and one worker service per pool, each worker running
the engine's own flags through Dynamo's wrapper (`python3 -m dynamo.sglang | dynamo.vllm | dynamo.trtllm`). Keys
as ai-dynamo/dynamo's deployment guide and NVIDIA AIConfigurator's generated manifests use them: componentType,
subComponentType (prefill / decode), replicas, resources.limits.gpu (per pod: one node of the instance), and
multinode.nodeCount for an instance over several nodes.
"""

from __future__ import annotations

import yaml

from moeplan.launch.pools import Launch, PoolLaunch
from planner.plan import Mode

IMAGES = {"sglang": "sglang-runtime", "vllm": "vllm-runtime", "trtllm": "tensorrtllm-runtime"}
IMAGE_TAG = "DYNAMO_RELEASE"  # the Dynamo release to run: replace before applying (launch/README.md)
CONFIG_MOUNT = "/launch"  # where the launch folder's ConfigMap is mounted (TensorRT-LLM's YAML, placement files)


def _worker_args(launch: Launch, p: PoolLaunch, engine_argv: list[str]) -> list[str]:
    """The engine's flags as Dynamo's worker takes them: no program, host, port or node wiring (Dynamo's
    operator sets those), files from the mounted ConfigMap."""
    skip_value = {"--model-path", "--host", "--port", "--node-rank", "--dist-init-addr", "--data-parallel-address", "-H", "-n"}
    args, drop = [], False
    for token in engine_argv:
        if drop:
            drop = False
            continue
        if token in skip_value:
            drop = True
            continue
        if token.endswith((".json", ".yaml")):
            token = f"{CONFIG_MOUNT}/{token}"
        args.append(token)
    start = next(i for i, t in enumerate(args) if t.startswith("-") and t not in ("-m",))
    model = ["--model-path" if launch.engine != "vllm" else "--model", launch.model_path]
    args = model + [t for t in args[start:] if t != "${MODEL}"]
    if launch.engine == "trtllm":  # Dynamo's TensorRT-LLM worker reads the LLM-API YAML itself
        args = model + ["--extra-engine-args", f"{CONFIG_MOUNT}/{p.role}.yaml"]
        if launch.mode == Mode.DISAGGREGATED:
            args += ["--disaggregation-mode", str(p.role)]
    return args


def manifest(launch: Launch, engine_argvs: dict[str, list[str]]) -> dict:
    name = "".join(c if c.isalnum() else "-" for c in launch.deployment_name.lower()).strip("-")[:50] or "moeplan"
    image = f"nvcr.io/nvidia/ai-dynamo/{IMAGES[launch.engine]}:{IMAGE_TAG}"
    services: dict = {"Frontend": {"dynamoNamespace": name, "componentType": "frontend", "replicas": 1,
                                   "extraPodSpec": {"mainContainer": {"image": image}}}}
    for p in launch.pools:
        service = {"dynamoNamespace": name, "envFromSecret": "hf-token-secret", "componentType": "worker",
                   "replicas": p.instances, "resources": {"limits": {"gpu": str(p.devices_per_node)}},
                   "extraPodSpec": {
                       "volumes": [{"name": "launch", "configMap": {"name": f"{name}-launch"}}],
                       "mainContainer": {
                           "image": image, "command": ["python3", "-m", f"dynamo.{launch.engine}"],
                           "args": _worker_args(launch, p, engine_argvs[str(p.role)]),
                           "volumeMounts": [{"name": "launch", "mountPath": CONFIG_MOUNT}]}}}
        if launch.mode == Mode.DISAGGREGATED:
            service["subComponentType"] = str(p.role)
        if p.nodes > 1:
            service["multinode"] = {"nodeCount": p.nodes}
        services[f"{str(p.role).capitalize()}Worker"] = service
    return {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment", "metadata": {"name": name},
            "spec": {"services": services}}


def manifest_text(launch: Launch, engine_argvs: dict[str, list[str]]) -> str:
    name = manifest(launch, engine_argvs)["metadata"]["name"]
    head = (f"# kubectl create configmap {name}-launch --from-file=launch/ && kubectl apply -f launch/dynamo.yaml\n"
            f"# replace {IMAGE_TAG} with the Dynamo release to run (launch/README.md)\n")
    return head + yaml.safe_dump(manifest(launch, engine_argvs), sort_keys=False)
