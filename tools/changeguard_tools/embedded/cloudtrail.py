"""CloudTrail for the embedded AWS: every call it serves, recorded as CloudTrail records it.

Recording
---------
:class:`CloudTrailRecorder` is WSGI middleware around moto's server. For every signed call it
identifies (see :mod:`.wire`) it writes a record shaped like CloudTrail's (``eventVersion`` 1.09,
``userIdentity`` resolved from the signing key, ``requestParameters`` named as CloudTrail names
them, ``errorCode``/``errorMessage`` when the call failed) into a :class:`Trail`, before the
response goes back to the caller: once a boto3 call returns, its record is there.

Like CloudTrail, it records failed calls too (with ``errorCode``), and item- and object-level calls
(DynamoDB items, S3 objects, Lambda ``Invoke``, SNS ``Publish``, SQS messages) as data events
(``eventCategory`` "Data", ``managementEvent`` false). Read-only calls are recorded only when
``record_read_only`` is on (CloudTrail records them, flagged ``readOnly``; the suite does not need
them, and they would drown the trail).

LookupEvents
------------
moto has no ``LookupEvents``; :func:`lookup_events` adds it to moto's CloudTrail responses class,
answering from the trail as AWS documents: management events of the caller's account and region
from the last 90 days, newest first, at most one lookup attribute (EventId, EventName, ReadOnly,
Username, ResourceType, ResourceName, EventSource, AccessKeyId), ``StartTime``/``EndTime``
inclusive, ``MaxResults`` 1-50 (default 50), ``NextToken`` bound to the query that issued it.

Where CloudTrail finds a call's resources, and which calls are read-only or data events, is data
(the tables below), not code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import io
import itertools
import json
import logging
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from moto.cloudtrail.responses import CloudTrailResponse
from moto.core.exceptions import JsonRESTError

from changeguard_tools.embedded import identity, wire
from changeguard_tools.embedded.extensions import operation

__all__ = [
    "DATA_EVENTS",
    "EVENT_NAMES",
    "READ_ONLY_OPERATIONS",
    "RESOURCE_FIELDS",
    "TRAIL",
    "CloudTrailRecorder",
    "ResourceField",
    "Subscriber",
    "Trail",
    "TrailRecordError",
    "event_name",
    "is_data_event",
    "is_read_only",
    "lookup",
    "resources_of",
]

logger = logging.getLogger(__name__)

EVENT_VERSION = "1.09"
#: How far back LookupEvents looks, as in AWS.
LOOKUP_WINDOW = timedelta(days=90)
MAX_RESULTS = 50

Record = dict[str, Any]
Subscriber = Callable[[Record], None]

# --- what CloudTrail does with each call (data) ---------------------------------------------------

#: Operation-name prefixes of read-only calls (followed by an upper-case letter or nothing).
READ_ONLY_PREFIXES: tuple[str, ...] = (
    "Get", "Describe", "List", "Lookup", "BatchGet", "Head", "Receive", "Search", "Select",
    "Scan", "Query", "Simulate", "Preview", "Estimate", "Download", "Filter", "Check",
    "Validate", "Test", "Assume",
)  # fmt: skip
#: Read-only calls the prefixes miss (cryptographic calls change nothing).
READ_ONLY_OPERATIONS: frozenset[str] = frozenset(
    {"Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "GenerateRandom",
     "GenerateMac", "VerifyMac", "Sign", "Verify", "ReEncrypt"}
)  # fmt: skip
_READ_ONLY_RE = re.compile(rf"^(?:{'|'.join(READ_ONLY_PREFIXES)})(?:[A-Z0-9]|$)")

#: Data events (item- and object-level calls), by eventSource.
DATA_EVENTS: Mapping[str, frozenset[str]] = {
    "dynamodb.amazonaws.com": frozenset(
        {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems", "GetItem",
         "BatchGetItem", "TransactGetItems", "Query", "Scan", "ExecuteStatement",
         "BatchExecuteStatement", "ExecuteTransaction"}
    ),
    "s3.amazonaws.com": frozenset(
        {"PutObject", "CopyObject", "DeleteObject", "DeleteObjects", "GetObject", "HeadObject",
         "PutObjectAcl", "GetObjectAcl", "PutObjectTagging", "GetObjectTagging", "DeleteObjectTagging",
         "PutObjectRetention", "GetObjectRetention", "PutObjectLegalHold", "GetObjectLegalHold",
         "CreateMultipartUpload", "UploadPart", "UploadPartCopy", "CompleteMultipartUpload",
         "AbortMultipartUpload", "ListParts", "RestoreObject", "SelectObjectContent",
         "GetObjectAttributes"}
    ),
    "lambda.amazonaws.com": frozenset({"Invoke", "InvokeWithResponseStream", "InvokeAsync"}),
    "sns.amazonaws.com": frozenset({"Publish", "PublishBatch"}),
    "sqs.amazonaws.com": frozenset(
        {"SendMessage", "SendMessageBatch", "ReceiveMessage", "DeleteMessage", "DeleteMessageBatch",
         "ChangeMessageVisibility", "ChangeMessageVisibilityBatch"}
    ),
}  # fmt: skip

#: eventNames that differ from the API operation (Lambda's dated names, from its CloudTrail guide).
EVENT_NAMES: Mapping[str, Mapping[str, str]] = {
    "lambda.amazonaws.com": {
        "AddPermission": "AddPermission20150331v2",
        "CreateAlias": "CreateAlias20150331",
        "CreateEventSourceMapping": "CreateEventSourceMapping20150331",
        "CreateFunction": "CreateFunction20150331",
        "DeleteAlias": "DeleteAlias20150331",
        "DeleteEventSourceMapping": "DeleteEventSourceMapping20150331",
        "DeleteFunction": "DeleteFunction20150331",
        "DeleteFunctionConcurrency": "DeleteFunctionConcurrency20171031",
        "GetAlias": "GetAlias20150331",
        "PublishLayerVersion": "PublishLayerVersion20181031",
        "PublishVersion": "PublishVersion20150331",
        "PutFunctionConcurrency": "PutFunctionConcurrency20171031",
        "RemovePermission": "RemovePermission20150331v2",
        "TagResource": "TagResource20170331v2",
        "UntagResource": "UntagResource20170331v2",
        "UpdateAlias": "UpdateAlias20150331",
        "UpdateEventSourceMapping": "UpdateEventSourceMapping20150331",
        "UpdateFunctionCode": "UpdateFunctionCode20150331v2",
        "UpdateFunctionConfiguration": "UpdateFunctionConfiguration20150331v2",
    },
}


@dataclass(frozen=True)
class ResourceField:
    """A ``requestParameters`` field that names a resource of the call (for LookupEvents)."""

    field: str
    resource_type: str
    #: Only for these eventNames (``None``: all of the source's events).
    event_names: frozenset[str] | None = None


_SSM_DOCUMENT_EVENTS = frozenset(
    {"CreateDocument", "UpdateDocument", "DeleteDocument", "UpdateDocumentDefaultVersion",
     "ModifyDocumentPermission"}
)  # fmt: skip

#: Where a call's resources sit in its requestParameters, by eventSource.
RESOURCE_FIELDS: Mapping[str, tuple[ResourceField, ...]] = {
    "s3.amazonaws.com": (ResourceField("bucketName", "AWS::S3::Bucket"),),
    "lambda.amazonaws.com": (ResourceField("functionName", "AWS::Lambda::Function"),),
    "dynamodb.amazonaws.com": (ResourceField("tableName", "AWS::DynamoDB::Table"),),
    "ssm.amazonaws.com": (
        ResourceField("name", "AWS::SSM::Document", _SSM_DOCUMENT_EVENTS),
        ResourceField(
            "name", "AWS::SSM::Parameter", frozenset({"PutParameter", "DeleteParameter", "LabelParameterVersion"})
        ),
        ResourceField("names", "AWS::SSM::Parameter", frozenset({"DeleteParameters"})),
    ),
    "iam.amazonaws.com": (
        ResourceField("roleName", "AWS::IAM::Role"),
        ResourceField("userName", "AWS::IAM::User"),
        ResourceField("policyArn", "AWS::IAM::Policy"),
    ),
    "sns.amazonaws.com": (
        ResourceField("topicArn", "AWS::SNS::Topic"),
        ResourceField("name", "AWS::SNS::Topic", frozenset({"CreateTopic"})),
    ),
    "ec2.amazonaws.com": (
        ResourceField("instanceIds", "AWS::EC2::Instance"),
        ResourceField("instanceId", "AWS::EC2::Instance"),
        ResourceField("groupId", "AWS::EC2::SecurityGroup"),
        ResourceField("groups", "AWS::EC2::SecurityGroup"),
        ResourceField("networkInterfaceId", "AWS::EC2::NetworkInterface"),
        ResourceField("vpcId", "AWS::EC2::VPC"),
    ),
    "codedeploy.amazonaws.com": (
        ResourceField("applicationName", "AWS::CodeDeploy::Application"),
        ResourceField("deploymentGroupName", "AWS::CodeDeploy::DeploymentGroup"),
        ResourceField("deploymentId", "AWS::CodeDeploy::Deployment"),
    ),
    "codepipeline.amazonaws.com": (
        ResourceField("pipelineName", "AWS::CodePipeline::Pipeline"),
        ResourceField("name", "AWS::CodePipeline::Pipeline"),
    ),
    "monitoring.amazonaws.com": (
        ResourceField("alarmName", "AWS::CloudWatch::Alarm"),
        ResourceField("alarmNames", "AWS::CloudWatch::Alarm"),
    ),
    "cloudformation.amazonaws.com": (ResourceField("stackName", "AWS::CloudFormation::Stack"),),
    "events.amazonaws.com": (ResourceField("name", "AWS::Events::Rule"),),
}


def is_read_only(operation_name: str) -> bool:
    """Whether CloudTrail flags a call of this operation ``readOnly``."""
    return operation_name in READ_ONLY_OPERATIONS or _READ_ONLY_RE.match(operation_name) is not None


def is_data_event(event_source: str, operation_name: str) -> bool:
    """Whether CloudTrail logs the call as a data event rather than a management event."""
    return operation_name in DATA_EVENTS.get(event_source, frozenset())


def event_name(event_source: str, operation_name: str) -> str:
    """CloudTrail's ``eventName`` for an operation (Lambda's carry a date)."""
    return EVENT_NAMES.get(event_source, {}).get(operation_name, operation_name)


def resources_of(record: Mapping[str, Any]) -> list[dict[str, str]]:
    """The ``Resources`` LookupEvents shows for a record (best effort, from the tables above)."""
    found: list[dict[str, str]] = []
    for resource in record.get("resources") or []:
        if isinstance(resource, Mapping) and resource.get("type") and resource.get("ARN"):
            found.append({"ResourceType": str(resource["type"]), "ResourceName": str(resource["ARN"])})
    parameters = record.get("requestParameters")
    if not isinstance(parameters, Mapping):
        return found
    name = str(record.get("eventName", ""))
    for spec in RESOURCE_FIELDS.get(str(record.get("eventSource", "")), ()):
        if spec.event_names is not None and name not in spec.event_names:
            continue
        value = parameters.get(spec.field)
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, str) and item:
                found.append({"ResourceType": spec.resource_type, "ResourceName": item})
    return found


# --- the trail ------------------------------------------------------------------------------------


class TrailRecordError(ValueError):
    """A record lacks what every CloudTrail record has."""


@dataclass(frozen=True)
class _Entry:
    seq: int
    time: datetime
    record: Record
    text: str


class Trail:
    """The recorded calls: bounded, in memory, thread-safe, in arrival order.

    Subscribers are called with each new record, in the thread that added it (for recorded calls,
    the server thread serving the call, before the caller gets its response). An exception from a
    subscriber propagates to whoever added the record, after every subscriber has been called.
    """

    def __init__(self, max_records: int = 100_000) -> None:
        self._lock = threading.RLock()
        self._entries: deque[_Entry] = deque(maxlen=max_records)
        self._subscribers: list[Subscriber] = []
        self._seq = itertools.count(1)

    def put(self, record: Mapping[str, Any]) -> Record:
        """Add a record (a recorded call, or one a harness feeds in) and notify subscribers."""
        for key in ("eventID", "eventTime", "eventName", "eventSource"):
            if not record.get(key):
                raise TrailRecordError(f"a CloudTrail record needs {key}")
        stored: Record = dict(record)
        entry = _Entry(0, _parse_event_time(str(stored["eventTime"])), stored, json.dumps(stored))
        with self._lock:
            entry = _Entry(next(self._seq), entry.time, entry.record, entry.text)
            self._entries.append(entry)
            subscribers = list(self._subscribers)
        errors: list[Exception] = []
        for subscriber in subscribers:
            try:
                subscriber(stored)
            except Exception as error:  # noqa: BLE001 - re-raised below, once every subscriber ran
                errors.append(error)
        if errors:
            raise ExceptionGroup("trail subscribers failed", errors)
        return stored

    def records(self) -> list[Record]:
        """Every record held, oldest first. Treat them as read-only."""
        with self._lock:
            return [entry.record for entry in self._entries]

    def clear(self) -> None:
        """Forget every record (subscribers stay)."""
        with self._lock:
            self._entries.clear()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber`` with each new record; returns the function that unsubscribes it."""
        with self._lock:
            self._subscribers.append(subscriber)
        return lambda: self.unsubscribe(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Stop calling ``subscriber`` (a no-op when it is not subscribed)."""
        with self._lock:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _snapshot(self) -> list[_Entry]:
        with self._lock:
            return list(self._entries)


#: The process's trail. moto's state is per process, so the trail of its calls is too.
TRAIL = Trail()


# --- recording ------------------------------------------------------------------------------------

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class CloudTrailRecorder:
    """WSGI middleware that records the calls the wrapped moto server serves into a trail.

    A failure to record (a bug here, or a subscriber's exception) never changes the AWS response:
    it is logged and kept in :attr:`errors` for the test harness to assert on.
    """

    def __init__(self, app: WSGIApp, trail: Trail, *, record_read_only: bool = False) -> None:
        self._app = app
        self.trail = trail
        self.record_read_only = record_read_only
        self.errors: list[Exception] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if str(environ.get("PATH_INFO", "")).startswith("/moto-api"):
            return self._app(environ, start_response)
        event_time = datetime.now(UTC)
        body = _read_body(environ)
        prepared = self._prepare(environ, body, event_time)
        if prepared is None:
            return self._app(environ, start_response)

        captured: list[tuple[str, list[tuple[str, str]]]] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured.append((status, headers))
            return start_response(status, headers, exc_info)

        response = self._app(environ, capture)
        try:
            content = b"".join(response)
        finally:
            close = getattr(response, "close", None)
            if close is not None:
                close()
        if captured:
            status, headers = captured[-1]
            self._record(prepared, int(status.split()[0]), headers, content)
        return [content]

    def _prepare(self, environ: Mapping[str, Any], body: bytes, event_time: datetime) -> Record | None:
        try:
            call = wire.identify(environ, body)
            if call is None:
                return None
            read_only = is_read_only(call.operation)
            if read_only and not self.record_read_only:
                return None
            account_id = identity.account_for(call.access_key_id, environ.get("HTTP_X_MOTO_ACCOUNT_ID"))
            data_event = is_data_event(call.event_source, call.operation)
            return {
                "eventVersion": EVENT_VERSION,
                "userIdentity": identity.user_identity(call.access_key_id, account_id),
                "eventTime": event_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "eventSource": call.event_source,
                "eventName": event_name(call.event_source, call.operation),
                "awsRegion": call.region,
                "sourceIPAddress": str(environ.get("REMOTE_ADDR") or "127.0.0.1"),
                "userAgent": str(environ.get("HTTP_USER_AGENT", "")),
                "requestParameters": wire.request_parameters(call, environ, body),
                "responseElements": None,
                "requestID": None,
                "eventID": str(uuid.uuid4()),
                "readOnly": read_only,
                "eventType": "AwsApiCall",
                "managementEvent": not data_event,
                "recipientAccountId": account_id,
                "eventCategory": "Data" if data_event else "Management",
            }
        except Exception as error:
            logger.exception("cannot record %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            self.errors.append(error)
            return None

    def _record(self, record: Record, status: int, headers: list[tuple[str, str]], content: bytes) -> None:
        lowered = {name.lower(): value for name, value in headers}
        record["requestID"] = lowered.get("x-amzn-requestid") or lowered.get("x-amz-request-id") or str(uuid.uuid4())
        if status >= 400:
            code, message = _error_of(status, lowered, content)
            # CloudTrail writes the error right after userAgent.
            ordered: Record = {}
            for key, value in record.items():
                ordered[key] = value
                if key == "userAgent":
                    ordered["errorCode"] = code
                    if message:
                        ordered["errorMessage"] = message
            record = ordered
        try:
            self.trail.put(record)
        except Exception as error:
            logger.exception("trail subscriber failed for %s", record.get("eventName"))
            self.errors.append(error)


def _read_body(environ: dict[str, Any]) -> bytes:
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    length = str(environ.get("CONTENT_LENGTH") or "").strip()
    if length.isdigit():
        body = stream.read(int(length)) if int(length) else b""
    elif environ.get("wsgi.input_terminated"):
        body = stream.read()
    else:
        body = b""
    environ["wsgi.input"] = io.BytesIO(body)
    return bytes(body)


_XML_CODE_RE = re.compile(rb"<Code>(.*?)</Code>", re.DOTALL)
_XML_MESSAGE_RE = re.compile(rb"<Message>(.*?)</Message>", re.DOTALL)


def _error_of(status: int, headers: Mapping[str, str], content: bytes) -> tuple[str, str | None]:
    code: str | None = None
    message: str | None = None
    try:
        document = json.loads(content) if content.strip().startswith(b"{") else None
    except ValueError:
        document = None
    if isinstance(document, dict):
        code = document.get("__type") or document.get("code") or document.get("Code")
        message = document.get("message") or document.get("Message")
    if not code and headers.get("x-amzn-errortype"):
        code = headers["x-amzn-errortype"]
    if not code:
        found = _XML_CODE_RE.search(content)
        code = html.unescape(found.group(1).decode("utf-8", "replace")).strip() if found else None
    if not message:
        found = _XML_MESSAGE_RE.search(content)
        message = html.unescape(found.group(1).decode("utf-8", "replace")).strip() if found else None
    if not code:
        code = "InternalFailure" if status >= 500 else "UnknownError"
    # "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException" / "Code:http://..."
    code = str(code).rsplit("#", 1)[-1].split(":", 1)[0]
    return code, (str(message) if message else None)


# --- LookupEvents ---------------------------------------------------------------------------------

_ATTRIBUTE_KEYS = frozenset(
    {"EventId", "EventName", "ReadOnly", "Username", "ResourceType", "ResourceName", "EventSource",
     "AccessKeyId"}
)  # fmt: skip


def _error(code: str, message: str) -> JsonRESTError:
    return JsonRESTError(code, message)


def lookup(
    trail: Trail, request: Mapping[str, Any], *, account_id: str, region: str, now: datetime | None = None
) -> dict[str, Any]:
    """Answer a LookupEvents request from ``trail`` for ``account_id`` in ``region``.

    Raises moto's ``JsonRESTError`` with AWS's error codes for invalid requests.
    """
    now = now or datetime.now(UTC)
    attributes = request.get("LookupAttributes") or []
    if not isinstance(attributes, list) or len(attributes) > 1:
        raise _error("InvalidLookupAttributesException", "You can only specify one lookup attribute.")
    attribute: tuple[str, str] | None = None
    if attributes:
        key = str(attributes[0].get("AttributeKey", ""))
        value = str(attributes[0].get("AttributeValue", ""))
        if key not in _ATTRIBUTE_KEYS:
            raise _error("InvalidLookupAttributesException", f"Invalid attribute key: {key}")
        if not value:
            raise _error("InvalidLookupAttributesException", "The attribute value must not be empty.")
        attribute = (key, value)

    start = _parse_request_time(request.get("StartTime"))
    end = _parse_request_time(request.get("EndTime"))
    if start is not None and end is not None and start > end:
        raise _error("InvalidTimeRangeException", "Start time must be before end time.")

    max_results = request.get("MaxResults")
    if max_results is None:
        limit = MAX_RESULTS
    elif isinstance(max_results, int) and 1 <= max_results <= MAX_RESULTS:
        limit = max_results
    else:
        raise _error("InvalidMaxResultsException", f"MaxResults must be between 1 and {MAX_RESULTS}.")

    category = request.get("EventCategory")
    if category not in (None, "insight"):
        raise _error("InvalidEventCategoryException", f"Invalid event category: {category}")

    fingerprint = hashlib.sha256(
        json.dumps([attribute, request.get("StartTime"), request.get("EndTime"), category]).encode()
    ).hexdigest()[:16]
    cursor = _decode_token(request.get("NextToken"), fingerprint)

    if category == "insight":  # the embedded AWS has no Insights events
        return {"Events": []}

    oldest = now - LOOKUP_WINDOW
    matching = [
        entry
        for entry in trail._snapshot()
        if entry.time >= oldest
        and _in_scope(entry.record, account_id, region)
        and (start is None or entry.time >= start)
        and (end is None or entry.time <= end)
        and (attribute is None or _has_attribute(entry.record, *attribute))
    ]
    matching.sort(key=lambda entry: (entry.time, entry.seq), reverse=True)
    if cursor is not None:
        matching = [entry for entry in matching if (entry.time, entry.seq) < cursor]
    page, rest = matching[:limit], matching[limit:]
    result: dict[str, Any] = {"Events": [_event(entry) for entry in page]}
    if rest:
        last = page[-1]
        result["NextToken"] = _encode_token(last.time, last.seq, fingerprint)
    return result


@operation(CloudTrailResponse, "LookupEvents")
def lookup_events(self: Any) -> str:
    """CloudTrail ``LookupEvents`` over the calls the embedded AWS served."""
    request = json.loads(self.body or "{}")
    return json.dumps(lookup(TRAIL, request, account_id=self.current_account, region=self.region))


def _in_scope(record: Mapping[str, Any], account_id: str, region: str) -> bool:
    if record.get("eventCategory", "Management") != "Management" or record.get("managementEvent") is False:
        return False
    return bool(
        record.get("recipientAccountId", account_id) == account_id and record.get("awsRegion", region) == region
    )


def _has_attribute(record: Mapping[str, Any], key: str, value: str) -> bool:
    user = record.get("userIdentity") or {}
    if key == "EventId":
        return bool(record.get("eventID") == value)
    if key == "EventName":
        return bool(record.get("eventName") == value)
    if key == "EventSource":
        return bool(record.get("eventSource") == value)
    if key == "ReadOnly":
        return str(record.get("readOnly", False)).lower() == value.lower()
    if key == "Username":
        return bool(identity.username_of(user) == value)
    if key == "AccessKeyId":
        return bool(user.get("accessKeyId") == value)
    if key == "ResourceType":
        return any(resource["ResourceType"] == value for resource in resources_of(record))
    return any(resource["ResourceName"] == value for resource in resources_of(record))


def _event(entry: _Entry) -> dict[str, Any]:
    record = entry.record
    user = record.get("userIdentity") or {}
    event: dict[str, Any] = {
        "EventId": record.get("eventID"),
        "EventName": record.get("eventName"),
        "ReadOnly": str(record.get("readOnly", False)).lower(),
        "EventTime": entry.time.timestamp(),
        "EventSource": record.get("eventSource"),
        "Resources": resources_of(record),
        "CloudTrailEvent": entry.text,
    }
    if user.get("accessKeyId"):
        event["AccessKeyId"] = user["accessKeyId"]
    username = identity.username_of(user)
    if username:
        event["Username"] = username
    return event


def _parse_event_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise TrailRecordError(f"eventTime is not ISO 8601: {text!r}") from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _parse_request_time(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError):
        pass
    try:
        return _parse_event_time(str(value))
    except TrailRecordError as error:
        raise _error("InvalidTimeRangeException", f"Invalid time: {value!r}") from error


def _encode_token(time: datetime, seq: int, fingerprint: str) -> str:
    payload = json.dumps({"t": time.isoformat(), "s": seq, "q": fingerprint}).encode()
    return base64.urlsafe_b64encode(payload).decode()


def _decode_token(token: Any, fingerprint: str) -> tuple[datetime, int] | None:
    if token is None:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(str(token).encode()))
        if payload["q"] != fingerprint:
            raise _error("InvalidNextTokenException", "The token was issued for a request with different parameters.")
        return datetime.fromisoformat(str(payload["t"])), int(payload["s"])
    except (ValueError, KeyError, TypeError, binascii.Error) as error:
        raise _error("InvalidNextTokenException", "Invalid NextToken.") from error
