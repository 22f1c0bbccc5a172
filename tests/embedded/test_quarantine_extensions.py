"""The embedded AWS as quarantine needs it: interface groups replaced in order, create calls' responseElements."""

from __future__ import annotations

import io
import zipfile

import pytest
from changeguard_tools.embedded import EmbeddedAWS


def _instance(aws: EmbeddedAWS, *groups: str) -> dict:
    return aws.client("ec2").run_instances(
        ImageId="ami-12345678", MinCount=1, MaxCount=1, SecurityGroupIds=list(groups)
    )["Instances"][0]


def test_replacing_the_primary_interfaces_groups_replaces_the_instances_groups(aws):
    ec2 = aws.client("ec2")
    web = ec2.create_security_group(GroupName="web", Description="web")["GroupId"]
    app = ec2.create_security_group(GroupName="app", Description="app")["GroupId"]
    isolation = ec2.create_security_group(GroupName="isolation", Description="none")["GroupId"]
    launched = _instance(aws, web, app)
    eni = launched["NetworkInterfaces"][0]["NetworkInterfaceId"]
    before = ec2.describe_instances(InstanceIds=[launched["InstanceId"]])["Reservations"]

    ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[isolation])
    instance = ec2.describe_instances(InstanceIds=[launched["InstanceId"]])["Reservations"][0]["Instances"][0]
    assert [g["GroupId"] for g in instance["SecurityGroups"]] == [isolation]
    assert [g["GroupId"] for g in instance["NetworkInterfaces"][0]["Groups"]] == [isolation]

    ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[web, app])
    assert ec2.describe_instances(InstanceIds=[launched["InstanceId"]])["Reservations"] == before


def test_interface_groups_keep_their_order(aws):
    ec2 = aws.client("ec2")
    ids = [ec2.create_security_group(GroupName=f"g{i}", Description="g")["GroupId"] for i in range(4)]
    launched = _instance(aws, *ids)
    for _ in range(3):
        interfaces = ec2.describe_network_interfaces(
            NetworkInterfaceIds=[launched["NetworkInterfaces"][0]["NetworkInterfaceId"]]
        )
        assert [g["GroupId"] for g in interfaces["NetworkInterfaces"][0]["Groups"]] == ids


def test_create_calls_record_the_new_ids_in_response_elements(aws):
    ec2 = aws.client("ec2")
    group = ec2.create_security_group(GroupName="web", Description="web")["GroupId"]
    instance = _instance(aws, group)["InstanceId"]
    role = aws.client("iam").create_role(RoleName="fn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("app.py", "def handler(e, c):\n    return 1\n")
    function = aws.client("lambda").create_function(
        FunctionName="orders",
        Runtime="python3.12",
        Role=role,
        Handler="app.handler",
        Code={"ZipFile": archive.getvalue()},
    )["FunctionArn"]
    records = {r["eventName"]: r for r in aws.trail.records()}
    assert records["CreateSecurityGroup"]["responseElements"]["groupId"] == group
    assert records["RunInstances"]["responseElements"]["instancesSet"]["items"][0]["instanceId"] == instance
    assert records["CreateFunction20150331"]["responseElements"]["functionArn"] == function
    assert records["CreateRole"]["responseElements"] is None  # only the calls in the table


def test_a_failed_create_has_no_response_elements(aws):
    ec2 = aws.client("ec2")
    ec2.create_security_group(GroupName="web", Description="web")
    with pytest.raises(ec2.exceptions.ClientError):
        ec2.create_security_group(GroupName="web", Description="web")
    failed = [r for r in aws.trail.records() if r["eventName"] == "CreateSecurityGroup" and r.get("errorCode")]
    assert len(failed) == 1 and failed[0]["responseElements"] is None


def test_get_function_answers_as_to_a_caller_without_list_tags(aws):
    """GetFunction carries TagsError, never Tags (AWS returns Tags only to a caller explicitly allowed
    lambda:ListTags, and the embedded AWS evaluates no IAM); ListTags returns the tags."""
    role = aws.client("iam").create_role(RoleName="fn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("app.py", "def handler(e, c):\n    return 1\n")
    lam = aws.client("lambda")
    arn = lam.create_function(
        FunctionName="orders",
        Runtime="python3.12",
        Role=role,
        Handler="app.handler",
        Code={"ZipFile": archive.getvalue()},
        Tags={"Owner": "payments"},
    )["FunctionArn"]
    function = lam.get_function(FunctionName="orders")
    assert "Tags" not in function and function["TagsError"]["ErrorCode"]
    assert function["Configuration"]["FunctionName"] == "orders"
    assert lam.list_tags(Resource=arn)["Tags"] == {"Owner": "payments"}
