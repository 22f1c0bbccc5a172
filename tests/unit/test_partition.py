"""ARNs in every partition: ``arn:aws-cn:``, ``arn:aws-us-gov:`` ... not ``arn:aws:`` everywhere.

A bucket policy naming ``arn:aws:s3:::b`` is rejected in China and GovCloud, a tag lookup by an
``arn:aws:`` ARN finds nothing there, and a ticket listing the resource's real ARN would never
match the one the correlator computed.
"""

from __future__ import annotations

import json
from pathlib import Path

import botocore
import pytest
from changeguard.domain.partition import is_region, partition_of
from changeguard.domain.quarantine import ResourceRef
from changeguard.domain.resources import resource_arns
from changeguard.quarantine import REGISTRY, QuarantineSettings, ResourceState
from changeguard.quarantine.s3_bucket import S3BucketQuarantine

ACCOUNT = "123456789012"
ENDPOINTS = json.loads((Path(botocore.__file__).parent / "data" / "endpoints.json").read_text())
EVERY_REGION = [(region, p["partition"]) for p in ENDPOINTS["partitions"] for region in p["regions"]]


@pytest.mark.parametrize(("region", "partition"), EVERY_REGION)
def test_every_region_botocore_knows_is_named_in_its_own_partition(region: str, partition: str) -> None:
    assert partition_of(region) == partition
    assert is_region(region)


@pytest.mark.parametrize("value", ['"us-east-1"', "us-east-1\n", "us east 1", "", "xx", None, 1])
def test_what_is_shaped_like_no_region_name_is_no_region(value: object) -> None:
    assert not is_region(value)


def test_an_unknown_or_missing_region_is_taken_as_the_commercial_partition() -> None:
    assert partition_of(None) == "aws"
    assert partition_of("") == "aws"
    assert partition_of("xx-future-1") == "aws"


@pytest.mark.parametrize(
    ("source", "name", "record", "region", "arn"),
    [
        (
            "sqs.amazonaws.com",
            "DeleteQueue",
            {"requestParameters": {"queueUrl": f"https://sqs.eusc-de-east-1.amazonaws.eu/{ACCOUNT}/q"}},
            "us-east-1",  # the queue's own region, from its URL, wins over the call's
            f"arn:aws-eusc:sqs:eusc-de-east-1:{ACCOUNT}:q",
        ),
        (
            "sqs.amazonaws.com",
            "DeleteQueue",
            {"requestParameters": {"queueUrl": f"https://us-west-2.queue.amazonaws.com/{ACCOUNT}/q"}},
            "us-east-1",
            f"arn:aws:sqs:us-west-2:{ACCOUNT}:q",
        ),
        (
            "ec2.amazonaws.com",
            "RunInstances",
            {"responseElements": {"instancesSet": {"items": [{"instanceId": "i-0abc"}]}}},
            "cn-north-1",
            f"arn:aws-cn:ec2:cn-north-1:{ACCOUNT}:instance/i-0abc",
        ),
        (
            "ec2.amazonaws.com",
            "CreateTags",
            {"requestParameters": {"resourcesSet": {"items": [{"resourceId": "sg-0abc"}]}}},
            "us-gov-west-1",
            f"arn:aws-us-gov:ec2:us-gov-west-1:{ACCOUNT}:security-group/sg-0abc",
        ),
        (
            "s3.amazonaws.com",
            "PutBucketTagging",
            {"requestParameters": {"bucketName": "acme-logs"}},
            "cn-northwest-1",
            "arn:aws-cn:s3:::acme-logs",
        ),
        (
            "iam.amazonaws.com",
            "PutRolePolicy",
            {"requestParameters": {"roleName": "deployer"}},
            "us-gov-west-1",
            f"arn:aws-us-gov:iam::{ACCOUNT}:role/deployer",
        ),
        (
            "ssm.amazonaws.com",
            "PutParameter",
            {"requestParameters": {"name": "/changeguard/prod/enforcement-mode"}},
            "cn-north-1",
            f"arn:aws-cn:ssm:cn-north-1:{ACCOUNT}:parameter/changeguard/prod/enforcement-mode",
        ),
        (
            "sqs.amazonaws.com",
            "SetQueueAttributes",
            {"requestParameters": {"queueUrl": f"https://sqs.cn-north-1.amazonaws.com.cn/{ACCOUNT}/q"}},
            "cn-north-1",
            f"arn:aws-cn:sqs:cn-north-1:{ACCOUNT}:q",
        ),
        (
            "ec2.amazonaws.com",
            "RunInstances",
            {"responseElements": {"instancesSet": {"items": [{"instanceId": "i-0abc"}]}}},
            "us-east-1",
            f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-0abc",
        ),
    ],
)
def test_resource_arns_from_a_record_carry_the_partition_of_its_region(
    source: str, name: str, record: dict, region: str, arn: str
) -> None:
    assert arn in resource_arns(source, name, record, region, ACCOUNT)


@pytest.mark.parametrize("type_name", sorted(REGISTRY))
def test_the_quarantine_registry_names_resources_in_their_partition(type_name: str) -> None:
    handler = REGISTRY[type_name]()
    for region in ("cn-north-1", "us-gov-east-1", "eu-west-1"):
        arn = handler.arn("x-0abc", ACCOUNT, region)
        assert arn.startswith(f"arn:{partition_of(region)}:"), arn
        assert handler.owns_arn(arn)


def test_a_china_buckets_quarantine_policy_names_the_bucket_and_the_suites_roles_in_aws_cn() -> None:
    ref = ResourceRef(
        type="s3:bucket", resource_id="acme-logs", arn="arn:aws-cn:s3:::acme-logs", account=ACCOUNT, region="cn-north-1"
    )
    state = ResourceState(ref=ref, config={"public_access_block": None, "policy": None})
    saved = S3BucketQuarantine().snapshot(ref, state, QuarantineSettings())
    [statement] = json.loads(saved["quarantine_policy"])["Statement"]
    assert statement["Resource"] == ["arn:aws-cn:s3:::acme-logs", "arn:aws-cn:s3:::acme-logs/*"]
    assert statement["Condition"]["ArnNotLike"]["aws:PrincipalArn"] == [f"arn:aws-cn:iam::{ACCOUNT}:role/changeguard/*"]
