"""An in-process HTTP server speaking the KFP v2beta1 REST API, checked against the API's own
definitions, for the publish / schedule / submit tests (no KFP API server runs here).

It is not a stand-in written to agree with the client. What it accepts comes from ``kfp_server_api``
(the API's generated client, built from KFP's OpenAPI spec) and ``kfp-pipeline-spec``:

* the routes, their query parameters and body models are read from the source of every
  ``kfp_server_api`` service method, so a path, verb or parameter the API does not have is refused;
* every JSON body is deserialized into its ``kfp_server_api`` model and serialized back: a field
  the model does not define (a typo, a field from another API version) is refused;
* an uploaded pipeline package is parsed into ``PipelineSpec`` / ``PlatformSpec`` protobufs, which
  refuse unknown fields and wrong types;
* answers are ``kfp_server_api`` models serialized the same way, so the client parses real shapes.

Semantics follow KFP's API server where the client depends on them: names unique per pipeline /
namespace (409), ``GetPipelineByName`` 404, pagination with a page-size cap, ``sort_by``,
recurring runs needing a trigger, ``max_concurrency`` in [1, 10] and an existing version,
multi-user mode requiring a namespace and a bearer token. Anything it refuses is recorded in
``violations`` as well as answered with 400, so a test can assert that nothing was refused.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import inspect
import itertools
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit


@dataclass(frozen=True)
class Route:
    operation: str
    method: str
    template: str
    pattern: re.Pattern[str]
    query: frozenset[str]
    body_model: str | None
    files: frozenset[str]
    response: str | None


def api_routes() -> dict[str, Route]:
    """Every operation of every ``kfp_server_api`` service, read from its generated source."""
    import kfp_server_api.api as apis

    routes: dict[str, Route] = {}
    for module_name in dir(apis):
        cls = getattr(apis, module_name)
        if not inspect.isclass(cls) or not module_name.endswith("Api"):
            continue
        for name, fn in inspect.getmembers(cls, inspect.isfunction):
            if not name.endswith("_with_http_info"):
                continue
            source = inspect.getsource(fn)
            call = re.search(r"call_api\(\s*'([^']+)', '(\w+)'", source)
            assert call, name
            template, method = call.groups()
            body = re.search(r"body_params = local_var_params\['(\w+)'\]", source)
            body_model = None
            if body:
                typed = re.search(rf":type {body.group(1)}: (\w+)", source)
                body_model = typed.group(1) if typed else "object"
            response = re.search(r"response_type='(\w+)'", source)
            # {pipeline.pipeline_id} style placeholders hold one path segment each.
            pattern = re.compile(
                "^" + re.sub(r"\\\{[^}]+\\\}", "([^/]+)", re.escape(template)) + "$"
            )
            op = name.removesuffix("_with_http_info")
            routes[op] = Route(
                operation=op,
                method=method,
                template=template,
                pattern=pattern,
                query=frozenset(re.findall(r"query_params\.append\(\('(\w+)'", source)),
                body_model=body_model,
                files=frozenset(re.findall(r"local_var_files\['(\w+)'\] =", source)),
                response=response.group(1) if response else None,
            )
    return routes


class Refused(Exception):
    def __init__(self, status: int, message: str, *, violation: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.violation = violation


@dataclass
class KfpState:
    pipelines: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, list[Any]] = field(default_factory=dict)
    experiments: dict[str, Any] = field(default_factory=dict)
    recurring: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, Any] = field(default_factory=dict)
    #: Every request, as (operation, parsed JSON body or uploaded YAML text, query parameters).
    calls: list[tuple[str, Any, dict[str, str]]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)


class FakeKfpApi:
    """``with FakeKfpApi() as api: api.url`` -- a server on 127.0.0.1 with an ephemeral port."""

    #: KFP caps page sizes; a small cap here makes every list call page.
    max_page_size = 2

    def __init__(self, *, token: str | None = None, multi_user: bool = False) -> None:
        from kfp_server_api import ApiClient

        self.token = token
        self.multi_user = multi_user
        self.state = KfpState()
        self.routes = api_routes()
        self._models = ApiClient()
        self._ids = itertools.count(1)
        self._clock = itertools.count(1)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> FakeKfpApi:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def _serve(self) -> None:
                status, payload = fake.handle(self.command, self.path, self.headers, self._body())
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            do_GET = do_POST = do_DELETE = do_PATCH = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def operations(self) -> list[str]:
        return [op for op, _, _ in self.state.calls]

    # -- dispatch ---------------------------------------------------------------------------------
    def handle(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, Any]:
        with self._lock:
            try:
                route, ids, query = self._route(method, path)
                self._authorize(headers)
                payload = self._payload(route, headers, body)
                self.state.calls.append((route.operation, payload, query))
                handler = getattr(self, f"_{route.operation}", None)
                if handler is None:
                    raise Refused(501, f"{route.operation} is not served here", violation=True)
                result = handler(*ids, body=payload, query=query)
                return 200, self._models.sanitize_for_serialization(result) if result else {}
            except Refused as err:
                if err.violation:
                    self.state.violations.append(str(err))
                return err.status, {"error": str(err), "code": err.status, "message": str(err)}

    def _route(self, method: str, path: str) -> tuple[Route, list[str], dict[str, str]]:
        parts = urlsplit(path)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        query = dict(pairs)
        for route in self.routes.values():
            match = route.pattern.match(parts.path)
            if route.method == method and match:
                unknown = {k for k, _ in pairs} - route.query
                if unknown:
                    raise Refused(
                        400,
                        f"{route.operation} has no query parameter {sorted(unknown)}",
                        violation=True,
                    )
                return route, [unquote(g) for g in match.groups()], query
        raise Refused(404, f"no KFP API route {method} {parts.path}", violation=True)

    def _authorize(self, headers: Any) -> None:
        if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
            raise Refused(401, "Unauthenticated: request has no valid bearer token")

    def _payload(self, route: Route, headers: Any, body: bytes) -> Any:
        if route.files:
            return self._upload(route, headers, body)
        if route.body_model is None:
            if body:
                raise Refused(400, f"{route.operation} takes no body", violation=True)
            return None
        try:
            data = json.loads(body)
        except ValueError as err:
            raise Refused(400, f"{route.operation}: body is not JSON", violation=True) from err
        model = self._models.deserialize(_Raw(body), route.body_model)
        again = self._models.sanitize_for_serialization(model)
        if again != data:
            extra = sorted(set(data) - set(again)) if isinstance(data, dict) else data
            raise Refused(
                400,
                f"{route.operation}: body fields not in {route.body_model}: {extra}",
                violation=True,
            )
        return model

    def _upload(self, route: Route, headers: Any, body: bytes) -> str:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + headers.get("Content-Type", "").encode() + b"\r\n\r\n" + body
        )
        parts = {
            p.get_param("name", header="content-disposition"): p.get_payload(decode=True)
            for p in message.iter_parts()
        }
        missing = route.files - set(parts)
        if missing:
            raise Refused(400, f"{route.operation}: no file part {sorted(missing)}", violation=True)
        text = parts["uploadfile"].decode()
        _parse_package(text)
        return text

    # -- helpers ----------------------------------------------------------------------------------
    def _id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids):04d}"

    def _namespace(self, namespace: str | None, what: str) -> str:
        if self.multi_user and not namespace:
            raise Refused(400, f"Invalid input error: {what} needs a namespace in multi-user mode")
        return namespace or ""

    def _page(self, items: list[Any], query: dict[str, str], key: str, response: str) -> Any:
        import kfp_server_api

        if query.get("sort_by") == "created_at desc":
            items = sorted(items, key=lambda i: i.created_at_order, reverse=True)
        elif query.get("sort_by"):
            raise Refused(400, f"cannot sort by {query['sort_by']!r}")
        size = min(int(query.get("page_size") or self.max_page_size), self.max_page_size)
        start = int(query.get("page_token") or 0)
        page = [i.model for i in items[start : start + size]]
        more = start + size < len(items)
        return getattr(kfp_server_api, response)(
            **{key: page, "next_page_token": str(start + size) if more else None},
            total_size=len(items),
        )

    def _stamp(self, model: Any) -> _Stored:
        return _Stored(model=model, created_at_order=next(self._clock))

    # -- pipelines --------------------------------------------------------------------------------
    def _pipeline_service_create_pipeline(self, *, body: Any, query: dict[str, str]) -> Any:
        namespace = body.namespace or ""
        if not body.name and not body.display_name:
            raise Refused(400, "Invalid input error: pipeline name is empty")
        name = body.name or body.display_name
        if any(
            p.model.name == name and (p.model.namespace or "") == namespace
            for p in self.state.pipelines.values()
        ):
            raise Refused(409, f"Already exist error: pipeline {name} already exists")
        body.pipeline_id = self._id("pipeline")
        body.name = name
        self.state.pipelines[body.pipeline_id] = self._stamp(body)
        self.state.versions[body.pipeline_id] = []
        return body

    def _pipeline_service_get_pipeline_by_name(
        self, name: str, *, body: Any, query: dict[str, str]
    ) -> Any:
        namespace = query.get("namespace", "")
        for stored in self.state.pipelines.values():
            if stored.model.name == name and (stored.model.namespace or "") == namespace:
                return stored.model
        raise Refused(404, f"Not found: pipeline {name} in namespace {namespace!r}")

    def _upload_pipeline_version(self, *, body: str, query: dict[str, str]) -> Any:
        import kfp_server_api

        pipeline_id = query.get("pipelineid", "")
        if pipeline_id not in self.state.pipelines:
            raise Refused(404, f"Not found: pipeline {pipeline_id!r}")
        name = query.get("name") or query.get("display_name")
        if not name:
            raise Refused(400, "Invalid input error: pipeline version name is empty")
        if any(v.model.name == name for v in self.state.versions[pipeline_id]):
            raise Refused(409, f"Already exist error: pipeline version {name} already exists")
        spec, _ = _parse_package(body)
        version = kfp_server_api.V2beta1PipelineVersion(
            pipeline_id=pipeline_id,
            pipeline_version_id=self._id("version"),
            name=name,
            display_name=query.get("display_name") or name,
            description=query.get("description"),
            pipeline_spec=spec,
        )
        self.state.versions[pipeline_id].append(self._stamp(version))
        return version

    def _pipeline_service_list_pipeline_versions(
        self, pipeline_id: str, *, body: Any, query: dict[str, str]
    ) -> Any:
        if pipeline_id not in self.state.pipelines:
            raise Refused(404, f"Not found: pipeline {pipeline_id!r}")
        if query.get("filter"):
            raise Refused(400, "this fake serves unfiltered version lists only", violation=True)
        return self._page(
            self.state.versions[pipeline_id],
            query,
            "pipeline_versions",
            "V2beta1ListPipelineVersionsResponse",
        )

    # -- experiments ------------------------------------------------------------------------------
    def _experiment_service_list_experiments(self, *, body: Any, query: dict[str, str]) -> Any:
        namespace = self._namespace(query.get("namespace"), "listing experiments")
        if query.get("filter"):
            raise Refused(400, "this fake serves unfiltered experiment lists only", violation=True)
        items = [
            e for e in self.state.experiments.values() if (e.model.namespace or "") == namespace
        ]
        return self._page(items, query, "experiments", "V2beta1ListExperimentsResponse")

    def _experiment_service_create_experiment(self, *, body: Any, query: dict[str, str]) -> Any:
        namespace = self._namespace(body.namespace, "creating an experiment")
        if not body.display_name:
            raise Refused(400, "Invalid input error: experiment name is empty")
        if any(
            e.model.display_name == body.display_name and (e.model.namespace or "") == namespace
            for e in self.state.experiments.values()
        ):
            raise Refused(409, f"Already exist error: experiment {body.display_name}")
        body.experiment_id = self._id("experiment")
        self.state.experiments[body.experiment_id] = self._stamp(body)
        return body

    # -- recurring runs ---------------------------------------------------------------------------
    def _recurring_run_service_create_recurring_run(
        self, *, body: Any, query: dict[str, str]
    ) -> Any:
        if body.experiment_id not in self.state.experiments:
            raise Refused(404, f"Not found: experiment {body.experiment_id!r}")
        self._check_source(body)
        trigger = body.trigger
        if trigger is None or (trigger.cron_schedule is None) == (
            trigger.periodic_schedule is None
        ):
            raise Refused(
                400, "Invalid input error: a recurring run needs one cron or periodic trigger"
            )
        if trigger.cron_schedule is not None:
            cron = trigger.cron_schedule.cron or ""
            if len(cron.split()) != 6 and not cron.startswith("@"):
                raise Refused(400, f"Invalid input error: cron {cron!r} needs 6 fields")
        concurrency = int(body.max_concurrency or 0)
        if not 1 <= concurrency <= 10:
            raise Refused(400, "Invalid input error: max concurrency must be in [1, 10]")
        experiment = self.state.experiments[body.experiment_id].model
        body.namespace = experiment.namespace
        body.recurring_run_id = self._id("recurring")
        self.state.recurring[body.recurring_run_id] = self._stamp(body)
        return body

    def _recurring_run_service_list_recurring_runs(
        self, *, body: Any, query: dict[str, str]
    ) -> Any:
        self._namespace(query.get("namespace"), "listing recurring runs")
        if query.get("filter"):
            raise Refused(
                400, "this fake serves unfiltered recurring-run lists only", violation=True
            )
        items = [
            r
            for r in self.state.recurring.values()
            if not query.get("experiment_id") or r.model.experiment_id == query["experiment_id"]
        ]
        return self._page(items, query, "recurring_runs", "V2beta1ListRecurringRunsResponse")

    def _recurring_run_service_delete_recurring_run(
        self, recurring_run_id: str, *, body: Any, query: dict[str, str]
    ) -> Any:
        if self.state.recurring.pop(recurring_run_id, None) is None:
            raise Refused(404, f"Not found: recurring run {recurring_run_id!r}")
        return None

    # -- runs -------------------------------------------------------------------------------------
    def _run_service_create_run(self, *, body: Any, query: dict[str, str]) -> Any:
        if body.experiment_id and body.experiment_id not in self.state.experiments:
            raise Refused(404, f"Not found: experiment {body.experiment_id!r}")
        self._check_source(body)
        body.run_id = self._id("run")
        self.state.runs[body.run_id] = self._stamp(body)
        return body

    def _check_source(self, body: Any) -> None:
        """A run or recurring run names a stored version or carries a pipeline spec."""
        reference = body.pipeline_version_reference
        if reference is not None:
            versions = self.state.versions.get(reference.pipeline_id or "", [])
            if not any(
                v.model.pipeline_version_id == reference.pipeline_version_id for v in versions
            ):
                raise Refused(404, f"Not found: pipeline version {reference.pipeline_version_id!r}")
        elif body.pipeline_spec is not None:
            spec = body.pipeline_spec
            if "pipeline_spec" in spec:
                _parse_spec(spec["pipeline_spec"], spec.get("platform_spec"))
            else:
                _parse_spec(spec, None)
        else:
            raise Refused(400, "Invalid input error: neither a pipeline version nor a spec")


@dataclass
class _Stored:
    model: Any
    created_at_order: int


class _Raw:
    """What ``ApiClient.deserialize`` reads: an object with ``.data``."""

    def __init__(self, data: bytes) -> None:
        self.data = data


def _parse_package(text: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    import yaml

    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise Refused(400, f"Invalid input error: package is not YAML: {err}") from err
    if not docs:
        raise Refused(400, "Invalid input error: empty package")
    platform: dict[str, Any] = {}
    for doc in docs[1:]:
        platform.update(doc)
    _parse_spec(docs[0], platform or None)
    return docs[0], platform or None


def _parse_spec(spec: dict[str, Any], platform: dict[str, Any] | None) -> None:
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    try:
        json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
        if platform:
            json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
    except json_format.ParseError as err:
        raise Refused(
            400, f"Invalid input error: not a pipeline spec: {err}", violation=True
        ) from err


@contextlib.contextmanager
def running(**options: Any) -> Iterator[FakeKfpApi]:
    with FakeKfpApi(**options) as api:
        yield api
