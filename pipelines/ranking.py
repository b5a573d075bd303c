"""The rankflow DAG: data -> item-text embeddings -> features -> train -> evaluate -> export ->
validate on Triton -> deploy (only when both evaluation and infra-validation blessed the model).

Wiring only.

Parameter defaults come from the steps' config dataclasses, so each default lives in one place.
"""

from kfp import dsl
from kfp.dsl.graph_component import GraphComponent

from components.content.component import embed_content
from components.data.component import fingerprint_data, prepare_data
from components.data.split import SplitConfig
from components.data.synthetic import SyntheticConfig
from components.deploy.component import deploy_model, deployment_gate
from components.evaluation.component import compare_with_champion, evaluate_ranker
from components.export.component import export_serving_model
from components.features.component import engineer_features
from components.features.workflow import FeatureConfig
from components.infra_validation.component import validate_on_triton
from components.training.component import train_ranker
from components.training.ranker import RankerConfig, format_sizes
from pipelines.profile import ClusterProfile, apply_profile
from serving.deploy import DeployConfig
from serving.export import ExportConfig
from serving.validate import InfraValidationConfig

PIPELINE_NAME = "rankflow-ranking"
#: Rows of the default synthetic log. With content (histories, keywords, titles, queries) every
#: step costs more per row than with scalars alone: 2M rows took 6 min 43 s end to end here
#: (features 81 s, training 158 s), 500k 3 min 49 s. At 250k the derived budget is batch 1024
#: and the run stays under 3 minutes on 2 cores, with ~5,000 cold-start test rows.
DEFAULT_SYNTHETIC_ROWS = 250_000

#: Task names (as the compiled IR and kfp.local know them), in DAG order.
STEPS = (
    "fingerprint-data",
    "prepare-data",
    "embed-content",
    "engineer-features",
    "train-ranker",
    "evaluate-ranker",
    "compare-with-champion",
    "export-serving-model",
    "validate-on-triton",
    "deployment-gate",
    "deploy-model",
)


