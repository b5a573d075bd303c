"""KFP wrapper of the deploy step."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from rankflow.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy_model(
    serving_model: Input[Model],
    deployment: Output[Artifact],
    model_name: str,
    model_store: str,
    triton_url: str,
) -> NamedTuple("DeployOutputs", [("version", int)]):
    """Publish the validated repository as the next store version; switch Triton to it."""
    from collections import namedtuple
    from pathlib import Path

    from serving.deploy import DeployConfig, deploy

    result = deploy(
        Path(serving_model.path),
        model_name,
        config=DeployConfig(model_store=model_store, triton_url=triton_url),
    )
    Path(deployment.path).write_text(result.to_json())
    deployment.metadata.update(
        {"model_name": model_name, "version": result.version, "servers": list(result.servers)}
    )
    return namedtuple("DeployOutputs", ["version"])(result.version)
