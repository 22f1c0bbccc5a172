"""template.yaml as data: the single source of truth for rules, wiring and resources.

Loads CloudFormation YAML (short-form intrinsics included), applies SAM Globals, and
resolves intrinsics against parameter values and the physical ids the embedded AWS gave
each resource. The harness, the contract tests and the demo all read rules from here,
so a pattern that does not match in tests does not match in the deployed stack either.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"

_SHORT_TAGS = {
    "Ref": "Ref",
    "Condition": "Condition",
    "Sub": "Fn::Sub",
    "GetAtt": "Fn::GetAtt",
    "If": "Fn::If",
    "Equals": "Fn::Equals",
    "Not": "Fn::Not",
    "And": "Fn::And",
    "Or": "Fn::Or",
    "Join": "Fn::Join",
    "Select": "Fn::Select",
    "Split": "Fn::Split",
    "FindInMap": "Fn::FindInMap",
    "ImportValue": "Fn::ImportValue",
    "Base64": "Fn::Base64",
    "GetAZs": "Fn::GetAZs",
    "Cidr": "Fn::Cidr",
    "ToJsonString": "Fn::ToJsonString",
}


class _Loader(yaml.SafeLoader):
    pass


def _make_constructor(full: str) -> Callable[[yaml.SafeLoader, yaml.Node], dict[str, Any]]:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if full == "Fn::GetAtt" and isinstance(value, str):
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {full: value}

    return construct


for _short, _full in _SHORT_TAGS.items():
    _Loader.add_constructor(f"!{_short}", _make_constructor(_full))


def load_yaml(path: Path) -> dict[str, Any]:
    with path.open() as fh:
        data = yaml.load(fh, Loader=_Loader)  # noqa: S506 - SafeLoader subclass with CFN tags only
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a CloudFormation template")
    return data


class UnresolvedError(ValueError):
    """An intrinsic refers to something the context cannot resolve."""


@dataclass
class Context:
    """Values intrinsics resolve to: parameters, pseudo parameters and created resources."""

    parameters: dict[str, Any]
    account: str = "123456789012"
    region: str = "us-east-1"
    stack_name: str = "changeguard-local"
    refs: dict[str, str] = field(default_factory=dict)
    attrs: dict[tuple[str, str], str] = field(default_factory=dict)
    conditions: dict[str, bool] = field(default_factory=dict)

    def pseudo(self, name: str) -> str | None:
        return {
            "AWS::AccountId": self.account,
            "AWS::Region": self.region,
            "AWS::Partition": "aws",
            "AWS::StackName": self.stack_name,
            "AWS::StackId": f"arn:aws:cloudformation:{self.region}:{self.account}:stack/{self.stack_name}/local",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": None,
        }.get(name, "\0missing")


_NO_VALUE = object()


def resolve(value: Any, ctx: Context) -> Any:
    """Resolve intrinsics recursively. ``AWS::NoValue`` removes the key or list item."""
    if isinstance(value, list):
        out = [resolve(v, ctx) for v in value]
        return [v for v in out if v is not _NO_VALUE]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Ref":
            return _ref(str(arg), ctx)
        if key == "Fn::Sub":
            return _sub(arg, ctx)
        if key == "Fn::GetAtt":
            logical, attr = arg if isinstance(arg, list) else str(arg).split(".", 1)
            found = ctx.attrs.get((logical, attr))
            if found is None:
                raise UnresolvedError(f"GetAtt {logical}.{attr}")
            return found
        if key == "Fn::If":
            cond, yes, no = arg
            return resolve(yes if ctx.conditions.get(cond, False) else no, ctx)
        if key == "Fn::Join":
            sep, items = arg
            return str(sep).join(str(i) for i in resolve(items, ctx))
        if key == "Fn::Select":
            index, items = arg
            return resolve(items, ctx)[int(resolve(index, ctx))]
        if key == "Fn::Split":
            sep, text = arg
            return str(resolve(text, ctx)).split(str(sep))
        if key == "Fn::Equals":
            a, b = arg
            return resolve(a, ctx) == resolve(b, ctx)
        if key == "Fn::Not":
            return not resolve(arg[0], ctx)
        if key == "Fn::And":
            return all(resolve(a, ctx) for a in arg)
        if key == "Fn::Or":
            return any(resolve(a, ctx) for a in arg)
        if key == "Condition":
            return ctx.conditions.get(str(arg), False)
        if key == "Fn::ToJsonString":
            return json.dumps(resolve(arg, ctx))
    out_map = {}
    for k, v in value.items():
        resolved = resolve(v, ctx)
        if resolved is not _NO_VALUE:
            out_map[k] = resolved
    return out_map


def _ref(name: str, ctx: Context) -> Any:
    if name in ctx.parameters:
        return ctx.parameters[name]
    pseudo = ctx.pseudo(name)
    if pseudo is None:
        return _NO_VALUE
    if pseudo != "\0missing":
        return pseudo
    if name in ctx.refs:
        return ctx.refs[name]
    raise UnresolvedError(f"Ref {name}")


_SUB_VAR = re.compile(r"\$\{([^}!][^}]*)\}")


def _sub(arg: Any, ctx: Context) -> str:
    text, extra = (arg[0], arg[1]) if isinstance(arg, list) else (arg, {})
    local = {k: resolve(v, ctx) for k, v in extra.items()}

    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in local:
            return str(local[name])
        if "." in name and not name.startswith("AWS::"):
            logical, attr = name.split(".", 1)
            found = ctx.attrs.get((logical, attr))
            if found is None:
                raise UnresolvedError(f"Sub ${{{name}}}")
            return found
        value = _ref(name, ctx)
        return ",".join(value) if isinstance(value, list) else str(value)

    return _SUB_VAR.sub(repl, str(text)).replace("${!", "${")


@dataclass
class RuleSpec:
    """One EventBridge rule attached to a function (SAM ``EventBridgeRule`` event)."""

    function: str
    name: str
    pattern: dict[str, Any]


@dataclass
class StreamSpec:
    function: str
    name: str
    table: str
    filters: list[dict[str, Any]]
    batch_size: int


@dataclass
class FunctionSpec:
    logical_id: str
    code_uri: Path
    handler: str
    environment: dict[str, Any]
    rules: list[RuleSpec]
    streams: list[StreamSpec]
    schedules: list[str]
    policies: list[dict[str, Any]]
    properties: dict[str, Any]
    #: Logical ids of the SNS topics the function subscribes to (SAM ``SNS`` events) - issue 5.
    topics: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The snake_case function name (``CHANGEGUARD_FUNCTION``)."""
        return str(self.environment.get("CHANGEGUARD_FUNCTION") or self.code_uri.name)


