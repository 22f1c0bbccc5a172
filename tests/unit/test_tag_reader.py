"""Reading tags against the embedded AWS: none ({}) is not the same as unreadable (None)."""

from __future__ import annotations

import boto3
import pytest
from changeguard.adapters.tagging import AwsTagReader
from changeguard_tools.embedded.faults import fast_retries

ACCOUNT = "123456789012"
EMPTY_TEMPLATE = '{"Resources": {"Nothing": {"Type": "AWS::CloudFormation::WaitConditionHandle"}}}'


def group_arn() -> str:
    group = boto3.client("ec2").create_security_group(GroupName="untagged", Description="x")["GroupId"]
    return f"arn:aws:ec2:us-east-1:{ACCOUNT}:security-group/{group}"


def test_an_untagged_resource_and_a_deleted_one_have_no_tags(aws):
    reader = AwsTagReader()
    assert reader.tags_of(group_arn()) == {}
    assert reader.tags_of(f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-0deleted00000000") == {}


def test_a_stack_that_does_not_exist_has_no_tags(aws):
    boto3.client("cloudformation").create_stack(
        StackName="checkout", TemplateBody=EMPTY_TEMPLATE, Tags=[{"Key": "ChangeTicket", "Value": "CHG-1001"}]
    )
    reader = AwsTagReader()
    assert reader.stack_tags("checkout") == {"ChangeTicket": "CHG-1001"}
    assert reader.stack_tags("deleted-since") == {}  # DescribeStacks: ValidationError, no such stack


@pytest.mark.parametrize("fault", ["denied", "throttle"])
def test_tags_that_cannot_be_read_are_none(aws, fault):
    arn = group_arn()
    with fast_retries():
        aws.faults.fail(fault, operations=["GetResources", "DescribeStacks"])
        reader = AwsTagReader()
        assert reader.tags_of(arn) is None
        assert reader.stack_tags("checkout") is None
    aws.faults.clear()
    assert reader.tags_of(arn) == {}  # a failed read is not cached
