"""Read an AWS API call off the wire: which service, region, operation, caller and parameters.

The embedded AWS sees raw HTTP. This module names the call the way CloudTrail does, from what every
AWS SDK sends:

* the service and region come from the SigV4 credential scope (``Authorization`` header, or the
  ``X-Amz-Credential`` query parameter of a presigned URL), and so does the access key id;
* the operation comes from ``X-Amz-Target`` (JSON protocols), the ``Action`` parameter (query
  protocols), the path of the Smithy RPC v2 protocol, or, for REST protocols (S3, Lambda, ...),
  the HTTP method and path matched against the ``http.requestUri`` templates of botocore's service
  model (compiled once per service and cached);
* the parameters are parsed with the operation's input shape, by the protocol parsers moto itself
  uses, and named as CloudTrail names them (see :func:`cloudtrail_parameters`).

Unsigned requests carry no service name and are not identified. S3 is matched path-style, which is
what botocore sends to an IP-address endpoint.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import botocore.session
from botocore.model import OperationModel, ServiceModel, Shape, StructureShape
from moto.core.parse import PROTOCOL_PARSERS, RequestParserError
from moto.core.utils import get_service_model as moto_service_model
from werkzeug.datastructures import EnvironHeaders, Headers, MultiDict

__all__ = [
    "HIDDEN",
    "ApiCall",
    "cloudtrail_parameters",
    "identify",
    "request_parameters",
    "service_model",
]

logger = logging.getLogger(__name__)

#: What CloudTrail writes in place of a sensitive parameter's value.
HIDDEN = "HIDDEN_DUE_TO_SECURITY_REASONS"

#: SigV4 signing names that are not (only) the botocore service name, with the candidates to try.
_SIGNING_NAME_SERVICES: dict[str, tuple[str, ...]] = {
    "monitoring": ("cloudwatch",),
    "states": ("stepfunctions",),
    "tagging": ("resourcegroupstaggingapi",),
    "s3": ("s3", "s3control"),
    "ses": ("sesv2", "ses"),
    "email": ("ses", "sesv2"),
    "elasticloadbalancing": ("elbv2", "elb"),
    "elasticfilesystem": ("efs",),
    "es": ("opensearch", "es"),
    "execute-api": ("apigatewaymanagementapi",),
    "dynamodb": ("dynamodb", "dynamodbstreams"),
    "rds": ("rds", "docdb", "neptune"),
    "iot": ("iot",),
    "sso": ("sso-admin",),
}

#: Query parameters that select the API version rather than name a parameter.
_QUERY_PROTOCOL_KEYS = frozenset({"Action", "Version"})

#: REST literal query keys the SDKs may leave out (botocore does for S3's ``x-id``).
_OPTIONAL_LITERAL_QUERY = frozenset({"x-id"})

#: Header-bound members that describe the transport, not the call; CloudTrail does not log them.
_TRANSPORT_HEADER_PREFIXES = ("content-", "x-amz-checksum", "x-amz-sdk-checksum", "expect")

_S3_NAMES = {"Bucket": "bucketName", "Key": "key"}

_CREDENTIAL_RE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/,\s]+)/([^/,\s]+)/aws4_request")
_LABEL_RE = re.compile(r"\{([^}]+)\}")
_RPC_V2_PATH_RE = re.compile(r"/service/[^/]+/operation/([^/?]+)")

_OMIT = object()


@dataclass(frozen=True)
class ApiCall:
    """One AWS API call as the endpoint received it."""

    #: SigV4 signing name ("s3", "monitoring", ...): CloudTrail's eventSource is ``<it>.amazonaws.com``.
    signing_name: str
    region: str
    operation: str
    protocol: str
    access_key_id: str
    #: botocore's name for the service, when its model is known ("cloudwatch" for "monitoring").
    service_name: str | None = None
    #: URI labels of a REST call (``{"Bucket": "b"}``).
    uri_params: Mapping[str, str] | None = None
    #: Literal query keys of the matched REST template (S3 subresources such as ``tagging``).
    subresources: tuple[str, ...] = ()

    @property
    def event_source(self) -> str:
        """CloudTrail's ``eventSource``."""
        return f"{self.signing_name}.amazonaws.com"


