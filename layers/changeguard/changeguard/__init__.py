"""ChangeGuard runtime: what runs inside the Lambda functions.

Three layers, one direction of dependency:

* ``changeguard.models``   - inbound event models (what AWS sends us);
* ``changeguard.domain``   - pure decisions (no boto3, no HTTP, no clock reads);
* ``changeguard.adapters`` - boto3 and HTTP, the only modules that import them.

``changeguard.ports`` names the interfaces between domain and adapters and
``changeguard.services`` wires a decision to the adapter that carries it out.
"""

__version__ = "0.1.0"