class Template:
    """The parsed template, resolvable for a given set of parameter values."""

    def __init__(self, path: Path = TEMPLATE_PATH) -> None:
        self.path = path
        self.raw = load_yaml(path)

    @property
    def resources(self) -> dict[str, Any]:
        return dict(self.raw.get("Resources", {}))

    def parameter_defaults(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, spec in self.raw.get("Parameters", {}).items():
            default = spec.get("Default", "")
            if spec.get("Type") == "CommaDelimitedList":
                default = [p.strip() for p in str(default).split(",") if p.strip()]
            out[name] = default
        return out

    def context(self, overrides: Mapping[str, Any] | None = None, **kwargs: Any) -> Context:
        params = self.parameter_defaults()
        params.update(overrides or {})
        ctx = Context(parameters=params, **kwargs)
        for name, expr in self.raw.get("Conditions", {}).items():
            ctx.conditions[name] = bool(resolve(expr, ctx))
        return ctx

    def function_ids(self) -> list[str]:
        return [k for k, v in self.resources.items() if v.get("Type") == "AWS::Serverless::Function"]

    def functions(self, ctx: Context) -> dict[str, FunctionSpec]:
        """Every function with Globals applied and intrinsics resolved."""
        globals_ = copy.deepcopy(self.raw.get("Globals", {}).get("Function", {}))
        out: dict[str, FunctionSpec] = {}
        for logical_id in self.function_ids():
            props = copy.deepcopy(self.resources[logical_id].get("Properties", {}))
            env = dict(globals_.get("Environment", {}).get("Variables", {}))
            env.update(props.get("Environment", {}).get("Variables", {}))
            env = {k: v for k, v in ((k, _soft(v, ctx)) for k, v in env.items()) if v is not None}
            rules: list[RuleSpec] = []
            streams: list[StreamSpec] = []
            schedules: list[str] = []
            topics: list[str] = []
            for event_name, event in props.get("Events", {}).items():
                eprops = event.get("Properties", {})
                if event.get("Type") in ("EventBridgeRule", "CloudWatchEvent"):
                    rules.append(RuleSpec(logical_id, event_name, resolve(eprops["Pattern"], ctx)))
                elif event.get("Type") in ("Schedule", "ScheduleV2"):
                    schedules.append(event_name)
                elif event.get("Type") == "SNS":  # issue 5: a topic subscription (``Topic: !Ref X``)
                    topic = eprops.get("Topic")
                    if isinstance(topic, dict) and "Ref" in topic:
                        topics.append(str(topic["Ref"]))
                elif event.get("Type") == "DynamoDB":
                    stream = eprops["Stream"]
                    table = stream["Fn::GetAtt"][0] if isinstance(stream, dict) and "Fn::GetAtt" in stream else ""
                    filters = [json.loads(f["Pattern"]) for f in eprops.get("FilterCriteria", {}).get("Filters", [])]
                    streams.append(
                        StreamSpec(logical_id, event_name, table, filters, int(eprops.get("BatchSize", 100)))
                    )
            merged = {**{k: v for k, v in globals_.items() if k != "Environment"}, **props}
            out[logical_id] = FunctionSpec(
                logical_id=logical_id,
                code_uri=(self.path.parent / str(props.get("CodeUri", ""))).resolve(),
                handler=str(merged.get("Handler", "app.lambda_handler")),
                environment=env,
                rules=rules,
                streams=streams,
                schedules=schedules,
                policies=list(props.get("Policies", [])),
                properties=merged,
                topics=topics,
            )
        return out


def _soft(value: Any, ctx: Context) -> Any:
    """Resolve, mapping what cannot be resolved (a resource the harness did not create) to None."""
    try:
        resolved = resolve(value, ctx)
    except UnresolvedError:
        return None
    if resolved is _NO_VALUE:
        return None
    return ",".join(resolved) if isinstance(resolved, list) else str(resolved)
