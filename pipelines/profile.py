"""The cluster profile: resources, GPUs and storage of each step on Kubeflow.

kfp.local ignores all of it, so the same DAG runs here on the CPU and on a cluster with GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from kfp import dsl, kubernetes

GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class StepResources:
    cpu: str
    memory: str
    gpu: bool = False
    #: Retries of a failed attempt, with exponential backoff (RETRY_BACKOFF, doubling). Only
    #: for steps whose failures are often transient (a Triton that fails to come up on a busy
    #: node, a replica restarting during a deploy); bad data fails the same way every time.
    retries: int = 0
    #: Wall-time bound of one attempt: a hung step (a Triton stuck loading, a stalled read)
    #: fails instead of holding its node forever.
    timeout_s: int = 3600


RETRY_BACKOFF = "30s"
RETRY_BACKOFF_MAX = "300s"


@dataclass(frozen=True)
class ClusterProfile:
    """Per-step requests. ``gpu_product`` pins GPU steps to nodes labelled with that
    ``nvidia.com/gpu.product``; ``data_pvc`` mounts an existing claim (e.g. ``k8s/pipeline/
    data-pvc.yaml``) at ``data_mount`` on the data step, so your own logs can be read from it."""

    #: Lists and samples the log for the data step's cache key (see components.data.fingerprint).
    fingerprint: StepResources = StepResources(cpu="500m", memory="1Gi", timeout_s=1800)
    data: StepResources = StepResources(cpu="2", memory="8Gi", timeout_s=2 * 3600)
    #: Embeds item text with ONNX Runtime's CPU provider (the lock's onnxruntime has no CUDA).
    content: StepResources = StepResources(cpu="4", memory="8Gi", timeout_s=4 * 3600)
    features: StepResources = StepResources(cpu="4", memory="16Gi", gpu=True, timeout_s=4 * 3600)
    training: StepResources = StepResources(cpu="4", memory="16Gi", gpu=True, timeout_s=8 * 3600)
    evaluation: StepResources = StepResources(cpu="2", memory="8Gi")
    #: Scores the test rows with the serving version too (in process, or on a private Triton
    #: for the gpu flavour's ensemble layout); reads the model store.
    champion: StepResources = StepResources(cpu="2", memory="8Gi", timeout_s=1800)
    export: StepResources = StepResources(cpu="1", memory="4Gi", timeout_s=1800)
    validation: StepResources = StepResources(cpu="2", memory="8Gi", retries=2, timeout_s=1800)
    gate: StepResources = StepResources(cpu="100m", memory="256Mi", timeout_s=300)
    deploy: StepResources = StepResources(cpu="1", memory="2Gi", retries=3, timeout_s=1800)
    gpu_product: str | None = None
    #: The pipeline's ``embedding_cache`` default: a path on a volume mounted into the content
    #: step that outlives runs; empty: none.
    embedding_cache: str = ""
    data_pvc: str | None = None
    data_mount: str = "/data"
    #: The model store (k8s/serving: ReadWriteMany claim, read-only in Triton) and where the
    #: deploy step mounts it; the pipeline's ``model_store`` default.
    model_store_pvc: str = "rankflow-model-store"
    model_store_mount: str = "/models"
    #: Headless Service resolving to every Triton replica's HTTP (model-control) port.
    triton_url: str = "rankflow-triton-replicas:8000"
    #: Triton repository flavour: "gpu" (TensorFlow backend, the NGC image's Triton) on a GPU
    #: cluster, "cpu" (python backend) for the k8s `cpu` overlay and local runs.
    serving_flavour: str = "gpu"
    #: The image's user (Dockerfile ``USER``): every step runs as it, never as root.
    run_as_user: int = 1000
    #: A Secret holding object-store credentials for your own logs (keys named as the env vars
    #: they become, e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), injected into the data
    #: step only. Credentials never enter the repository or the compiled pipeline.
    data_secret: str | None = None
    data_secret_keys: tuple[str, ...] = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def without_retries(profile: ClusterProfile) -> ClusterProfile:
    """``profile`` with every step failing at its first error: kfp.local honours retry policies,
    and locally a failure is a bug to read now, not a node to wait out."""
    steps = {
        f.name: replace(getattr(profile, f.name), retries=0)
        for f in fields(profile)
        if isinstance(getattr(profile, f.name), StepResources)
    }
    return replace(profile, **steps)


def _apply(task: dsl.PipelineTask, resources: StepResources, profile: ClusterProfile) -> None:
    task.set_cpu_request(resources.cpu).set_memory_request(resources.memory)
    task.set_memory_limit(resources.memory)
    kubernetes.set_security_context(
        task,
        run_as_user=profile.run_as_user,
        run_as_group=profile.run_as_user,
        run_as_non_root=True,
    )
    kubernetes.set_timeout(task, resources.timeout_s)
    if resources.retries:
        task.set_retry(
            num_retries=resources.retries,
            backoff_duration=RETRY_BACKOFF,
            backoff_factor=2.0,
            backoff_max_duration=RETRY_BACKOFF_MAX,
        )
    if resources.gpu:
        task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(1)
        # GPU node pools are usually tainted; tolerate the taint the NVIDIA operator documents.
        kubernetes.add_toleration(task, key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")
        if profile.gpu_product is not None:
            kubernetes.add_node_selector(
                task, label_key="nvidia.com/gpu.product", label_value=profile.gpu_product
            )


def apply_profile(
    profile: ClusterProfile,
    *,
    fingerprint: dsl.PipelineTask,
    data: dsl.PipelineTask,
    content: dsl.PipelineTask,
    features: dsl.PipelineTask,
    training: dsl.PipelineTask,
    evaluation: dsl.PipelineTask,
    champion: dsl.PipelineTask,
    export: dsl.PipelineTask,
    validation: dsl.PipelineTask,
    gate: dsl.PipelineTask,
    deploy: dsl.PipelineTask,
) -> None:
    _apply(fingerprint, profile.fingerprint, profile)
    _apply(data, profile.data, profile)
    _apply(content, profile.content, profile)
    _apply(features, profile.features, profile)
    _apply(training, profile.training, profile)
    _apply(evaluation, profile.evaluation, profile)
    _apply(champion, profile.champion, profile)
    _apply(export, profile.export, profile)
    _apply(validation, profile.validation, profile)
    _apply(gate, profile.gate, profile)
    _apply(deploy, profile.deploy, profile)
    for task in (champion, deploy):
        kubernetes.mount_pvc(
            task, pvc_name=profile.model_store_pvc, mount_path=profile.model_store_mount
        )
    # The fingerprint reads the log as the data step does.
    for task in (fingerprint, data):
        if profile.data_pvc is not None:
            kubernetes.mount_pvc(task, pvc_name=profile.data_pvc, mount_path=profile.data_mount)
        if profile.data_secret is not None:
            kubernetes.use_secret_as_env(
                task,
                secret_name=profile.data_secret,
                secret_key_to_env={key: key for key in profile.data_secret_keys},
            )
