"""The embedded AWS: moto's server, with our extensions and a CloudTrail of every call, in-process.

One :class:`EmbeddedAWS` serves every AWS service moto implements on ``http://127.0.0.1:<port>``
(the OS picks a free port), from a daemon thread of the current process. Tests, the demo and the CLI
point boto3 at :attr:`EmbeddedAWS.endpoint_url`; :meth:`EmbeddedAWS.client` does it for you.

moto keeps its state per process, not per server: two instances in one process share it (and the
trail). :meth:`EmbeddedAWS.reset` empties it between tests, which is much cheaper than a restart.
"""

from __future__ import annotations

import contextlib
import os
import threading
import urllib.request
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

import boto3
from botocore.config import Config
from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from changeguard_tools.embedded import extensions
from changeguard_tools.embedded.cloudtrail import TRAIL, CloudTrailRecorder, Trail
from changeguard_tools.embedded.faults import FaultInjector

__all__ = ["EmbeddedAWS", "EmbeddedAWSError", "in_process_aws"]

#: The credentials every client of the embedded AWS signs with unless told otherwise.
DUMMY_ACCESS_KEY_ID = "testing"
DUMMY_SECRET_ACCESS_KEY = "testing"  # noqa: S105 - not a secret: moto accepts any credentials


class EmbeddedAWSError(RuntimeError):
    """The embedded AWS is not in the state the call needs (for instance, not started)."""


