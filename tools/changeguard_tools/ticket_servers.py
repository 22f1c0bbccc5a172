"""Local Jira Service Management and ServiceNow servers, for tests and for trying an integration.

Each is a real HTTP server (standard library, threaded) on 127.0.0.1 with an OS-chosen port,
speaking the documented API the ticket adapters call, with bodies shaped like the vendors'
documented examples:

* :class:`JiraServer` - ``GET /rest/api/{2,3}/issue/{key}`` (rich-text fields as Atlassian
  Document Format on v3, plain strings on v2; ``fields=`` honoured) and
  ``GET /rest/servicedeskapi/request/{key}/approval`` (a paged list of approvals, each with
  ``finalDecision`` and its ``approvers`` with their ``approverDecision``).
* :class:`ServiceNowServer` - the Table API ``GET /api/now/table/{table}`` for ``change_request``
  and ``sysapproval_approver`` with ``sysparm_query`` (``field=value`` joined by ``^``),
  ``sysparm_fields`` (dot-walking into ``sys_user``), ``sysparm_limit`` and
  ``sysparm_exclude_reference_link``; stored values, date-times in UTC.

Both check credentials (Basic or Bearer), answer 404 for unknown tickets, and inject faults on
request: :meth:`TicketServer.fail` (5xx and friends), :meth:`TicketServer.slow` (answers later
than any client timeout), :meth:`TicketServer.refuse` / :meth:`TicketServer.resume` (connection
refused, then back on the same port). Every request is recorded in :attr:`TicketServer.requests`.

Operators can run one against the same ticket specs the demo fixtures use::

    python -m changeguard_tools.ticket_servers jira --tickets tickets.yaml --port 8080
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

__all__ = [
    "JiraFieldIds",
    "JiraServer",
    "Recorded",
    "ServiceNowServer",
    "TicketServer",
    "adf",
]

HOST = "127.0.0.1"


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    authorization: str | None


@dataclass
class _Fault:
    status: int | None = None
    delay: float = 0.0
    remaining: int | None = None  # None: every request
    path: str | None = None  # only requests whose path contains this


Response = tuple[int, Any]
F = TypeVar("F", bound=Callable[..., Any])


def _locked(method: F) -> F:
    """Seeding while the server answers: take the server's lock."""

    @functools.wraps(method)
    def inner(self: TicketServer, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return inner  # type: ignore[return-value]


def _time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def adf(text: str) -> dict[str, Any]:
    """Atlassian Document Format for plain text: one paragraph per line (what Jira v3 returns)."""
    return {
        "type": "doc",
        "version": 1,
        "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": line}]} for line in text.splitlines() if line
        ],
    }


class TicketServer:
    """A threaded HTTP server on 127.0.0.1 with credentials, a request log and injectable faults."""

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        port: int = 0,
    ) -> None:
        self._credentials: set[str] = set()
        if username is not None and password is not None:
            self._credentials.add("Basic " + base64.b64encode(f"{username}:{password}".encode()).decode())
        if token is not None:
            self._credentials.add(f"Bearer {token}")
        self._lock = threading.RLock()
        self._faults: list[_Fault] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = port
        self.requests: list[Recorded] = []

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> str:
        """Listen (on the same port again after :meth:`refuse`) and return the base URL."""
        if self._server is not None:
            return self.base_url
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                owner._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        server = ThreadingHTTPServer((HOST, self.port), Handler)
        server.daemon_threads = True
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name=f"{type(self).__name__}:{self.port}"
        )
        self._thread.daemon = True
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> TicketServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # -- faults ----------------------------------------------------------------------------------
    def fail(self, status: int = 500, times: int | None = None, path: str | None = None) -> None:
        """Answer the next ``times`` requests (every request when None) with ``status``; with
        ``path``, only requests whose path contains it."""
        with self._lock:
            self._faults.append(_Fault(status=status, remaining=times, path=path))

    def slow(self, seconds: float, times: int | None = None, path: str | None = None) -> None:
        """Hold the next ``times`` answers (every answer when None) for ``seconds``."""
        with self._lock:
            self._faults.append(_Fault(delay=seconds, remaining=times, path=path))

    def refuse(self) -> None:
        """Stop listening: connections are refused until :meth:`resume`."""
        self.stop()

    def resume(self) -> str:
        return self.start()

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.path is not None and fault.path not in path:
                    continue
                if fault.remaining is None or fault.remaining > 0:
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    return fault
            return None

    # -- request handling ------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urllib.parse.urlsplit(handler.path)
        query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        auth = handler.headers.get("Authorization")
        with self._lock:
            self.requests.append(Recorded("GET", parts.path, query, auth))
        fault = self._take_fault(parts.path)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.status is not None:
            status, body = fault.status, self.error_body(fault.status, "injected fault")
        elif self._credentials and auth not in self._credentials:
            status, body = 401, self.error_body(401, "authentication required")
        else:
            with self._lock:
                status, body = self.route(parts.path, query)
        payload = json.dumps(body).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json;charset=UTF-8")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout): nothing left to answer

    def route(self, path: str, query: Mapping[str, str]) -> Response:
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> Any:
        return {"error": message, "status": status}


