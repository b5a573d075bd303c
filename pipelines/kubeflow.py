"""Kubeflow Pipelines from a shell or CI: publish pipeline versions, schedule runs, submit one run.

Everything here talks to the KFP v2beta1 REST API through ``kfp_server_api`` (the API's own
generated client and models) rather than ``kfp.Client``, which prints links to stdout, reaches for
a kube config when no token is given, and hides the version-by-name lookups this needs.

* :func:`publish` uploads the compiled pipeline as a version of ``rankflow-ranking`` (created
  on first use), with every step's image rewritten to one per-commit reference, so a version runs
  the code it was built from. The version's description records the spec's sha256: re-publishing
  the same version with the same spec is a no-op, with another spec it is refused.
* :func:`schedule` creates a recurring run (KFP's 6-field cron, ``max_concurrency`` 1, no
  catch-up) of a published version in an experiment.
* :func:`submit` creates one run of the local compiled pipeline, its compiled per-task caching
  options untouched.

Multi-user installs: ``namespace`` scopes pipelines, experiments and runs to a profile, and
``token`` goes out as ``Authorization: Bearer <token>`` (in a cluster, the projected service-account
token at ``/var/run/secrets/kubeflow/pipelines/token``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from rankflow.core.errors import InputError, MissingArtifactError, RankflowError, UsageError
from rankflow.core.image import REPOSITORY

logger = logging.getLogger(__name__)

PIPELINE_NAME = "rankflow-ranking"
DEFAULT_EXPERIMENT = "rankflow"
#: Where KFP projects a pipeline runner's token into a pod (what kfp.Client reads in a cluster).
IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubeflow/pipelines/token")
_PAGE_SIZE = 100
_SPEC_DIGEST = re.compile(r"spec sha256:([0-9a-f]{64})")
# An OCI reference: [registry[:port]/]path[:tag][@sha256:<64 hex>], lower-case path components.
_IMAGE_REF = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)
# robfig/cron with a seconds field, as KFP's scheduled-workflow controller parses it.
_CRON_FIELD = re.compile(
    r"^(\*|\?|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?(,(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?)*$"
)
_CRON_DESCRIPTORS = (
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
)

T = TypeVar("T")


class KubeflowError(RankflowError, RuntimeError):
    """The KFP API refused a call, answered something unusable, or could not be reached."""


# -- connection ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class KfpTarget:
    """Where the KFP API is and who calls it. ``host`` is the API's base URL (the UI's
    ``/pipeline`` path on a Kubeflow install, or a port-forward such as ``http://localhost:8888``)."""

    host: str
    namespace: str | None = None
    token: str | None = field(default=None, repr=False)
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not re.match(r"^https?://[^/\s]+", self.host):
            raise UsageError(
                f"--host {self.host!r} is not an http(s) URL: pass e.g. "
                "https://kubeflow.example.com/pipeline or http://localhost:8888"
            )

    @property
    def base(self) -> str:
        return self.host.rstrip("/")


def read_token(path: Path | None, environ: Mapping[str, str]) -> str | None:
    """The bearer token: from ``path`` when given, else ``$KFP_TOKEN``, else the in-cluster
    service-account token when this runs in a pipeline pod; ``None`` for an unauthenticated API."""
    if path is None:
        if environ.get("KFP_TOKEN"):
            return environ["KFP_TOKEN"].strip()
        if not IN_CLUSTER_TOKEN.is_file():
            return None
        path = IN_CLUSTER_TOKEN
    try:
        token = path.read_text().strip()
    except OSError as err:
        raise UsageError(f"cannot read the token file {path}: {err.strerror}") from err
    if not token:
        raise UsageError(f"the token file {path} is empty")
    return token