def identify(environ: Mapping[str, Any], body: bytes) -> ApiCall | None:
    """Name the call in a WSGI request, or ``None`` when it is unsigned or unrecognised."""
    scope = _credential_scope(environ)
    if scope is None:
        return None
    access_key_id, region, signing_name = scope
    headers = EnvironHeaders(dict(environ))
    candidates = _candidate_services(signing_name)

    target = headers.get("X-Amz-Target")
    if target:
        prefix, _, operation = target.rpartition(".")
        service_name = _pick_json_service(candidates, prefix, operation)
        return ApiCall(signing_name, region, operation, "json", access_key_id, service_name)

    path = str(environ.get("PATH_INFO", ""))
    if headers.get("Smithy-Protocol") == "rpc-v2-cbor":
        match = _RPC_V2_PATH_RE.search(path)
        if match is None:
            return None
        service_name = _pick_service_with(candidates, match.group(1))
        return ApiCall(signing_name, region, match.group(1), "smithy-rpc-v2-cbor", access_key_id, service_name)

    query = _query_pairs(environ)
    form = _form_pairs(environ, body)
    action = dict(query).get("Action") or dict(form).get("Action")
    if action:
        version = dict(query).get("Version") or dict(form).get("Version")
        service_name = _pick_query_service(candidates, action, version)
        protocol = "query"
        if service_name is not None:
            protocol = "ec2" if service_model(service_name).protocol == "ec2" else "query"
        return ApiCall(signing_name, region, action, protocol, access_key_id, service_name)

    method = str(environ.get("REQUEST_METHOD", "GET"))
    best: tuple[tuple[int, int, int], str, _Route, dict[str, str]] | None = None
    for candidate in candidates:
        for route in _routes(candidate).get(method, ()):
            labels = route.match(path, query, headers)
            if labels is not None and (best is None or route.score > best[0]):
                best = (route.score, candidate, route, labels)
    if best is None:
        return None
    _, service_name, route, labels = best
    model = service_model(service_name)
    return ApiCall(
        signing_name,
        region,
        route.operation,
        str(model.resolved_protocol),
        access_key_id,
        service_name,
        labels,
        tuple(key for key, _ in route.literal_query if key not in _OPTIONAL_LITERAL_QUERY),
    )


def request_parameters(call: ApiCall, environ: Mapping[str, Any], body: bytes) -> dict[str, Any] | None:
    """CloudTrail's ``requestParameters`` for a call (best effort; ``None`` when there are none).

    The request is parsed with the operation's input shape by moto's protocol parsers, then named
    as CloudTrail names parameters. When that fails (an unknown service, a malformed body) the raw
    parameters are returned: the JSON body, the form minus ``Action``/``Version``, or the REST
    path labels and query.
    """
    operation = _operation_model(call)
    if operation is not None and call.protocol in PROTOCOL_PARSERS:
        headers = Headers(list(EnvironHeaders(dict(environ)).items()))
        values = MultiDict(_query_pairs(environ) + _form_pairs(environ, body))
        try:
            parsed = PROTOCOL_PARSERS[call.protocol](operation).parse(
                {
                    "method": str(environ.get("REQUEST_METHOD", "GET")),
                    "values": values,
                    "headers": headers,
                    "body": body,
                    "url_path": str(environ.get("PATH_INFO", "")),
                    "url_params": dict(call.uri_params or {}),
                }
            )
        # A body the model does not describe; SyntaxError covers ElementTree's ParseError.
        except (RequestParserError, SyntaxError, ValueError, LookupError, TypeError, AttributeError) as error:
            logger.debug("cannot parse %s %s: %s", call.event_source, call.operation, error)
        else:
            if call.signing_name == "s3":
                return _s3_parameters(cloudtrail_parameters(operation.input_shape, parsed, rename=False), environ, call)
            return cloudtrail_parameters(operation.input_shape, parsed) or None
    return _raw_parameters(call, environ, body) or None


def cloudtrail_parameters(shape: Shape | None, value: Any, *, rename: bool = True) -> dict[str, Any]:
    """Name parsed parameters as CloudTrail does, following the input shape.

    Structure members become lowerCamelCase (``FunctionName`` -> ``functionName``) unless
    ``rename`` is off (S3 keeps its names), map keys are kept (they are data: tag keys, attribute
    names), blobs (payloads, zip files) are left out, other sensitive members are replaced by
    ``HIDDEN_DUE_TO_SECURITY_REASONS``, and timestamps become ISO 8601 strings.
    """
    converted = _convert(shape, value, rename=rename, top_level=True)
    return converted if isinstance(converted, dict) else {}


@functools.cache
def service_model(service_name: str) -> ServiceModel:
    """botocore's model of a service (loaded once)."""
    return _session().get_service_model(service_name)


