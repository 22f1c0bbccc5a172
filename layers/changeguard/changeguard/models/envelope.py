"""EventBridge's envelope as every function reads it: Powertools' ``EventBridgeModel``, with its
``region`` checked, and built on first use.

The functions build AWS clients for the region an event names (issue 9: they act where the event
came from), so a ``region`` that is no region name is bad input, rejected when the event is parsed,
not by botocore halfway through handling it (issue 8). ``defer_build``: Powertools builds its own
model at import; the envelopes of ours are built when a function first validates one, so a
function pays only for the kinds of event it receives.
"""

from __future__ import annotations

from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import ConfigDict

from changeguard.models.cloudtrail import Region


class Envelope(EventBridgeModel):
    model_config = ConfigDict(defer_build=True)

    region: Region
