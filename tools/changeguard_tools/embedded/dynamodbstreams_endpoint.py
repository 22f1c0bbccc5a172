"""Route DynamoDB Streams' account-based endpoint to moto under ``mock_aws``.

botocore 1.44's endpoint rules send DynamoDB Streams calls, when the credentials carry an account
id, to the account-based endpoint ``https://<account-id>.streams-ddb.<region>.amazonaws.com``, as
they send DynamoDB's to ``<account-id>.ddb.<region>.amazonaws.com``. moto 5.2 routes the account-based
DynamoDB host but knows only ``streams.dynamodb.<region>.amazonaws.com`` for the streams API, so
under ``mock_aws`` every streams call (``DescribeStream`` first) was answered "404 Not yet
implemented". The moto server is not affected: there the client's endpoint is the server's URL and
moto picks the service from the request's signature and ``X-Amz-Target``.

The patch adds the account-based host to the URL patterns moto's request interceptor matches and to
the streams backend's own URL bases; the operations behind it are moto's.
"""

from __future__ import annotations

import re

from moto import backend_index
from moto.dynamodbstreams import urls as streams_urls

from changeguard_tools.embedded.extensions import installer

__all__ = ["ACCOUNT_ENDPOINT", "patch"]

#: ``https://<account-id>.streams-ddb.<region>.amazonaws.com`` (and the China partition's suffix).
ACCOUNT_ENDPOINT = r"https?://(\d{12})\.streams-ddb\.(.+)\.amazonaws\.com"


@installer
def patch() -> None:
    """Applied by ``extensions.install()``; idempotent."""
    if ACCOUNT_ENDPOINT not in streams_urls.url_bases:
        streams_urls.url_bases.append(ACCOUNT_ENDPOINT)
    patterns = backend_index.backend_url_patterns
    if not any(service == "dynamodbstreams" and p.pattern == ACCOUNT_ENDPOINT for service, p in patterns):
        patterns.append(("dynamodbstreams", re.compile(ACCOUNT_ENDPOINT)))