# --- credential scope and service ----------------------------------------------------------------


def _credential_scope(environ: Mapping[str, Any]) -> tuple[str, str, str] | None:
    authorization = str(environ.get("HTTP_AUTHORIZATION", ""))
    match = _CREDENTIAL_RE.search(authorization)
    if match is None:
        credential = dict(_query_pairs(environ)).get("X-Amz-Credential", "")
        match = _CREDENTIAL_RE.search(f"Credential={credential}")
    if match is None:
        return None
    access_key_id, region, signing_name = match.groups()
    return access_key_id, region, signing_name.lower()


@functools.cache
def _session() -> botocore.session.Session:
    return botocore.session.get_session()


@functools.cache
def _available_services() -> frozenset[str]:
    return frozenset(_session().get_available_services())


@functools.cache
def _candidate_services(signing_name: str) -> tuple[str, ...]:
    names = _SIGNING_NAME_SERVICES.get(signing_name, (signing_name,))
    return tuple(name for name in names if name in _available_services())


def _pick_json_service(candidates: tuple[str, ...], target_prefix: str, operation: str) -> str | None:
    for name in candidates:
        model = service_model(name)
        if model.metadata.get("targetPrefix") == target_prefix and operation in model.operation_names:
            return name
    return _pick_service_with(candidates, operation)


def _pick_query_service(candidates: tuple[str, ...], action: str, version: str | None) -> str | None:
    for name in candidates:
        model = service_model(name)
        if action in model.operation_names and version in (None, model.api_version):
            return name
    return _pick_service_with(candidates, action)


def _pick_service_with(candidates: tuple[str, ...], operation: str) -> str | None:
    for name in candidates:
        if operation in service_model(name).operation_names:
            return name
    return None


def _operation_model(call: ApiCall) -> OperationModel | None:
    # moto's parsers need moto's flavour of the botocore model (same data, a few more traits).
    if call.service_name is None or call.operation not in service_model(call.service_name).operation_names:
        return None
    operation: OperationModel = moto_service_model(call.service_name).operation_model(call.operation)
    return operation


# --- REST routing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Route:
    """One operation's ``http.requestUri`` template, compiled."""

    operation: str
    pattern: re.Pattern[str]
    labels: tuple[str, ...]
    literal_query: tuple[tuple[str, str | None], ...]
    required_query: tuple[str, ...]
    required_headers: tuple[str, ...]
    score_base: tuple[int, int]

    @property
    def score(self) -> tuple[int, int, int]:
        """Prefer the template that demands most of the request, then the most literal one."""
        constraints = len(self.literal_query) + len(self.required_query) + len(self.required_headers)
        return (constraints, *self.score_base)

    def match(self, path: str, query: list[tuple[str, str]], headers: EnvironHeaders) -> dict[str, str] | None:
        found = self.pattern.fullmatch(path)
        if found is None:
            return None
        present = dict(query)
        for key, value in self.literal_query:
            if key not in present:
                if key in _OPTIONAL_LITERAL_QUERY:
                    continue
                return None
            if value is not None and present[key] != value:
                return None
        if any(key not in present for key in self.required_query):
            return None
        if any(name not in headers for name in self.required_headers):
            return None
        return {label: found.group(f"l{index}") for index, label in enumerate(self.labels)}


@functools.cache
def _routes(service_name: str) -> dict[str, tuple[_Route, ...]]:
    model = service_model(service_name)
    if model.resolved_protocol not in ("rest-json", "rest-xml"):
        return {}
    by_method: dict[str, list[_Route]] = {}
    for name in model.operation_names:
        operation = model.operation_model(name)
        http = operation.http
        if "requestUri" not in http:
            continue
        by_method.setdefault(str(http.get("method", "POST")), []).append(_compile(operation))
    return {method: tuple(routes) for method, routes in by_method.items()}