def build_pipeline(profile: ClusterProfile) -> GraphComponent:
    """The ranking pipeline with ``profile``'s cluster settings applied to its tasks."""

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description=(
            "Interaction log -> NVTabular features -> Merlin Models multi-task ranker (the "
            "spec's binary and regression tasks) -> evaluation and blessing gate -> Triton "
            "export, infra-validation and gated, versioned rollout."
        ),
    )
    def ranking_pipeline(
        data_source: str = "synthetic",
        spec_path: str = "",
        data_snapshot: str = "",
        synthetic_rows: int = DEFAULT_SYNTHETIC_ROWS,
        synthetic_content: bool = True,
        seed: int = SyntheticConfig.seed,
        valid_fraction: float = SplitConfig.valid_fraction,
        test_fraction: float = SplitConfig.test_fraction,
        embedding_cache: str = profile.embedding_cache,
        dask_workers: int = FeatureConfig.dask_workers,
        architecture: str = RankerConfig.architecture,
        embedding_dim: int = RankerConfig.embedding_dim,
        num_experts: int = RankerConfig.num_experts,
        expert_mlp: str = format_sizes(RankerConfig.expert_mlp),
        tower_mlp: str = format_sizes(RankerConfig.tower_mlp),
        bottom_mlp: str = format_sizes(RankerConfig.bottom_mlp),
        cross_depth: int = RankerConfig.cross_depth,
        dropout: float = RankerConfig.dropout,
        batch_size: int = 0,
        epochs: int = 0,
        learning_rate: float = 0.0,
        gates: str = "{}",
        serving_model_name: str = ExportConfig.model_name,
        serving_flavour: str = profile.serving_flavour,
        max_batch_size: int = ExportConfig.max_batch_size,
        infra_rows: int = InfraValidationConfig.rows,
        infra_batch_size: int = InfraValidationConfig.batch_size,
        skew_tolerance: float = InfraValidationConfig.tolerance,
        model_store: str = profile.model_store_mount,
        triton_url: str = profile.triton_url,
        allow_contract_change: bool = DeployConfig.allow_contract_change,
    ) -> dsl.Markdown:
        """Train and evaluate a multi-task ranker.

        Args:
            data_source: "synthetic" for the built-in ads log, or a parquet/CSV path readable by the
                data step (e.g. on a mounted volume or an object-store URI mounted into the pod).
            spec_path: YAML dataset spec naming each column's role; required for your own data,
                left empty for the synthetic log.
            data_snapshot: A name for the exact bytes of data_source (e.g. a dated partition or
                an object version) that the data step's cache is keyed on; empty: a
                fingerprint of the source's files (sizes, mtimes, sampled hashes) instead.
            synthetic_rows: Rows of the synthetic log (ignored for your own data).
            synthetic_content: The synthetic log with user histories, ad keywords, ad titles,
                search queries and ads new in the test period, which the ranker takes as list
                and language-model features (ignored for your own data); false: scalar
                columns only.
            seed: Seed of the generator and of training.
            valid_fraction: Latest-but-one slice of time held out for validation.
            test_fraction: Latest slice of time held out for the test metrics.
            embedding_cache: A directory that outlives runs (a mounted volume) where item-text
                vectors are kept by model and text hash, so an unchanged catalogue is not
                embedded again; empty: no cache.
            dask_workers: Dask workers for NVTabular fit/transform (1 = in-process).
            architecture: Multi-task architecture: mmoe, ple or shared_bottom.
            embedding_dim: Embedding size of every categorical feature.
            num_experts: Experts of MMoE (split between shared and task experts in PLE).
            expert_mlp: Comma-separated layer sizes of each expert.
            tower_mlp: Comma-separated layer sizes of each task tower.
            bottom_mlp: Comma-separated layer sizes of the shared bottom (shared_bottom only).
            cross_depth: Layers of the DCN-v2 cross network in front of the experts (0 = none).
            dropout: Dropout rate of every MLP layer.
            batch_size: Training batch size; 0: derived from the train split's row count.
            epochs: Most training epochs (the best validation epoch is kept); 0: derived from
                the train split's row count.
            learning_rate: Peak Adam learning rate, cosine-decayed to zero over the run; 0:
                0.01 at batch 2048, scaled with the square root of the batch size.
            gates: Per-task blessing gates as JSON, e.g. {"click": {"min_auc": 0.7}, "dwell":
                {"min_r2": 0.3}}; a task not named must beat chance (binary: AUC above 0.5 by
                a 99% confidence bound) or the mean predictor (regression). Champion gates sit
                beside them: a candidate is refused when a paired bootstrap over the test rows
                shows it worse than the serving version by more than max_auc_drop AUC points
                (binary, default 0.001) or max_rmse_increase of its RMSE (regression, 0.005).
            serving_model_name: Name of the Triton endpoint.
            serving_flavour: "gpu" (NVTabular + TensorFlow-backend ensemble; Triton with the
                TensorFlow backend, as in the NGC Merlin image) or "cpu" (one python-backend
                model; any Triton).
            max_batch_size: Largest batch the Triton endpoint accepts.
            infra_rows: Held-out raw rows scored online and offline by infra-validation.
            infra_batch_size: Rows per request when infra-validation times latency.
            skew_tolerance: Largest online/offline score difference per task that still passes.
            model_store: Model store the blessed repository is published into as a new version
                (the model-store volume's mount path on a cluster; a local directory locally).
            triton_url: Triton HTTP model-control address (host:port; a headless Service name
                reaches every replica); empty locally = the `make serve` Triton, if running.
            allow_contract_change: Deploy even when the candidate's endpoint contract breaks
                the serving version's clients (an output removed or renamed, a required input
                added, anything retyped); otherwise such a candidate is refused, naming each
                change, and the serving version keeps serving.
        """
        # Caching (see README "Caching"): a step is reused only when what it reads is the same.
        # The data step is keyed on a fingerprint of the log's bytes, never on its path alone;
        # the champion comparison, infra-validation, the gate and the deploy read live state
        # (the store, a server) and always run.
        fingerprint = fingerprint_data(
            data_source=data_source, spec_path=spec_path, data_snapshot=data_snapshot
        ).set_display_name("Fingerprint data")
        fingerprint.set_caching_options(False)
        data = prepare_data(
            data_source=data_source,
            spec_path=spec_path,
            data_fingerprint=fingerprint.output,
            synthetic_rows=synthetic_rows,
            synthetic_content=synthetic_content,
            seed=seed,
            valid_fraction=valid_fraction,
            test_fraction=test_fraction,
        ).set_display_name("Prepare data")
        content = embed_content(
            train_data=data.outputs["train_data"],
            dataset_spec=data.outputs["dataset_spec"],
            embedding_cache=embedding_cache,
        ).set_display_name("Embed item text")
        features = engineer_features(
            train_data=data.outputs["train_data"],
            valid_data=data.outputs["valid_data"],
            test_data=data.outputs["test_data"],
            dataset_spec=data.outputs["dataset_spec"],
            content_table=content.outputs["content_table"],
            dask_workers=dask_workers,
        ).set_display_name("NVTabular features")
        training = train_ranker(
            train_features=features.outputs["train_features"],
            valid_features=features.outputs["valid_features"],
            dataset_spec=data.outputs["dataset_spec"],
            architecture=architecture,
            embedding_dim=embedding_dim,
            num_experts=num_experts,
            expert_mlp=expert_mlp,
            tower_mlp=tower_mlp,
            bottom_mlp=bottom_mlp,
            cross_depth=cross_depth,
            dropout=dropout,
            batch_size=batch_size,
            epochs=epochs,
            learning_rate=learning_rate,
            seed=seed,
        ).set_display_name("Train ranker")
        evaluation = evaluate_ranker(
            ranker=training.outputs["ranker"],
            test_features=features.outputs["test_features"],
            test_data=data.outputs["test_data"],
            train_data=data.outputs["train_data"],
            dataset_spec=data.outputs["dataset_spec"],
            gates=gates,
        ).set_display_name("Evaluate and bless")
        champion = compare_with_champion(
            nvt_workflow=features.outputs["nvt_workflow"],
            ranker=training.outputs["ranker"],
            test_data=data.outputs["test_data"],
            dataset_spec=data.outputs["dataset_spec"],
            content_table=content.outputs["content_table"],
            gates=gates,
            model_name=serving_model_name,
            model_store=model_store,
        ).set_display_name("Compare with the serving version")
        champion.set_caching_options(False)
        export = export_serving_model(
            nvt_workflow=features.outputs["nvt_workflow"],
            ranker=training.outputs["ranker"],
            dataset_spec=data.outputs["dataset_spec"],
            train_data=data.outputs["train_data"],
            valid_data=data.outputs["valid_data"],
            content_table=content.outputs["content_table"],
            model_name=serving_model_name,
            max_batch_size=max_batch_size,
            flavour=serving_flavour,
        ).set_display_name("Export Triton repository")
        validation = validate_on_triton(
            serving_model=export.outputs["serving_model"],
            nvt_workflow=features.outputs["nvt_workflow"],
            ranker=training.outputs["ranker"],
            test_data=data.outputs["test_data"],
            dataset_spec=data.outputs["dataset_spec"],
            content_table=content.outputs["content_table"],
            model_name=serving_model_name,
            rows=infra_rows,
            batch_size=infra_batch_size,
            tolerance=skew_tolerance,
        ).set_display_name("Validate on Triton")
        validation.set_caching_options(False)
        gate = deployment_gate(
            model_blessed=evaluation.outputs["blessed"],
            champion_blessed=champion.outputs["blessed"],
            infra_blessed=validation.outputs["blessed"],
        ).set_display_name("Deployment gate")
        gate.set_caching_options(False)
        with dsl.If(gate.output == True, name="blessed"):  # noqa: E712
            deployment = deploy_model(
                serving_model=export.outputs["serving_model"],
                champion_comparison=champion.outputs["comparison"],
                model_name=serving_model_name,
                model_store=model_store,
                triton_url=triton_url,
                allow_contract_change=allow_contract_change,
            ).set_display_name("Deploy to Triton")
            deployment.set_caching_options(False)
        apply_profile(
            profile,
            fingerprint=fingerprint,
            data=data,
            content=content,
            features=features,
            training=training,
            evaluation=evaluation,
            champion=champion,
            export=export,
            validation=validation,
            gate=gate,
            deploy=deployment,
        )
        return evaluation.outputs["report"]

    return ranking_pipeline


#: The pipeline with the default cluster profile: what `make compile` commits and `make run` runs.
ranking_pipeline = build_pipeline(ClusterProfile())
