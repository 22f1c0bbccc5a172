"""The embedded AWS: moto's server plus what ChangeGuard needs of AWS that moto lacks.

* :mod:`.server` - :class:`EmbeddedAWS`, moto's server on 127.0.0.1 in a thread of this process;
* :mod:`.extensions` - the mechanism (and the recipe) for operations moto lacks;
* :mod:`.cloudtrail` - a CloudTrail record of every call served, and ``LookupEvents`` over them;
* :mod:`.dynamodb_atomic` - DynamoDB conditional writes that are atomic under concurrency;
* :mod:`.dynamodb_transactions` - ``TransactWriteItems`` all or nothing, without copying tables;
* :mod:`.dynamodbstreams_endpoint` - DynamoDB Streams' account-based endpoint under ``mock_aws``;
* :mod:`.faults` - throttling, 5xx and lost responses at the HTTP layer, so botocore's retries run;
* :mod:`.sts_source_identity` - ``AssumeRole`` keeps its ``SourceIdentity``;
* :mod:`.wire`, :mod:`.identity` - how a raw HTTP request becomes a named call and a caller.

Under ``mock_aws`` (no server), call :func:`install` once to get the same extensions.

Development and operator tooling only: none of it ships to Lambda.
"""

from changeguard_tools.embedded.cloudtrail import TRAIL, Trail
from changeguard_tools.embedded.extensions import install
from changeguard_tools.embedded.server import EmbeddedAWS, EmbeddedAWSError, in_process_aws

__all__ = ["TRAIL", "EmbeddedAWS", "EmbeddedAWSError", "Trail", "in_process_aws", "install"]
