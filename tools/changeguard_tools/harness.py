"""Run the suite's handlers in-process, wired exactly as template.yaml wires them.

Events are routed by the template's own rule patterns, each handler runs with its
template environment and its own role's identity, stream-triggered functions are fed from
the ledger's stream through the event source mapping's filter, and alerts are read from a
queue subscribed to the alert topic, as a subscriber would see them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import ModuleType
from typing import Any, TextIO

import boto3
from botocore.config import Config

from changeguard_tools.patterns import compile_pattern
from changeguard_tools.provision import Stack, provision
from changeguard_tools.template import Context, FunctionSpec, Template

ACCOUNT = "123456789012"
REGION = "us-east-1"
_CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


class _LiveStdout(io.TextIOBase):
    """A stdout that forwards every write to the current ``sys.stdout``."""

    def write(self, text: str) -> int:
        target = sys.stdout if sys.stdout is not self else sys.__stdout__
        return target.write(text) if target is not None else len(text)

    def flush(self) -> None:
        target = sys.stdout if sys.stdout is not self else sys.__stdout__
        if target is not None:
            target.flush()


LIVE_STDOUT = _LiveStdout()


class FixedClock:
    """A clock that stands still (``--now``) until the scenario moves it (``set``/``advance``)."""

    def __init__(self, at: datetime) -> None:
        self._at = at if at.tzinfo else at.replace(tzinfo=UTC)

    def now(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> None:
        self._at = at if at.tzinfo else at.replace(tzinfo=UTC)


@dataclass
class LambdaContext:
    """What Lambda passes as ``context``, enough for Powertools."""

    function_name: str
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = ""
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "local"
    remaining_ms: int = 30_000  # what the invocation has left when it starts

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@dataclass
class Invocation:
    function: str
    result: Any = None
    error: str | None = None


@dataclass
class ReceivedAlert:
    function: str
    subject: str
    severity: str
    verdict: str | None
    kind: str
    alert_id: str
    attributes: dict[str, str]
    body: dict[str, Any]


class Harness:
    """One stack in one endpoint: provision it, route events, invoke handlers, collect alerts."""

    def __init__(
        self,
        endpoint_url: str | None,
        *,
        template: Template | None = None,
        parameters: Mapping[str, Any] | None = None,
        clock: FixedClock | None = None,
        log_stream: TextIO | None = None,
        stack_name: str = "changeguard-local",
    ) -> None:
        self.endpoint_url = endpoint_url
        self.template = template or Template()
        self.ctx: Context = self.template.context(parameters, stack_name=stack_name, account=ACCOUNT, region=REGION)
        self.clock = clock
        self.log_stream = log_stream or sys.stderr
        self.remaining_ms = 30_000  # the time each invocation has left when it starts (its timeout)
        self.stack: Stack | None = None
        self.functions: dict[str, FunctionSpec] = {}
        self._modules: dict[str, ModuleType] = {}
        self._credentials: dict[str, dict[str, str]] = {}
        self._client_caches: dict[str, dict[Any, Any]] = {}
        self._stream_iterators: dict[str, list[str]] = {}
        self._lock = threading.RLock()
        self._matchers: list[tuple[str, str, Any]] = []  # (function, rule, matcher), template order
        self._admin_clients: dict[str, Any] = {}

    # -- set-up ---------------------------------------------------------------------------
    def admin_client(self, service: str) -> Any:
        """An operator's client (not a function's identity); one per service, reused."""
        found = self._admin_clients.get(service)
        if found is None:
            found = self._admin_clients[service] = self._new_admin_client(service)
        return found

    def _new_admin_client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - the embedded AWS accepts any key
            config=Config(retries={"mode": "standard", "max_attempts": 3}),
        )

    def provision(self) -> Stack:
        os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
        self.stack = provision(self.template, self.ctx, self.admin_client)
        self.functions = self.template.functions(self.ctx)
        self._matchers = [
            (spec.logical_id, rule.name, compile_pattern(rule.pattern))
            for spec in self.functions.values()
            for rule in spec.rules
        ]
        return self.stack

    def put_parameter(self, name: str, value: str) -> None:
        """Change a tunable policy value (as an operator would with ssm put-parameter)."""
        path = str(self.functions[next(iter(self.functions))].environment["PARAMETER_PATH"])
        self.admin_client("ssm").put_parameter(Name=path + name, Value=value, Type="String", Overwrite=True)
        self._clear_parameter_cache()

    @staticmethod
    def _clear_parameter_cache() -> None:
        from aws_lambda_powertools.utilities import parameters

        parameters.clear_caches()  # type: ignore[no-untyped-call]

    # -- routing --------------------------------------------------------------------------
    def route(self, event: Mapping[str, Any]) -> list[str]:
        """The functions whose rules match ``event`` (each function once, template order)."""
        routed: list[str] = []
        for function, _, matcher in self._matchers:
            if function not in routed and matcher(event):
                routed.append(function)
        return routed

    def matching_rules(self, event: Mapping[str, Any]) -> list[str]:
        """Every rule that matches ``event``, as ``<function>.<rule>`` (template order)."""
        return [f"{function}.{rule}" for function, rule, matcher in self._matchers if matcher(event)]

    # -- invocation -----------------------------------------------------------------------
    def _identity(self, function: str) -> dict[str, str]:
        found = self._credentials.get(function)
        if found is None:
            assert self.stack is not None
            creds = self.admin_client("sts").assume_role(
                RoleArn=self.stack.function_roles[function],
                RoleSessionName=f"{self.ctx.stack_name}-{function}"[:64],
            )["Credentials"]
            found = {
                "AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
                "AWS_SESSION_TOKEN": creds["SessionToken"],
            }
            self._credentials[function] = found
        return found

    @contextlib.contextmanager
    def _as_function(self, spec: FunctionSpec) -> Iterator[None]:
        """The function's environment, identity and client cache, as in its own Lambda sandbox."""
        from changeguard.adapters import clients

        saved = {k: os.environ.get(k) for k in (*spec.environment, *_CREDENTIAL_KEYS, "AWS_ENDPOINT_URL")}
        saved_cache = clients._clients
        os.environ.update({k: str(v) for k, v in spec.environment.items()})
        os.environ.update(self._identity(spec.logical_id))
        if self.endpoint_url:  # None: an in-process AWS (moto's mock_aws) answers instead
            os.environ["AWS_ENDPOINT_URL"] = self.endpoint_url
        os.environ["AWS_LAMBDA_FUNCTION_NAME"] = f"{self.ctx.stack_name}-{spec.logical_id}"
        clients._clients = self._client_caches.setdefault(spec.logical_id, {})
        # botocore caches resolved credentials on the session: without a fresh one, a client created
        # for this function would sign as whichever function created the first client (issue 5).
        clients._session.cache_clear()
        try:
            with contextlib.redirect_stdout(self.log_stream):
                yield
        finally:
            clients._clients = saved_cache
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def function_environment(self, function: str) -> dict[str, str]:
        """Everything a separate process needs to run ``function`` as the harness does."""
        env = {k: str(v) for k, v in self.functions[function].environment.items()}
        env.update(self._identity(function))
        if self.endpoint_url:
            env["AWS_ENDPOINT_URL"] = self.endpoint_url
        env["AWS_DEFAULT_REGION"] = self.ctx.region
        env["AWS_LAMBDA_FUNCTION_NAME"] = f"{self.ctx.stack_name}-{function}"
        return env

    def module(self, function: str) -> ModuleType:
        found = self._modules.get(function)
        if found is not None:
            return found
        spec = self.functions[function]
        module_name, _, _ = spec.handler.partition(".")
        path = spec.code_uri / f"{module_name}.py"
        loader_spec = importlib.util.spec_from_file_location(f"changeguard_fn_{spec.name}", path)
        if loader_spec is None or loader_spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(loader_spec)
        with self._as_function(spec):
            # Powertools' Logger binds the stream it sees at construction (module import), and
            # loggers of one service name share their handler across harnesses in a process: give
            # it a stream that writes to whatever stdout is at write time.
            with contextlib.redirect_stdout(LIVE_STDOUT):
                loader_spec.loader.exec_module(module)
            if self.clock is not None and hasattr(module, "build_service"):
                with contextlib.suppress(Exception):
                    service = module.build_service()
                    if hasattr(service, "clock"):
                        service.clock = self.clock
        self._modules[function] = module
        return module

    def refresh_clock(self) -> None:
        """Give every built service the harness clock (after ``--now`` or a scenario clock step)."""
        for function, module in self._modules.items():
            if self.clock is None or not hasattr(module, "build_service"):
                continue
            with self._as_function(self.functions[function]):
                service = module.build_service()
            if hasattr(service, "clock"):
                service.clock = self.clock

    def invoke(self, function: str, event: Any) -> Invocation:
        """Invoke one function in-process, as ``sam local invoke`` would, and report its result."""
        with self._lock:
            spec = self.functions[function]
            try:
                module = self.module(function)
                handler = getattr(module, spec.handler.partition(".")[2])
                ctx = LambdaContext(
                    function_name=f"{self.ctx.stack_name}-{function}",
                    invoked_function_arn=self.ctx.attrs.get((function, "Arn"), ""),
                    remaining_ms=self.remaining_ms,
                )
                with self._as_function(spec):
                    result = handler(event, ctx)
            except Exception as exc:  # noqa: BLE001 - the harness reports every handler failure
                return Invocation(function, error=f"{type(exc).__name__}: {exc}")
            if isinstance(result, dict) and result.get("rejected"):
                return Invocation(function, result=result, error=f"{result['error_type']}: {result['error']}")
            return Invocation(function, result=result)

    def scheduled_event(self, function: str, rule: str | None = None) -> dict[str, Any]:
        """The "Scheduled Event" EventBridge sends a function on its schedule."""
        spec = self.functions[function]
        name = rule or (spec.schedules[0] if spec.schedules else "Schedule")
        now = self.clock.now() if self.clock else datetime.now(UTC)
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": self.ctx.account,
            "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self.ctx.region,
            "resources": [f"arn:aws:events:{self.ctx.region}:{self.ctx.account}:rule/{self.ctx.stack_name}-{name}"],
            "detail": {},
        }

    def run_schedule(
        self, function: str, rule: str | None = None, event: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Invoke a scheduled function as its schedule would, then publish what it alerted.

        ``event``: an earlier run's event (from :meth:`scheduled_event`), as Lambda's retry of a failed
        run delivers it again."""
        inv = self.invoke(function, event or self.scheduled_event(function, rule))
        return self._collect([function], [inv])

    # -- SNS subscriptions (issue 5) --------------------------------------------------------
    def publish(self, topic: str, message: str, subject: str | None = None) -> dict[str, Any]:
        """Publish to a template topic (as CloudWatch does to an alarm's topic) and deliver the
        message to every function the template subscribes to it (SAM ``SNS`` events), in the
        event shape Lambda gets from SNS. One result object, as :meth:`process` returns.
        """
        topic_arn = self.ctx.refs[topic]
        args: dict[str, Any] = {"TopicArn": topic_arn, "Message": message}
        if subject:
            args["Subject"] = subject
        message_id = str(self.admin_client("sns").publish(**args)["MessageId"])
        now = self.clock.now() if self.clock else datetime.now(UTC)
        event = {
            "Records": [
                {
                    "EventSource": "aws:sns",
                    "EventVersion": "1.0",
                    "EventSubscriptionArn": f"{topic_arn}:{uuid.uuid5(uuid.NAMESPACE_URL, topic_arn)}",
                    "Sns": {
                        "Type": "Notification",
                        "MessageId": message_id,
                        "TopicArn": topic_arn,
                        "Subject": subject,
                        "Message": message,
                        "Timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                        "SignatureVersion": "1",
                        "Signature": "EXAMPLE",
                        "SigningCertUrl": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-EXAMPLE.pem",
                        "UnsubscribeUrl": f"https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={topic_arn}",
                        "MessageAttributes": {},
                    },
                }
            ]
        }
        routed = [logical_id for logical_id, spec in self.functions.items() if topic in spec.topics]
        result = self._collect(routed, [self.invoke(function, event) for function in routed])
        result["event_id"] = message_id
        result["detail_type"] = "SNS Notification"
        return result

    # -- streams and alerts ---------------------------------------------------------------
    def pump_streams(self) -> list[Invocation]:
        """Deliver new ledger stream records to their consumers, as an event source mapping does."""
        invocations: list[Invocation] = []
        streams = self.admin_client("dynamodbstreams")
        for spec in self.functions.values():
            for stream_spec in spec.streams:
                stream_arn = self.ctx.attrs.get((stream_spec.table, "StreamArn"))
                if not stream_arn:
                    continue
                iterators = self._stream_iterators.get(stream_arn)
                if iterators is None:
                    shards = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
                    iterators = [
                        streams.get_shard_iterator(
                            StreamArn=stream_arn, ShardId=s["ShardId"], ShardIteratorType="TRIM_HORIZON"
                        )["ShardIterator"]
                        for s in shards
                    ]
                matchers = [compile_pattern(f) for f in stream_spec.filters]
                batch: list[dict[str, Any]] = []
                next_iterators: list[str] = []
                for iterator in iterators:
                    resp = streams.get_records(ShardIterator=iterator)
                    next_iterators.append(resp.get("NextShardIterator") or iterator)
                    for record in resp.get("Records", []):
                        record = json.loads(json.dumps(record, default=str))
                        record["eventSourceARN"] = stream_arn
                        if not matchers or any(m(record) for m in matchers):
                            batch.append(record)
                self._stream_iterators[stream_arn] = next_iterators
                for start in range(0, len(batch), stream_spec.batch_size):
                    chunk = batch[start : start + stream_spec.batch_size]
                    invocations.append(self.invoke(spec.logical_id, {"Records": chunk}))
        return invocations

    def drain_alerts(self) -> list[ReceivedAlert]:
        """Every alert the subscriber queue has received since the last drain."""
        assert self.stack is not None
        if not self.stack.subscriber_queue_url:
            return []
        sqs = self.admin_client("sqs")
        received: list[ReceivedAlert] = []
        while True:
            msgs = sqs.receive_message(
                QueueUrl=self.stack.subscriber_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not msgs:
                return received
            for msg in msgs:
                envelope = json.loads(msg["Body"])
                body = json.loads(envelope.get("Message", "{}"))
                if "content" in body and "metadata" in body:  # Chatbot format
                    body = body["metadata"]["additionalContext"]["alert"]
                    body = json.loads(body) if isinstance(body, str) else body  # context values are strings
                attrs = {k: v.get("Value", "") for k, v in envelope.get("MessageAttributes", {}).items()}
                received.append(
                    ReceivedAlert(
                        function=str(body.get("function", attrs.get("function", ""))),
                        subject=str(envelope.get("Subject") or body.get("subject", "")),
                        severity=str(body.get("severity", attrs.get("severity", "info"))),
                        verdict=body.get("verdict"),
                        kind=str(body.get("kind", "")),
                        alert_id=str(body.get("alert_id", "")),
                        attributes=attrs,
                        body=body,
                    )
                )
                sqs.delete_message(QueueUrl=self.stack.subscriber_queue_url, ReceiptHandle=msg["ReceiptHandle"])

    def function_name_of(self, logical_id: str) -> str:
        return str(self.functions[logical_id].name)

    def process(self, event: Any) -> dict[str, Any]:
        """Route one event, invoke what it routes to, publish resulting alerts; one result object."""
        routed = self.route(event) if isinstance(event, Mapping) else []
        invocations = [self.invoke(function, event) for function in routed]
        # A handler that reports its alert ids and reports none wrote no ALERT item: the stream
        # holds nothing the publisher's filter would pass, so there is nothing to pump or drain.
        silent = all(isinstance(i.result, dict) and i.result.get("alert_ids") == [] for i in invocations)
        result = self._collect(routed, invocations, quiet=silent)
        result["event_id"] = event.get("id") if isinstance(event, Mapping) else None
        result["detail_type"] = event.get("detail-type") if isinstance(event, Mapping) else None
        return result

    def _collect(self, routed: list[str], invocations: list[Invocation], quiet: bool = False) -> dict[str, Any]:
        """Outcomes of the invocations plus what they led to: stream consumers run, alerts received.

        ``quiet``: nothing was invoked, so nothing can have been written or published.
        """
        outcomes: list[dict[str, Any]] = []
        errors: list[str] = []
        for function, inv in zip(routed, invocations, strict=True):
            result = inv.result if isinstance(inv.result, dict) else {}
            outcomes.append(
                {
                    "function": function,
                    "verdict": result.get("verdict"),
                    "actions": [str(a) for a in result.get("actions", [])],
                    "alerts": [],
                }
            )
            if inv.error:
                errors.append(f"{function}: {inv.error}")
        for inv in [] if quiet else self.pump_streams():
            if inv.error:
                errors.append(f"{inv.function}: {inv.error}")
        by_name = {self.function_name_of(o["function"]): o for o in outcomes}
        for alert in [] if quiet else self.drain_alerts():
            target = by_name.get(alert.function)
            entry = {"subject": alert.subject, "severity": alert.severity, "verdict": alert.verdict}
            if target is not None:
                target["alerts"].append(entry)
            elif outcomes:
                outcomes[0]["alerts"].append(entry)
        return {
            "event_id": None,
            "detail_type": None,
            "routed_to": routed,
            "outcomes": outcomes,
            "error": "; ".join(errors) or None,
        }


def quiet_stream() -> TextIO:
    """Where handler logs go when the person watching wants only the account of events."""
    return io.StringIO()