def _compile(operation: OperationModel) -> _Route:
    template = str(operation.http["requestUri"])
    path_template, _, query_template = template.partition("?")
    labels: list[str] = []
    pattern = ""
    position = 0
    literal_length = 0
    label_matches = list(_LABEL_RE.finditer(path_template))
    for index, label in enumerate(label_matches):
        literal = path_template[position : label.start()]
        pattern += re.escape(literal)
        literal_length += len(literal)
        name = label.group(1)
        greedy = name.endswith("+")
        is_last = index == len(label_matches) - 1 and label.end() == len(path_template.rstrip("/"))
        # moto treats a final label as greedy too: ARNs are modelled as plain labels but SDKs do not
        # always encode their slashes.
        pattern += f"(?P<l{index}>.+)" if greedy or is_last else f"(?P<l{index}>[^/]+)"
        labels.append(name.rstrip("+"))
        position = label.end()
    tail = path_template[position:]
    pattern += re.escape(tail.rstrip("/")) + "/?"
    literal_length += len(tail)

    literal_query: list[tuple[str, str | None]] = []
    for part in filter(None, query_template.split("&")):
        key, has_value, value = part.partition("=")
        literal_query.append((key, value if has_value else None))

    required_query: list[str] = []
    required_headers: list[str] = []
    input_shape = operation.input_shape
    if isinstance(input_shape, StructureShape):
        for member_name in input_shape.required_members:
            member = input_shape.members[member_name]
            location = member.serialization.get("location")
            location_name = str(member.serialization.get("name", member_name))
            if location == "querystring":
                required_query.append(location_name)
            elif location == "header":
                required_headers.append(location_name)

    return _Route(
        operation=operation.name,
        pattern=re.compile(pattern),
        labels=tuple(labels),
        literal_query=tuple(literal_query),
        required_query=tuple(required_query),
        required_headers=tuple(required_headers),
        score_base=(literal_length, -len(labels)),
    )


# --- parameters ----------------------------------------------------------------------------------


def _query_pairs(environ: Mapping[str, Any]) -> list[tuple[str, str]]:
    return parse_qsl(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)


def _form_pairs(environ: Mapping[str, Any], body: bytes) -> list[tuple[str, str]]:
    content_type = str(environ.get("CONTENT_TYPE", ""))
    if not body or not content_type.startswith("application/x-www-form-urlencoded"):
        return []
    return parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)


def _convert(shape: Shape | None, value: Any, *, rename: bool, top_level: bool = False) -> Any:
    if shape is None:
        return _json_safe(value)
    if shape.type_name == "blob" or isinstance(value, bytes | bytearray):
        return _OMIT
    if shape.metadata.get("sensitive"):
        return HIDDEN
    if shape.type_name == "structure" and isinstance(value, Mapping) and isinstance(shape, StructureShape):
        if shape.is_document_type:
            return _json_safe(value)
        result: dict[str, Any] = {}
        for name, member_value in value.items():
            member = shape.members.get(name)
            if member is None:
                continue
            if top_level and _is_transport_header(member, name):
                continue
            converted = _convert(member, member_value, rename=rename)
            if converted is not _OMIT:
                result[name[:1].lower() + name[1:] if rename else name] = converted
        return result
    if shape.type_name == "list" and isinstance(value, list):
        member_shape = getattr(shape, "member", None)
        items = (_convert(member_shape, item, rename=rename) for item in value)
        return [item for item in items if item is not _OMIT]
    if shape.type_name == "map" and isinstance(value, Mapping):
        value_shape = getattr(shape, "value", None)
        entries = ((str(k), _convert(value_shape, v, rename=rename)) for k, v in value.items())
        return {k: v for k, v in entries if v is not _OMIT}
    return _json_safe(value)


def _is_transport_header(member: Shape, name: str) -> bool:
    if member.serialization.get("location") != "header":
        return False
    header = str(member.serialization.get("name", name)).lower()
    return header.startswith(_TRANSPORT_HEADER_PREFIXES)


def _json_safe(value: Any) -> Any:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return None
    return value


def _s3_parameters(parameters: dict[str, Any], environ: Mapping[str, Any], call: ApiCall) -> dict[str, Any]:
    # S3 records keep S3's names, except bucketName and key, and carry the Host and subresource keys.
    result: dict[str, Any] = {}
    for key, value in parameters.items():
        result[_S3_NAMES.get(key, key)] = value
    host = environ.get("HTTP_HOST")
    if host:
        result["Host"] = str(host)
    for key in call.subresources:
        result.setdefault(key, "")
    return result


def _raw_parameters(call: ApiCall, environ: Mapping[str, Any], body: bytes) -> dict[str, Any]:
    if call.protocol == "json":
        try:
            loaded = json.loads(body or b"{}")
        except ValueError:
            return {}
        return loaded if isinstance(loaded, dict) else {}
    if call.protocol in ("query", "ec2"):
        pairs = _query_pairs(environ) + _form_pairs(environ, body)
        return {key: value for key, value in pairs if key not in _QUERY_PROTOCOL_KEYS}
    raw: dict[str, Any] = dict(call.uri_params or {})
    raw.update(_query_pairs(environ))
    return raw
