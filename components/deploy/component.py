"""KFP wrappers of the deployment gate and the deploy step."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from rankflow.core.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deployment_gate(model_blessed: bool, infra_blessed: bool) -> bool:
    """True only when evaluation and infra-validation both blessed the model.

    One boolean for one ``dsl.If``: kfp.local resolves a condition on a task's single output
    but not on a named output (it reads ``pipelinechannel--<task>-<name>`` as a pipeline input).
    """
    import logging

    logger = logging.getLogger("rankflow.deployment_gate")
    if not model_blessed:
        logger.warning("not deploying: evaluation did not bless the model")
    if not infra_blessed:
        logger.warning("not deploying: infra-validation did not bless the model")
    return model_blessed and infra_blessed


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy_model(
    serving_model: Input[Model],
    deployment: Output[Artifact],
    model_name: str,
    model_store: str,
    triton_url: str,
) -> NamedTuple("DeployOutputs", [("version", int)]):
    """Publish the validated repository as the next store version; switch Triton to it."""
    from rankflow.core.steps import reporting

    with reporting("deploy-model", deployment):
        from collections import namedtuple

        from rankflow.core.integrity import checked, record
        from rankflow.core.io import atomic_write_text
        from serving.deploy import DeployConfig, deploy

        result = deploy(
            checked(serving_model),
            model_name,
            config=DeployConfig(model_store=model_store, triton_url=triton_url),
        )
        atomic_write_text(deployment.path, result.to_json())
        record(deployment)
        deployment.metadata.update(
            {"model_name": model_name, "version": result.version, "servers": list(result.servers)}
        )
        return namedtuple("DeployOutputs", ["version"])(result.version)