class KfpApi:
    """The v2beta1 service APIs on one connection; every call's failure becomes one line."""

    def __init__(self, target: KfpTarget) -> None:
        import kfp_server_api

        config = kfp_server_api.Configuration(host=target.base)
        if target.token:
            config.api_key["authorization"] = target.token
            config.api_key_prefix["authorization"] = "Bearer"
        client = kfp_server_api.ApiClient(config)
        self.target = target
        self.client = client
        self.pipelines = kfp_server_api.PipelineServiceApi(client)
        self.uploads = kfp_server_api.PipelineUploadServiceApi(client)
        self.experiments = kfp_server_api.ExperimentServiceApi(client)
        self.recurring = kfp_server_api.RecurringRunServiceApi(client)
        self.runs = kfp_server_api.RunServiceApi(client)

    def __enter__(self) -> KfpApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` with the request timeout; errors name ``what`` and the host."""
        value, _ = self.attempt(what, fn, *args, tolerate=(), **kwargs)
        assert value is not None
        return value

    def attempt(
        self,
        what: str,
        fn: Callable[..., T],
        *args: Any,
        tolerate: tuple[int, ...],
        **kwargs: Any,
    ) -> tuple[T | None, int | None]:
        """``(result, None)``, or ``(None, status)`` when the API answered a status in
        ``tolerate`` (404: not there, 409: already there); any other failure is one line."""
        import urllib3
        from kfp_server_api.exceptions import ApiException

        # (connect, read): the generated client ignores a plain float.
        timeout = (self.target.timeout_s, self.target.timeout_s)
        try:
            return fn(*args, _request_timeout=timeout, **kwargs), None
        except ApiException as err:
            if err.status in tolerate:
                return None, int(err.status)
            raise KubeflowError(
                f"{what}: the KFP API at {self.target.base} answered {err.status} "
                f"{err.reason}: {_server_message(err.body)}{_hint(err.status)}"
            ) from err
        except urllib3.exceptions.HTTPError as err:
            cause = getattr(err, "reason", None) or err  # MaxRetryError wraps the last failure
            kind = type(cause).__name__
            if isinstance(cause, urllib3.exceptions.TimeoutError):
                kind += f", no answer in {self.target.timeout_s:g} s"
            raise KubeflowError(
                f"{what}: cannot reach the KFP API at {self.target.base} ({kind}); "
                "check --host (a Kubeflow install serves it under /pipeline)"
            ) from err

    def pages(self, what: str, fn: Callable[..., Any], key: str, **kwargs: Any) -> Iterator[Any]:
        """Every item of a paginated list call."""
        token = ""
        while True:
            page = self.call(what, fn, page_size=_PAGE_SIZE, page_token=token, **kwargs)
            yield from getattr(page, key) or []
            token = page.next_page_token or ""
            if not token:
                return


def _server_message(body: object) -> str:
    """The ``message`` of a grpc-gateway error body, else the body's first line."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    try:
        payload = json.loads(text)
    except ValueError:
        return text.strip().splitlines()[0] if text.strip() else "(no body)"
    if isinstance(payload, dict):
        message = payload.get("message") or payload.get("error_message") or payload.get("error")
        if message:
            return str(message).strip().splitlines()[0]
    return text.strip().splitlines()[0]


def _hint(status: int | None) -> str:
    return {
        401: " (pass --token-file or set KFP_TOKEN)",
        403: " (the token's identity has no access here: check --namespace)",
    }.get(status or 0, "")


# -- the compiled pipeline -----------------------------------------------------------------------
def check_image_reference(ref: str) -> str:
    """``ref`` if it is an OCI image reference with a tag or a digest; ``:latest`` is refused:
    it names whatever was pushed last, not the code of one commit."""
    if not _IMAGE_REF.match(ref) or not (":" in ref.rsplit("/", 1)[-1] or "@" in ref):
        raise UsageError(
            f"--image {ref!r} is not an image reference with a tag or digest: pass e.g. "
            f"{REPOSITORY}:sha-0123456789ab or {REPOSITORY}@sha256:<digest>"
        )
    if ref.rsplit("/", 1)[-1].split("@")[0].endswith(":latest"):
        raise UsageError(
            f"--image {ref!r}: ':latest' moves with every push; pass a per-commit tag or a digest"
        )
    return ref


@dataclass(frozen=True)
class PipelineDoc:
    """A compiled pipeline: the IR (``PipelineSpec``) and the Kubernetes platform spec."""

    spec: dict[str, Any]
    platform: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> PipelineDoc:
        import yaml

        if not path.is_file():
            raise MissingArtifactError(f"compiled pipeline not found: {path} (run `make compile`)")
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as err:
            raise InputError(
                f"{path} is not YAML: {err}; recompile it with `make compile`"
            ) from err
        if not docs or "deploymentSpec" not in docs[0]:
            raise InputError(
                f"{path} is not a compiled KFP pipeline; recompile it with `make compile`"
            )
        platform: dict[str, Any] = {}
        for doc in docs[1:]:
            platform.update(doc)
        return cls(spec=docs[0], platform=platform)

    def images(self) -> set[str]:
        return {
            e["container"]["image"]
            for e in self.spec["deploymentSpec"]["executors"].values()
            if "container" in e
        }

    def with_image(self, image: str) -> PipelineDoc:
        """Every executor's container image set to ``image``: one image runs every step."""
        spec = json.loads(json.dumps(self.spec))
        for executor in spec["deploymentSpec"]["executors"].values():
            if "container" in executor:
                executor["container"]["image"] = image
        return replace(self, spec=spec)

    def digest(self) -> str:
        """sha256 of the canonical JSON of both documents: equal exactly when the pipelines are."""
        canonical = json.dumps([self.spec, self.platform], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_yaml(self) -> str:
        import yaml

        docs = [self.spec, self.platform] if self.platform else [self.spec]
        return yaml.safe_dump_all(docs, sort_keys=True)

    def run_spec(self) -> dict[str, Any]:
        """The ``pipeline_spec`` of a run created from this document (as kfp.Client sends it)."""
        if not self.platform:
            return self.spec
        return {"pipeline_spec": self.spec, "platform_spec": self.platform}


# -- the commit ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Commit:
    sha: str
    dirty: bool

    @property
    def short(self) -> str:
        return self.sha[:12]

    @property
    def image(self) -> str:
        """The per-commit image CI pushes (``.github/workflows/ci.yml``)."""
        return f"{REPOSITORY}:sha-{self.short}"


def current_commit(repo: Path) -> Commit:
    try:
        sha = _git(repo, "rev-parse", "HEAD")
        dirty = bool(_git(repo, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError) as err:
        raise UsageError(
            f"{repo} is not a git checkout, so no commit names this version: pass --version "
            "and --image"
        ) from err
    return Commit(sha=sha, dirty=dirty)


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@dataclass(frozen=True)
class Release:
    """What a publish uploads: the version name, the image every step runs, the commit."""

    version: str
    image: str
    commit: str | None

    @classmethod
    def resolve(
        cls, repo: Path, *, version: str | None = None, image: str | None = None
    ) -> Release:
        """Defaults from the checkout: version = the commit's 12-hex prefix, image = the commit's
        image. A tree with uncommitted changes names no commit: it needs an explicit --version
        (and a built --image), so a version never claims code it does not hold."""
        commit: Commit | None = None
        if version is None or image is None:
            commit = current_commit(repo)
            if commit.dirty:
                raise UsageError(
                    "the working tree has uncommitted changes, so neither the commit nor its "
                    "image holds what would be published: commit them, or pass --version and "
                    "--image (an image built from this tree)"
                )
        if image is not None:
            check_image_reference(image)
        if version is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", version):
            raise UsageError(
                f"--version {version!r}: use letters, digits, '.', '_' or '-' (at most 100)"
            )
        assert commit is not None or (version is not None and image is not None)
        return cls(
            version=version or commit.short,  # type: ignore[union-attr]
            image=image or commit.image,  # type: ignore[union-attr]
            commit=commit.sha if commit is not None and not commit.dirty else None,
        )


# -- publish -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Published:
    pipeline_id: str
    version_id: str
    version: str
    image: str
    created: bool
    url: str

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


def publish(
    target: KfpTarget,
    *,
    pipeline_yaml: Path,
    release: Release,
    pipeline_name: str = PIPELINE_NAME,
) -> Published:
    """Upload ``pipeline_yaml`` (images set to ``release.image``) as version ``release.version``
    of ``pipeline_name``; a no-op when that version already holds the same spec."""
    doc = PipelineDoc.load(pipeline_yaml).with_image(release.image)
    digest = doc.digest()
    with KfpApi(target) as api:
        pipeline_id = _pipeline_id(api, pipeline_name, create=True)
        assert pipeline_id is not None
        existing = _version(api, pipeline_id, release.version)
        if existing is None:
            description = _describe(release, digest)
            with tempfile.TemporaryDirectory() as tmp:
                package = Path(tmp) / f"{pipeline_name}-{release.version}.yaml"
                package.write_text(doc.to_yaml())
                _, status = api.attempt(
                    f"upload version {release.version} of {pipeline_name}",
                    api.uploads.upload_pipeline_version,
                    str(package),
                    name=release.version,
                    display_name=release.version,
                    pipelineid=pipeline_id,
                    description=description,
                    tolerate=(409,),
                )
            # 409: another publisher of the same version won the race; judge its upload below.
            existing = _version(api, pipeline_id, release.version)
            if existing is None:
                raise KubeflowError(
                    f"uploaded version {release.version} of {pipeline_name} but the KFP API at "
                    f"{target.base} does not list it"
                )
            created = status is None
        else:
            created = False
        stored = _SPEC_DIGEST.search(existing.description or "")
        if stored is None or stored.group(1) != digest:
            if created:
                raise KubeflowError(
                    f"version {release.version} of {pipeline_name} was stored without its spec "
                    "digest; the KFP API dropped the description"
                )
            raise UsageError(
                f"version {release.version} of {pipeline_name} already exists with another "
                f"pipeline spec (image or code differ); publish under another --version"
            )
        if not created:
            logger.info(
                "version %s of %s already published with this spec: nothing to do",
                release.version,
                pipeline_name,
            )
        version_id = existing.pipeline_version_id
    url = f"{target.base}/#/pipelines/details/{pipeline_id}/version/{version_id}"
    logger.info(
        "pipeline %s version %s (%s): %s", pipeline_name, release.version, release.image, url
    )
    return Published(
        pipeline_id=pipeline_id,
        version_id=version_id,
        version=release.version,
        image=release.image,
        created=created,
        url=url,
    )


def _describe(release: Release, digest: str) -> str:
    from rankflow import __version__

    source = f"commit {release.commit}" if release.commit else "no commit (uncommitted tree)"
    return f"rankflow {__version__}, {source}, image {release.image}, spec sha256:{digest}"


def _pipeline_id(api: KfpApi, name: str, *, create: bool) -> str | None:
    import kfp_server_api

    namespace = api.target.namespace
    found, _ = api.attempt(
        f"look up pipeline {name}",
        api.pipelines.pipeline_service_get_pipeline_by_name,
        name,
        namespace=namespace,
        tolerate=(404,),
    )
    if found is not None:
        return str(found.pipeline_id)
    if not create:
        return None
    body = kfp_server_api.V2beta1Pipeline(
        name=name,
        display_name=name,
        description="rankflow: multi-task ranking, from the log to a Triton endpoint",
        namespace=namespace,
    )
    # 409: a concurrent publish created it first; either way it is there now.
    created, _ = api.attempt(
        f"create pipeline {name}",
        api.pipelines.pipeline_service_create_pipeline,
        body,
        tolerate=(409,),
    )
    if created is not None:
        logger.info("created pipeline %s", name)
        return str(created.pipeline_id)
    return _pipeline_id(api, name, create=False)


def _version(api: KfpApi, pipeline_id: str, name: str) -> Any | None:
    for version in api.pages(
        "list pipeline versions",
        api.pipelines.pipeline_service_list_pipeline_versions,
        "pipeline_versions",
        pipeline_id=pipeline_id,
    ):
        if name in (version.name, version.display_name):
            return version
    return None


def _latest_version(api: KfpApi, pipeline_id: str) -> Any | None:
    page = api.call(
        "list pipeline versions",
        api.pipelines.pipeline_service_list_pipeline_versions,
        pipeline_id=pipeline_id,
        page_size=1,
        sort_by="created_at desc",
    )
    return (page.pipeline_versions or [None])[0]


def _experiment_id(api: KfpApi, name: str) -> str:
    import kfp_server_api

    namespace = api.target.namespace
    for experiment in api.pages(
        "list experiments",
        api.experiments.experiment_service_list_experiments,
        "experiments",
        namespace=namespace,
    ):
        if experiment.display_name == name:
            return str(experiment.experiment_id)
    created = api.call(
        f"create experiment {name}",
        api.experiments.experiment_service_create_experiment,
        kfp_server_api.V2beta1Experiment(display_name=name, namespace=namespace),
    )
    logger.info("created experiment %s", name)
    return str(created.experiment_id)


# -- schedule ------------------------------------------------------------------------------------
def check_cron(cron: str) -> str:
    """KFP's cron: six fields, seconds first (``0 0 3 * * *`` is 03:00 every day), or a
    descriptor such as ``@daily``; a five-field (crontab) expression is refused with the fix."""
    cron = " ".join(cron.split())
    if cron in _CRON_DESCRIPTORS or re.match(r"^@every [0-9hms.]+$", cron):
        return cron
    fields_ = cron.split(" ")
    if len(fields_) == 5:
        raise UsageError(
            f"--cron {cron!r} has 5 fields; KFP's cron has 6, seconds first: '0 {cron}'"
        )
    if len(fields_) != 6 or not all(_CRON_FIELD.match(f) for f in fields_):
        raise UsageError(
            f"--cron {cron!r} is not a 6-field cron (seconds minutes hours day-of-month month "
            "day-of-week), e.g. '0 0 3 * * *' for 03:00 every day"
        )
    return cron


@dataclass(frozen=True)
class Scheduled:
    recurring_run_id: str
    name: str
    experiment_id: str
    version: str
    cron: str
    created: bool
    replaced: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, "replaced": list(self.replaced)}, sort_keys=True)


def schedule(
    target: KfpTarget,
    *,
    cron: str,
    name: str,
    arguments: Mapping[str, Any],
    version: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    replace_existing: bool = False,
    pipeline_name: str = PIPELINE_NAME,
) -> Scheduled:
    """A recurring run ``name`` of a published version (default: the newest) in ``experiment``:
    one run at a time, no backfill of missed slots. An existing recurring run of that name with
    the same version, cron and arguments is kept (a no-op); a different one is refused unless
    ``replace_existing``, which creates the new one first and then deletes the old, so the
    schedule has no gap."""
    import kfp_server_api

    cron = check_cron(cron)
    with KfpApi(target) as api:
        pipeline_id = _pipeline_id(api, pipeline_name, create=False)
        if pipeline_id is None:
            raise UsageError(
                f"pipeline {pipeline_name} is not published on {target.base}: run "
                "`rankflow publish` first"
            )
        chosen = (
            _version(api, pipeline_id, version) if version else _latest_version(api, pipeline_id)
        )
        if chosen is None:
            raise UsageError(
                f"pipeline {pipeline_name} has no version {version!r} on {target.base}"
                if version
                else f"pipeline {pipeline_name} has no version on {target.base}: "
                "run `rankflow publish`"
            )
        experiment_id = _experiment_id(api, experiment)
        same_name = [
            r
            for r in api.pages(
                "list recurring runs",
                api.recurring.recurring_run_service_list_recurring_runs,
                "recurring_runs",
                experiment_id=experiment_id,
                namespace=target.namespace,
            )
            if r.display_name == name
        ]
        wanted = {
            "version_id": chosen.pipeline_version_id,
            "cron": cron,
            "parameters": dict(arguments),
        }
        for existing in same_name:
            if _schedule_of(existing) == wanted:
                logger.info("recurring run %s already runs this: nothing to do", name)
                return Scheduled(
                    recurring_run_id=existing.recurring_run_id,
                    name=name,
                    experiment_id=experiment_id,
                    version=chosen.name or chosen.display_name,
                    cron=cron,
                    created=False,
                )
        if same_name and not replace_existing:
            ids = ", ".join(r.recurring_run_id for r in same_name)
            raise UsageError(
                f"recurring run {name!r} already exists in experiment {experiment} ({ids}) with "
                "another version, cron or arguments: pass --replace to swap it for this one"
            )
        version_name = chosen.name or chosen.display_name
        body = kfp_server_api.V2beta1RecurringRun(
            display_name=name,
            description=f"rankflow retraining: {pipeline_name} version {version_name}",
            pipeline_version_reference=kfp_server_api.V2beta1PipelineVersionReference(
                pipeline_id=pipeline_id, pipeline_version_id=chosen.pipeline_version_id
            ),
            runtime_config=kfp_server_api.V2beta1RuntimeConfig(parameters=dict(arguments)),
            trigger=kfp_server_api.V2beta1Trigger(
                cron_schedule=kfp_server_api.V2beta1CronSchedule(cron=cron)
            ),
            # One retraining at a time: two would race to deploy against the same champion.
            max_concurrency="1",
            no_catchup=True,
            mode=kfp_server_api.RecurringRunMode.ENABLE,
            experiment_id=experiment_id,
            namespace=target.namespace,
        )
        created = api.call(
            f"create recurring run {name}",
            api.recurring.recurring_run_service_create_recurring_run,
            body,
        )
        replaced = []
        for old in same_name:
            api.call(
                f"delete the replaced recurring run {old.recurring_run_id}",
                api.recurring.recurring_run_service_delete_recurring_run,
                old.recurring_run_id,
            )
            replaced.append(str(old.recurring_run_id))
    logger.info(
        "recurring run %s (%s) on %s: %s", name, created.recurring_run_id, cron, chosen.name
    )
    return Scheduled(
        recurring_run_id=str(created.recurring_run_id),
        name=name,
        experiment_id=experiment_id,
        version=chosen.name or chosen.display_name,
        cron=cron,
        created=True,
        replaced=tuple(replaced),
    )


def _schedule_of(run: Any) -> dict[str, Any]:
    reference = run.pipeline_version_reference
    trigger = run.trigger
    return {
        "version_id": reference.pipeline_version_id if reference else run.pipeline_version_id,
        "cron": trigger.cron_schedule.cron if trigger and trigger.cron_schedule else None,
        "parameters": dict((run.runtime_config.parameters or {}) if run.runtime_config else {}),
    }


# -- submit --------------------------------------------------------------------------------------
def submit(
    target: KfpTarget,
    *,
    pipeline_yaml: Path,
    arguments: Mapping[str, Any],
    experiment: str = DEFAULT_EXPERIMENT,
    image: str | None = None,
) -> str:
    """Create one run of the compiled pipeline (images set to ``image`` when given); returns the
    run id. Each task keeps its compiled caching option: nothing here overrides them, which would
    reuse a champion comparison, an infra-validation or a deploy from an earlier run."""
    import kfp_server_api

    doc = PipelineDoc.load(pipeline_yaml)
    if image is not None:
        doc = doc.with_image(check_image_reference(image))
    with KfpApi(target) as api:
        experiment_id = _experiment_id(api, experiment)
        run = api.call(
            "create run",
            api.runs.run_service_create_run,
            kfp_server_api.V2beta1Run(
                display_name=f"{PIPELINE_NAME} {', '.join(sorted(doc.images()))}",
                experiment_id=experiment_id,
                pipeline_spec=doc.run_spec(),
                runtime_config=kfp_server_api.V2beta1RuntimeConfig(parameters=dict(arguments)),
            ),
        )
    logger.info("run %s: %s/#/runs/details/%s", run.run_id, target.base, run.run_id)
    return str(run.run_id)