class _QuietRequestHandler(MotoRequestHandler):  # type: ignore[misc]
    """moto's request handler without werkzeug's one-line-per-request access log."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class EmbeddedAWS:
    """moto's server on 127.0.0.1, wrapped in the CloudTrail recorder.

    Usable as a context manager, and restartable: each :meth:`start` binds a new free port.
    """

    #: The account moto serves when the credentials name none.
    account_id: str = str(DEFAULT_ACCOUNT_ID)

    def __init__(self, *, record_read_only: bool = False, max_attempts: int = 1, trail: Trail | None = None) -> None:
        """Configure, without starting.

        ``record_read_only`` also records read-only calls (as CloudTrail does, flagged ``readOnly``).
        ``max_attempts`` is the botocore attempt budget of :meth:`client` (1: no retries, so failures
        surface at once). ``trail`` defaults to the process's trail, the one LookupEvents reads.
        """
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.max_attempts = max_attempts
        self._record_read_only_default = record_read_only
        self._trail = trail if trail is not None else TRAIL
        self._recorder: CloudTrailRecorder | None = None
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._endpoint_url: str | None = None
        self._lock = threading.Lock()
        self._session: boto3.session.Session | None = None
        # Outermost middleware (issue 8): throttling, 5xx and lost responses, on request.
        self._faults = FaultInjector()

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> str:
        """Install the extensions, start serving, and return the endpoint URL."""
        with self._lock:
            if self._endpoint_url is not None:
                raise EmbeddedAWSError(f"already serving on {self._endpoint_url}")
            extensions.install()
            recorder = CloudTrailRecorder(
                DomainDispatcherApplication(create_backend_app),
                self._trail,
                record_read_only=self._record_read_only_default,
            )
            self._faults.app = recorder
            server = make_server("127.0.0.1", 0, self._faults, threaded=True, request_handler=_QuietRequestHandler)
            # A short poll interval makes stop() quick; shutdown() waits for the next poll.
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="embedded-aws", daemon=True
            )
            thread.start()
            self._recorder, self._server, self._thread = recorder, server, thread
            self._endpoint_url = f"http://127.0.0.1:{server.port}"
            return self._endpoint_url

    def stop(self) -> None:
        """Stop serving (a no-op when not started). moto's state is kept until :meth:`reset`."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            self._endpoint_url = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def reset(self) -> None:
        """Empty moto's state (its reset API), our extensions' state and the trail.

        Also turns ``record_read_only`` back to its constructor value, clears :attr:`errors` and
        removes every fault (:attr:`faults`).
        """
        self._faults.clear()
        url = f"{self.endpoint_url}/moto-api/reset"  # always our own http://127.0.0.1 endpoint
        request = urllib.request.Request(url, method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            if response.status != 200:
                raise EmbeddedAWSError(f"moto's reset answered {response.status}")
        extensions.reset_state()
        self._trail.clear()
        recorder = self._require_recorder()
        recorder.record_read_only = self._record_read_only_default
        recorder.errors.clear()

    # --- what tests use ---------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>`` while serving."""
        if self._endpoint_url is None:
            raise EmbeddedAWSError("the embedded AWS is not started")
        return self._endpoint_url

    @property
    def running(self) -> bool:
        """Whether it is serving."""
        return self._endpoint_url is not None

    @property
    def faults(self) -> FaultInjector:
        """The HTTP-layer fault injector in front of every service (see :mod:`.faults`)."""
        return self._faults

    @property
    def trail(self) -> Trail:
        """The CloudTrail records of the calls served."""
        return self._trail

    @property
    def record_read_only(self) -> bool:
        """Whether read-only calls are recorded too (reset restores the constructor's choice)."""
        return bool(self._require_recorder().record_read_only)

    @record_read_only.setter
    def record_read_only(self, value: bool) -> None:
        self._require_recorder().record_read_only = value

    @property
    def errors(self) -> list[Exception]:
        """Failures to record a call (recorder bugs, subscriber exceptions) since the last reset."""
        errors: list[Exception] = self._require_recorder().errors
        return errors

    def client(self, service: str, region: str = "us-east-1", **kwargs: Any) -> Any:
        """A boto3 client of the embedded AWS, signed with dummy credentials.

        Keyword arguments go to ``boto3.client`` and win over the defaults (pass
        ``aws_access_key_id``/``aws_secret_access_key``/``aws_session_token`` to call as another
        principal). ``max_attempts`` overrides the instance's attempt budget; a ``config`` is merged
        over ours.
        """
        max_attempts = int(kwargs.pop("max_attempts", self.max_attempts))
        config = Config(
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            s3={"addressing_style": "path"},
        )
        extra_config = kwargs.pop("config", None)
        if extra_config is not None:
            config = config.merge(extra_config)
        arguments: dict[str, Any] = {
            "region_name": region,
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": DUMMY_ACCESS_KEY_ID,
            "aws_secret_access_key": DUMMY_SECRET_ACCESS_KEY,
            "aws_session_token": None,
            "config": config,
        }
        arguments.update(kwargs)
        with self._lock:
            # One session for all clients: creating a session per client is slow, and sessions are
            # not safe to create clients from concurrently.
            if self._session is None:
                self._session = boto3.session.Session()
            session: Any = self._session  # the stubs type clients per literal service name only
            return session.client(service, **arguments)

    def _require_recorder(self) -> CloudTrailRecorder:
        if self._recorder is None:
            raise EmbeddedAWSError("the embedded AWS was never started")
        return self._recorder


@contextlib.contextmanager
def in_process_aws() -> Iterator[None]:
    """The embedded AWS without its HTTP server: moto's ``mock_aws`` with our extensions installed.

    Inside, every boto3 client of the process (Powertools' own included) is answered by moto in
    the calling thread, with the same extensions (atomic conditional writes, journaled transactions,
    the operations moto lacks) as the server, but without the HTTP round trip per call, which is most
    of a call's cost. What lives in the server's HTTP layer is absent: the CloudTrail recorder (so
    ``LookupEvents`` sees nothing) and fault injection. Endpoint overrides in the environment are
    suspended so that no call leaves the process. moto's state is discarded on exit.
    """
    from moto import mock_aws

    extensions.install()
    overrides = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("AWS_ENDPOINT_URL")}
    try:
        with mock_aws():
            yield
    finally:
        os.environ.update(overrides)