# ================================================================================================
# Jira Service Management
# ================================================================================================


@dataclass(frozen=True)
class JiraFieldIds:
    """The custom field ids this server uses (a real site has its own; configuration names them)."""

    window_start: str = "customfield_10061"
    window_end: str = "customfield_10062"
    affected_resources: str = "customfield_10070"
    test_evidence: str = "customfield_10071"
    rollback_plan: str = "customfield_10072"
    change_type: str = "customfield_10005"

    def options(self, **extra: Any) -> dict[str, Any]:
        """The adapter's ``TICKET_SOURCE_OPTIONS`` for these ids."""
        return {
            "window_start": self.window_start,
            "window_end": self.window_end,
            "affected_resources": self.affected_resources,
            "test_evidence": self.test_evidence,
            "rollback_plan": self.rollback_plan,
            "change_type": self.change_type,
            **extra,
        }


@dataclass
class _JiraIssue:
    id: str
    key: str
    fields: dict[str, Any]
    approvals: list[dict[str, Any]] = field(default_factory=list)
    service_request: bool = True


def _jira_time(value: Any) -> str | None:
    moment = _time(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000") if moment else None


def _jira_date(value: Any) -> dict[str, Any] | None:
    moment = _time(value)
    if moment is None:
        return None
    return {
        "iso8601": moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000"),
        "jira": moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000"),
        "friendly": moment.astimezone(UTC).strftime("%d/%b/%y %I:%M %p"),
        "epochMillis": int(moment.timestamp() * 1000),
    }


class JiraServer(TicketServer):
    """Jira Cloud-style REST API v2/v3 plus the JSM approval API."""

    STATUS_CATEGORIES = {
        "new": (2, "To Do", "blue-gray"),
        "indeterminate": (4, "In Progress", "yellow"),
        "done": (3, "Done", "green"),
    }

    def __init__(self, *, field_ids: JiraFieldIds | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.field_ids = field_ids or JiraFieldIds()
        self.issues: dict[str, _JiraIssue] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self._next_id = 10000

    def options(self, **extra: Any) -> dict[str, Any]:
        return self.field_ids.options(**extra)

    @property
    def rich_text_fields(self) -> set[str]:
        return {self.field_ids.test_evidence, self.field_ids.rollback_plan, self.field_ids.affected_resources}

    # -- seeding ---------------------------------------------------------------------------------
    @_locked
    def user(self, identity: str, *, display_name: str | None = None, hide_email: bool = False) -> dict[str, Any]:
        """A Cloud user for an e-mail address (or an accountId), as ``approver``/``reporter`` show it."""
        email = identity if "@" in identity else None
        account_id = hashlib.sha256(identity.lower().encode()).hexdigest()[:24] if email else identity
        name = display_name or (email.split("@")[0].replace(".", " ").title() if email else identity)
        user = {
            "self": f"{self.base_url}/rest/api/3/user?accountId={account_id}",
            "accountId": account_id,
            "displayName": name,
            "active": True,
            "timeZone": "Etc/UTC",
            "accountType": "atlassian",
            "_links": {"jiraRest": f"{self.base_url}/rest/api/3/user?accountId={account_id}"},
        }
        if email and not hide_email:
            user["emailAddress"] = email
        self.users[account_id] = user
        return user

    @_locked
    def add_issue(
        self,
        key: str,
        *,
        summary: str = "",
        issue_type: str = "Change",
        status: str = "Waiting for approval",
        status_category: str = "indeterminate",
        reporter: str | None = None,
        created: Any = None,
        change_type: str | None = "Normal",
        window_start: Any = None,
        window_end: Any = None,
        affected_resources: Iterable[str] = (),
        test_evidence: str | None = None,
        rollback_plan: str | None = None,
        service_request: bool = True,
        resolutiondate: Any = None,
        extra_fields: Mapping[str, Any] | None = None,
    ) -> _JiraIssue:
        ids = self.field_ids
        cat_id, cat_name, color = self.STATUS_CATEGORIES[status_category]
        self._next_id += 1
        issue_id = str(self._next_id)
        fields: dict[str, Any] = {
            "summary": summary,
            "issuetype": {
                "self": f"{self.base_url}/rest/api/3/issuetype/10004",
                "id": "10004",
                "description": "",
                "iconUrl": f"{self.base_url}/images/icons/issuetypes/change.svg",
                "name": issue_type,
                "subtask": False,
                "hierarchyLevel": 0,
            },
            "status": {
                "self": f"{self.base_url}/rest/api/3/status/10010",
                "description": "",
                "iconUrl": f"{self.base_url}/images/icons/status_generic.gif",
                "name": status,
                "id": "10010",
                "statusCategory": {
                    "self": f"{self.base_url}/rest/api/3/statuscategory/{cat_id}",
                    "id": cat_id,
                    "key": status_category,
                    "colorName": color,
                    "name": cat_name,
                },
            },
            "reporter": self.user(reporter) if reporter else None,
            "created": _jira_time(created or datetime(2026, 11, 20, 9, 0, tzinfo=UTC)),
            "resolutiondate": _jira_time(resolutiondate),  # null until resolved
            ids.change_type: (
                {"self": f"{self.base_url}/rest/api/3/customFieldOption/10100", "value": change_type, "id": "10100"}
                if change_type
                else None
            ),
            ids.window_start: _jira_time(window_start),
            ids.window_end: _jira_time(window_end),
            ids.affected_resources: "\n".join(affected_resources) or None,
            ids.test_evidence: test_evidence,
            ids.rollback_plan: rollback_plan,
        }
        fields.update(extra_fields or {})
        issue = _JiraIssue(id=issue_id, key=key, fields=fields, service_request=service_request)
        self.issues[key] = issue
        return issue

    @_locked
    def add_approval(
        self,
        key: str,
        approvers: Iterable[tuple[str, str]],
        *,
        name: str = "Change approval",
        final_decision: str | None = None,
        created: Any = None,
        completed: Any = None,
        hide_email: bool = False,
    ) -> dict[str, Any]:
        """An approval step; ``approvers`` are ``(identity, approverDecision)`` pairs."""
        issue = self.issues[key]
        entries = [
            {"approver": self.user(who, hide_email=hide_email), "approverDecision": decision}
            for who, decision in approvers
        ]
        decisions = [d for _, d in approvers]
        final = final_decision or (
            "declined"
            if "declined" in decisions
            else "approved"
            if decisions and set(decisions) == {"approved"}
            else "pending"
        )
        approval_id = str(len(issue.approvals) + 1)
        approval: dict[str, Any] = {
            "id": approval_id,
            "name": name,
            "finalDecision": final,
            "canAnswerApproval": False,
            "approvers": entries,
            "createdDate": _jira_date(created or datetime(2026, 11, 20, 9, 0, tzinfo=UTC)),
            "_links": {"self": f"{self.base_url}/rest/servicedeskapi/request/{issue.id}/approval/{approval_id}"},
        }
        if final != "pending":
            approval["completedDate"] = _jira_date(completed or created or datetime(2026, 11, 20, 10, 0, tzinfo=UTC))
        issue.approvals.append(approval)
        return approval

    @_locked
    def seed_ticket(self, spec: Mapping[str, Any]) -> None:
        """A ticket from the demo fixtures' schema (``id``, ``type``, ``status``, ``window``, ``approvals``...)."""
        kind = str(spec.get("type", "normal"))
        status = str(spec.get("status", "open"))
        window = spec.get("window") or {}
        names = {"open": ("Waiting for approval", "indeterminate"), "approved": ("Scheduled", "indeterminate"),
                 "rejected": ("Declined", "done"), "cancelled": ("Canceled", "done"), "closed": ("Closed", "done")}  # fmt: skip
        status_name, category = names.get(status, names["open"])
        key = str(spec["id"])
        self.add_issue(
            key,
            summary=str(spec.get("title", "")),
            status=status_name,
            status_category=category,
            reporter=spec.get("requested_by"),
            change_type=kind.capitalize(),
            window_start=window.get("start"),
            window_end=window.get("end"),
            affected_resources=spec.get("affected_resources") or (),
            test_evidence=spec.get("test_evidence"),
            rollback_plan=spec.get("rollback_plan"),
            resolutiondate=spec.get("closed_at") if category == "done" else None,
        )
        for approval in spec.get("approvals") or ():
            self.add_approval(key, [(str(approval["approver"]), "approved")], completed=approval.get("at"))

    # -- the API ---------------------------------------------------------------------------------
    def error_body(self, status: int, message: str) -> Any:
        return {"errorMessages": [message], "errors": {}}

    def route(self, path: str, query: Mapping[str, str]) -> Response:
        segments = [urllib.parse.unquote(s) for s in path.strip("/").split("/")]
        if (
            len(segments) == 5
            and segments[:2] == ["rest", "api"]
            and segments[2] in ("2", "3")
            and segments[3] == "issue"
        ):
            return self._issue(segments[4], int(segments[2]), query)
        if len(segments) == 5 and segments[:3] == ["rest", "servicedeskapi", "request"] and segments[4] == "approval":
            return self._approvals(segments[3], query)
        return 404, {"errorMessages": ["null for uri: " + path], "errors": {}}

    def _find(self, key_or_id: str) -> _JiraIssue | None:
        return self.issues.get(key_or_id) or next((i for i in self.issues.values() if i.id == key_or_id), None)

    def _issue(self, key: str, version: int, query: Mapping[str, str]) -> Response:
        issue = self._find(key)
        if issue is None:
            return 404, {
                "errorMessages": ["Issue does not exist or you do not have permission to see it."],
                "errors": {},
            }
        wanted = [f for f in query.get("fields", "").split(",") if f and f not in ("*all", "*navigable")]
        fields = {k: v for k, v in issue.fields.items() if not wanted or k in wanted}
        if version == 3:
            fields = {k: adf(v) if k in self.rich_text_fields and isinstance(v, str) else v for k, v in fields.items()}
        return 200, {
            "expand": "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations",
            "id": issue.id,
            "self": f"{self.base_url}/rest/api/{version}/issue/{issue.id}",
            "key": issue.key,
            "fields": fields,
        }

    def _approvals(self, key: str, query: Mapping[str, str]) -> Response:
        issue = self._find(key)
        if issue is None or not issue.service_request:
            return 404, {
                "errorMessage": "The request could not be found.",
                "i18nErrorMessage": {"i18nKey": "sd.request.error.not.found", "parameters": []},
            }
        start = int(query.get("start", "0") or 0)
        limit = int(query.get("limit", "50") or 50)
        values = issue.approvals[start : start + limit]
        last = start + limit >= len(issue.approvals)
        base = f"{self.base_url}/rest/servicedeskapi"
        links: dict[str, str] = {"base": base, "context": ""}
        if not last:
            links["next"] = f"{base}/request/{issue.id}/approval?start={start + limit}&limit={limit}"
        if start:
            links["prev"] = f"{base}/request/{issue.id}/approval?start={max(0, start - limit)}&limit={limit}"
        return 200, {
            "_expands": [],
            "size": len(values),
            "start": start,
            "limit": limit,
            "isLastPage": last,
            "_links": links,
            "values": values,
        }


# ================================================================================================
# ServiceNow
# ================================================================================================


def _sys_id(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:32]


def _sn_time(value: Any) -> str:
    moment = _time(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else ""


class ServiceNowServer(TicketServer):
    """The Table API for ``change_request``, ``sysapproval_approver`` and ``sys_user``."""

    REFERENCES = {  # reference column -> referenced table
        "change_request": {"requested_by": "sys_user", "assigned_to": "sys_user"},
        "sysapproval_approver": {
            "approver": "sys_user",
            "sysapproval": "change_request",
            "document_id": "change_request",
        },
    }
    STATES = {"open": ("-3", "requested"), "approved": ("-2", "approved"), "rejected": ("-5", "rejected"),
              "cancelled": ("4", "requested"), "closed": ("3", "approved")}  # fmt: skip

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tables: dict[str, dict[str, dict[str, Any]]] = {
            "change_request": {},
            "sysapproval_approver": {},
            "sys_user": {},
        }

    @_locked
    def user(self, identity: str, *, name: str | None = None) -> str:
        """The sys_id of a ``sys_user`` for an e-mail address (user_name: the local part) or a user name."""
        email = identity if "@" in identity else f"{identity}@example.com"
        user_name = identity.split("@")[0] if "@" in identity else identity
        sys_id = _sys_id("sys_user:" + user_name.lower())
        self.tables["sys_user"][sys_id] = {
            "sys_id": sys_id,
            "user_name": user_name,
            "email": email,
            "name": name or user_name.replace(".", " ").title(),
            "active": "true",
        }
        return sys_id

    @_locked
    def add_change(
        self,
        number: str,
        *,
        type: str = "normal",
        state: str = "-3",
        approval: str = "requested",
        short_description: str = "",
        requested_by: str | None = None,
        start_date: Any = None,
        end_date: Any = None,
        test_plan: str = "",
        backout_plan: str = "",
        closed_at: Any = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        sys_id = _sys_id("change_request:" + number)
        record = {
            "sys_id": sys_id,
            "number": number,
            "type": type,
            "state": state,
            "approval": approval,
            "short_description": short_description,
            "requested_by": self.user(requested_by) if requested_by else "",
            "start_date": _sn_time(start_date),
            "end_date": _sn_time(end_date),
            "test_plan": test_plan,
            "backout_plan": backout_plan,
            "sys_created_on": "2026-11-20 09:00:00",
            "closed_at": _sn_time(closed_at),
            "sys_class_name": "change_request",
            "active": "true",
        }
        record.update({k: str(v) for k, v in (extra or {}).items()})
        self.tables["change_request"][sys_id] = record
        return sys_id

    @_locked
    def add_approver(self, number: str, who: str, *, state: str = "approved", updated: Any = None) -> str:
        change = next(r for r in self.tables["change_request"].values() if r["number"] == number)
        user = self.user(who)
        sys_id = _sys_id(f"sysapproval_approver:{number}:{who}")
        self.tables["sysapproval_approver"][sys_id] = {
            "sys_id": sys_id,
            "sysapproval": change["sys_id"],
            "document_id": change["sys_id"],
            "source_table": "change_request",
            "approver": user,
            "state": state,
            "sys_updated_on": _sn_time(updated or datetime(2026, 11, 20, 10, 0, tzinfo=UTC)),
        }
        return sys_id

    @_locked
    def seed_ticket(self, spec: Mapping[str, Any], *, affected_column: str = "u_affected_resources") -> None:
        """A change request from the demo fixtures' schema."""
        state, approval = self.STATES.get(str(spec.get("status", "open")), self.STATES["open"])
        window = spec.get("window") or {}
        number = str(spec["id"])
        resources = spec.get("affected_resources") or ()
        self.add_change(
            number,
            type=str(spec.get("type", "normal")),
            state=state,
            approval=approval,
            short_description=str(spec.get("title", "")),
            requested_by=spec.get("requested_by"),
            start_date=window.get("start"),
            end_date=window.get("end"),
            test_plan=str(spec.get("test_evidence") or ""),
            backout_plan=str(spec.get("rollback_plan") or ""),
            closed_at=spec.get("closed_at") if state == "3" else None,
            extra={affected_column: "\n".join(resources)} if resources else None,
        )
        for item in spec.get("approvals") or ():
            self.add_approver(number, str(item["approver"]), updated=item.get("at"))

    # -- the API ---------------------------------------------------------------------------------
    def error_body(self, status: int, message: str) -> Any:
        if status == 401:
            return {"error": {"message": "User Not Authenticated", "detail": "Required to provide Auth information"}, "status": "failure"}  # fmt: skip
        return {"error": {"message": message, "detail": None}, "status": "failure"}

    def route(self, path: str, query: Mapping[str, str]) -> Response:
        segments = path.strip("/").split("/")
        if len(segments) != 4 or segments[:3] != ["api", "now", "table"]:
            return 400, self.error_body(400, "Requested URI does not represent any resource")
        table = segments[3]
        if table not in self.tables:
            return 400, self.error_body(400, f"Invalid table {table}")
        conditions = self._conditions(query.get("sysparm_query", ""))
        if conditions is None:
            return 400, self.error_body(400, "unsupported sysparm_query")
        rows = [r for r in self.tables[table].values() if all(r.get(k) == v for k, v in conditions)]
        limit = int(query.get("sysparm_limit") or 10000)
        names = [f for f in query.get("sysparm_fields", "").split(",") if f]
        links = query.get("sysparm_exclude_reference_link", "false").lower() != "true"
        return 200, {"result": [self._project(table, r, names, links) for r in rows[:limit]]}

    @staticmethod
    def _conditions(text: str) -> list[tuple[str, str]] | None:
        """``a=1^b=2`` (AND of equalities, what the adapter sends); anything richer is refused."""
        out: list[tuple[str, str]] = []
        for term in (t for t in text.split("^") if t):
            name, sep, value = term.partition("=")
            if not sep or not name.replace("_", "").replace(".", "").isalnum() or term.startswith(("OR", "NQ")):
                return None
            out.append((name, value))
        return out

    def _project(self, table: str, row: Mapping[str, Any], names: list[str], links: bool) -> dict[str, Any]:
        refs = self.REFERENCES.get(table, {})
        out: dict[str, Any] = {}
        for name in names or list(row):
            column, _, walk = name.partition(".")
            value = row.get(column, "")
            if walk and column in refs:
                target = self.tables[refs[column]].get(str(value), {})
                out[name] = target.get(walk, "")
            elif column in refs and links and value:
                out[name] = {"link": f"{self.base_url}/api/now/table/{refs[column]}/{value}", "value": value}
            elif not walk:
                out[name] = value
        return out


# ================================================================================================
# Running one by hand
# ================================================================================================


def main(argv: list[str] | None = None) -> int:
    import yaml

    parser = argparse.ArgumentParser(description="a local Jira or ServiceNow ticket server")
    parser.add_argument("vendor", choices=["jira", "servicenow"])
    parser.add_argument("--tickets", help="YAML with a `tickets:` list (the demo fixtures' schema)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--token")
    args = parser.parse_args(argv)
    creds = {"username": args.username, "password": args.password, "token": args.token, "port": args.port}
    server: JiraServer | ServiceNowServer = JiraServer(**creds) if args.vendor == "jira" else ServiceNowServer(**creds)
    server.start()
    if args.tickets:
        with open(args.tickets) as fh:
            data = yaml.safe_load(fh) or {}
        specs = data.get("tickets") or (data.get("fixtures") or {}).get("tickets") or []
        for spec in specs:
            server.seed_ticket(spec)
    options = server.options() if isinstance(server, JiraServer) else {"affected_resources": "u_affected_resources"}
    print(f"{args.vendor} on {server.base_url}", flush=True)
    print(f"TICKET_BASE_URL={server.base_url}", flush=True)
    print(f"TICKET_SOURCE_OPTIONS={json.dumps(options)}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
