"""KFP wrappers of the deployment gate and the deploy step."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from rankflow.core.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deployment_gate(model_blessed: bool, infra_blessed: bool, champion_blessed: bool) -> bool:
    """True only when evaluation, the champion comparison and infra-validation all blessed the
    model.

    One boolean for one ``dsl.If``: kfp.local resolves a condition on a task's single output
    but not on a named output (it reads ``pipelinechannel--<task>-<name>`` as a pipeline input).
    """
    import logging

    logger = logging.getLogger("rankflow.deployment_gate")
    if not model_blessed:
        logger.warning("not deploying: evaluation did not bless the model")
    if not champion_blessed:
        logger.warning("not deploying: the model is worse than the serving version")
    if not infra_blessed:
        logger.warning("not deploying: infra-validation did not bless the model")
    return model_blessed and champion_blessed and infra_blessed


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy_model(
    serving_model: Input[Model],
    champion_comparison: Input[Artifact],
    deployment: Output[Artifact],
    model_name: str,
    model_store: str,
    triton_url: str,
    allow_contract_change: bool,
) -> NamedTuple("DeployOutputs", [("version", int)]):
    """Publish the validated repository as the next store version; switch Triton to it.

    Only while the version it was compared with still serves (a compare-and-swap under the
    store's lock), and only if its contract keeps that version's clients working, unless
    ``allow_contract_change``.
    """
    from rankflow.core.steps import reporting

    with reporting("deploy-model", deployment):
        import json
        from collections import namedtuple

        from rankflow.core.errors import MissingArtifactError
        from rankflow.core.integrity import checked, record
        from rankflow.core.io import atomic_write_text
        from serving.deploy import DeployConfig, JudgedAgainst, deploy

        path = checked(champion_comparison)
        try:
            champion = json.loads(path.read_text())["champion"]
        except (OSError, ValueError, KeyError) as err:
            raise MissingArtifactError(
                f"unreadable champion comparison {path}: {err}; rerun the compare step"
            ) from err
        result = deploy(
            checked(serving_model),
            model_name,
            config=DeployConfig(
                model_store=model_store,
                triton_url=triton_url,
                allow_contract_change=allow_contract_change,
            ),
            judged_against=JudgedAgainst(champion),
        )
        atomic_write_text(deployment.path, result.to_json())
        record(deployment)
        deployment.metadata.update(
            {"model_name": model_name, "version": result.version, "servers": list(result.servers)}
        )
        return namedtuple("DeployOutputs", ["version"])(result.version)
