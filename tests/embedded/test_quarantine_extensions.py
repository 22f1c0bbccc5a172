"""The embedded AWS as quarantine needs it: interface groups replaced in order and only from the
interface's own VPC, create calls' responseElements."""

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


def _second_vpc_interface(aws: EmbeddedAWS, instance: dict, *groups: str) -> tuple[str, str]:
    """A secondary interface in a second VPC (a multi-VPC attachment), attached; (its id, its VPC)."""
    ec2 = aws.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(
        VpcId=vpc, CidrBlock="10.9.1.0/24", AvailabilityZone=instance["Placement"]["AvailabilityZone"]
    )["Subnet"]["SubnetId"]
    own = list(groups) or [ec2.create_security_group(GroupName="db", Description="db", VpcId=vpc)["GroupId"]]
    eni = ec2.create_network_interface(SubnetId=subnet, Groups=own)["NetworkInterface"]["NetworkInterfaceId"]
    ec2.attach_network_interface(NetworkInterfaceId=eni, InstanceId=instance["InstanceId"], DeviceIndex=1)
    return eni, vpc


def test_each_interface_reports_its_own_vpc_and_only_its_own_groups(aws):
    """A secondary interface has its own groups only (moto added the instance's), and its own VPC."""
    ec2 = aws.client("ec2")
    web = ec2.create_security_group(GroupName="web", Description="web")["GroupId"]
    launched = _instance(aws, web)
    eni, vpc = _second_vpc_interface(aws, launched)
    instance = ec2.describe_instances(InstanceIds=[launched["InstanceId"]])["Reservations"][0]["Instances"][0]
    interfaces = {n["NetworkInterfaceId"]: n for n in instance["NetworkInterfaces"]}
    primary = launched["NetworkInterfaces"][0]["NetworkInterfaceId"]
    assert interfaces[primary]["VpcId"] == instance["VpcId"] != vpc
    assert interfaces[eni]["VpcId"] == vpc
    assert [g["GroupId"] for g in interfaces[primary]["Groups"]] == [web]
    [own] = [g["GroupId"] for g in interfaces[eni]["Groups"]]
    assert ec2.describe_security_groups(GroupIds=[own])["SecurityGroups"][0]["VpcId"] == vpc


def test_a_group_of_another_vpc_is_refused_and_nothing_changes(aws):
    """As AWS does: the groups of an interface must belong to the interface's VPC."""
    ec2 = aws.client("ec2")
    web = ec2.create_security_group(GroupName="web", Description="web")["GroupId"]
    launched = _instance(aws, web)
    eni, vpc = _second_vpc_interface(aws, launched)
    before = ec2.describe_instances(InstanceIds=[launched["InstanceId"]])["Reservations"]
    there = ec2.create_security_group(GroupName="there", Description="there", VpcId=vpc)["GroupId"]
    primary = launched["NetworkInterfaces"][0]["NetworkInterfaceId"]
    for interface, groups in ((eni, [web]), (primary, [there]), (primary, [web, there])):
        with pytest.raises(ec2.exceptions.ClientError) as refused:
            ec2.modify_network_interface_attribute(NetworkInterfaceId=interface, Groups=groups)
        assert refused.value.response["Error"]["Code"] == "InvalidGroup.NotFound"
        assert "different networks" in refused.value.response["Error"]["Message"]
    assert ec2.describe_instances(InstanceIds=[launched["InstanceId"]])["Reservations"] == before
    ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[there])  # its own VPC's: fine
    [interface] = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"]
    assert [g["GroupId"] for g in interface["Groups"]] == [there]


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


def test_a_reservation_must_leave_100_of_the_accounts_1000_unreserved(aws):
    """PutFunctionConcurrency: at least 100 concurrent executions stay unreserved (default account limit
    1000); a reservation that would leave less is refused with InvalidParameterValueException."""
    role = aws.client("iam").create_role(RoleName="fn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("app.py", "def handler(e, c):\n    return 1\n")
    lam = aws.client("lambda")
    arns = {
        name: lam.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=role,
            Handler="app.handler",
            Code={"ZipFile": archive.getvalue()},
        )["FunctionArn"]
        for name in ("orders", "hog")
    }
    lam.put_function_concurrency(FunctionName="hog", ReservedConcurrentExecutions=450)
    lam.put_function_concurrency(FunctionName=arns["orders"], ReservedConcurrentExecutions=450)  # 100 left
    lam.put_function_concurrency(FunctionName=arns["orders"], ReservedConcurrentExecutions=450)  # not counted twice
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.put_function_concurrency(FunctionName="orders", ReservedConcurrentExecutions=451)
    assert lam.get_function_concurrency(FunctionName="orders")["ReservedConcurrentExecutions"] == 450
    lam.put_function_concurrency(FunctionName="orders", ReservedConcurrentExecutions=0)
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.put_function_concurrency(FunctionName="hog", ReservedConcurrentExecutions=901)
