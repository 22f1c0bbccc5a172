"""The quarantine bucket policy, as a document: the embedded AWS stores bucket policies but never evaluates them.

A small evaluator applies the document the way IAM does for these elements (Deny with Principal
"*", ``Action`` or ``NotAction``, the bucket and its objects, ``ArnNotLike`` on ``aws:PrincipalArn``
matched per ARN component) and checks who is locked out: everyone but the break-glass roles and the
suite's own roles, which must keep access or the release could not put the original policy back;
and out of nothing but the bucket's tags, which its owner must be able to set to release it.
"""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from typing import Any

import pytest
from changeguard.domain.quarantine import ResourceRef
from changeguard.quarantine import QuarantineSettings, ResourceState
from changeguard.quarantine.s3_bucket import DENY_SID, S3BucketQuarantine, quarantine_policy, same_policy

ACCOUNT = "123456789012"
BUCKET = "acme-scratch-exports"
SUITE = f"arn:aws:iam::{ACCOUNT}:role/changeguard/"
BREAK_GLASS = (f"arn:aws:iam::{ACCOUNT}:role/BreakGlass", f"arn:aws:iam::{ACCOUNT}:role/security/*")
SETTINGS = QuarantineSettings(suite_role_prefix=SUITE, break_glass_role_arns=BREAK_GLASS)


def _arn_like(value: str, pattern: str) -> bool:
    """IAM's ArnLike: the six colon-separated components match one by one, wildcards within each."""
    got, want = value.split(":", 5), pattern.split(":", 5)
    return len(got) == len(want) == 6 and all(fnmatchcase(g, w) for g, w in zip(got, want, strict=True))


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def denied(document: dict[str, Any], principal_arn: str, action: str, resource: str) -> bool:
    for statement in document["Statement"]:
        if statement["Effect"] != "Deny" or statement["Principal"] != "*":
            continue
        if "NotAction" in statement:
            if any(fnmatchcase(action, a) for a in _listed(statement["NotAction"])):
                continue
        elif not any(fnmatchcase(action, a) for a in _listed(statement["Action"])):
            continue
        if not any(fnmatchcase(resource, r) for r in _listed(statement["Resource"])):
            continue
        condition = statement.get("Condition", {})
        assert set(condition) <= {"ArnNotLike"}, f"the evaluator does not know {set(condition)}"
        spared = _listed(condition.get("ArnNotLike", {}).get("aws:PrincipalArn", []))
        if not any(_arn_like(principal_arn, pattern) for pattern in spared):
            return True
    return False


DOCUMENT = json.loads(quarantine_policy(BUCKET, ACCOUNT, SETTINGS))
BUCKET_ARN, OBJECT_ARN = f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/exports/2026-11.csv"


@pytest.mark.parametrize(
    "principal",
    [
        f"arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_AdministratorAccess_a1b2",
        f"arn:aws:iam::{ACCOUNT}:role/orders-app",
        f"arn:aws:iam::{ACCOUNT}:user/dave",
        f"arn:aws:iam::{ACCOUNT}:root",
        f"arn:aws:iam::{ACCOUNT}:role/changeguard-impostor",  # a name, not the /changeguard/ path
        f"arn:aws:iam::{ACCOUNT}:role/BreakGlassToo",  # the exception is exact, not a prefix
        "arn:aws:iam::999999999999:role/changeguard/changeguard-dev-EnforceTagsFunctionRole-X",  # another account
        "arn:aws:iam::999999999999:role/BreakGlass",
        "arn:aws:iam::999999999999:root",
    ],
)
@pytest.mark.parametrize(
    "action",
    [
        "s3:GetObject",
        "s3:PutObject",
        "s3:ListBucket",
        "s3:PutBucketPolicy",
        "s3:DeleteBucketTagging",
        "s3:PutObjectTagging",
        "s3:DeleteBucket",
    ],
)
def test_everyone_else_is_denied_everything_but_the_buckets_tags(principal, action):
    assert denied(DOCUMENT, principal, action, BUCKET_ARN)
    assert denied(DOCUMENT, principal, action, OBJECT_ARN)


@pytest.mark.parametrize(
    "principal",
    [
        f"arn:aws:iam::{ACCOUNT}:role/BreakGlass",
        f"arn:aws:iam::{ACCOUNT}:role/security/incident-responder",
        f"arn:aws:iam::{ACCOUNT}:role/changeguard/changeguard-dev-EnforceTagsFunctionRole-1A2B",
        f"arn:aws:iam::{ACCOUNT}:role/changeguard/changeguard-dev-SweepQuarantineFunctionRole-3C4D",
    ],
)
@pytest.mark.parametrize(
    "action", ["s3:GetObject", "s3:PutBucketPolicy", "s3:DeleteBucketPolicy", "s3:PutBucketPublicAccessBlock"]
)
def test_break_glass_roles_and_the_suite_are_spared(principal, action):
    # Spared by the deny: the release can put the original policy back, responders can get in.
    assert not denied(DOCUMENT, principal, action, BUCKET_ARN)
    assert not denied(DOCUMENT, principal, action, OBJECT_ARN)


OWNERS_TAG_ACTIONS = [
    "s3:GetBucketTagging",
    "s3:PutBucketTagging",
    # A bucket with ABAC enabled is tagged only through these (S3 refuses PutBucketTagging on it).
    "s3:TagResource",
    "s3:UntagResource",
    "s3:ListTagsForResource",
]


@pytest.mark.parametrize("action", OWNERS_TAG_ACTIONS)
def test_the_owner_can_still_tag_the_bucket_to_release_it(action):
    """Every quarantine alert says: tag it and ChangeGuard releases it. With no break-glass role
    configured (the default), denying the tag calls left nobody able to do that but the suite."""
    default = json.loads(quarantine_policy(BUCKET, ACCOUNT, QuarantineSettings(suite_role_prefix=SUITE)))
    owner = f"arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_PowerUserAccess_0f9e"
    assert not denied(default, owner, action, BUCKET_ARN)
    assert not denied(DOCUMENT, owner, action, BUCKET_ARN)


def test_it_grants_nothing_and_covers_the_bucket_and_every_object_only():
    [statement] = DOCUMENT["Statement"]
    assert DOCUMENT["Version"] == "2012-10-17"
    assert statement["Sid"] == DENY_SID and statement["Effect"] == "Deny" and statement["Principal"] == "*"
    assert "Action" not in statement
    assert statement["NotAction"] == OWNERS_TAG_ACTIONS
    assert sorted(statement["Resource"]) == [BUCKET_ARN, f"{BUCKET_ARN}/*"]
    assert "NotPrincipal" not in statement  # NotPrincipal with Deny is the documented foot-gun
    assert not denied(
        DOCUMENT, f"arn:aws:iam::{ACCOUNT}:role/orders-app", "s3:GetObject", "arn:aws:s3:::other-bucket/x"
    )


def test_without_break_glass_roles_only_the_suite_is_spared():
    document = json.loads(quarantine_policy(BUCKET, ACCOUNT, QuarantineSettings(suite_role_prefix=SUITE)))
    spared = document["Statement"][0]["Condition"]["ArnNotLike"]["aws:PrincipalArn"]
    assert spared == [f"{SUITE}*"]
    # With no suite prefix wired, the suite's role path in the bucket's account is spared all the same.
    default = json.loads(quarantine_policy(BUCKET, ACCOUNT, QuarantineSettings()))
    assert default["Statement"][0]["Condition"]["ArnNotLike"]["aws:PrincipalArn"] == [f"{SUITE}*"]


def test_many_break_glass_roles_stay_within_the_bucket_policy_size_limit():
    many = QuarantineSettings(
        suite_role_prefix=SUITE,
        break_glass_role_arns=tuple(f"arn:aws:iam::{ACCOUNT}:role/bg-{i:03d}" for i in range(100)),
    )
    assert len(quarantine_policy(BUCKET, ACCOUNT, many).encode()) < 20 * 1024


def test_the_saved_state_carries_the_exact_policy_that_quarantine_puts():
    ref = ResourceRef(type="s3:bucket", resource_id=BUCKET, arn=BUCKET_ARN, account=ACCOUNT, region="us-east-1")
    original = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::acme-scratch-exports/*"}]}'
    state = ResourceState(ref=ref, config={"public_access_block": None, "policy": original})
    saved = S3BucketQuarantine().snapshot(ref, state, SETTINGS)
    assert saved["policy"] == original and saved["public_access_block"] is None
    assert json.loads(saved["quarantine_policy"]) == DOCUMENT


def test_policies_compare_as_documents():
    assert same_policy('{"a": 1, "b": [1, 2]}', '{"b":[1,2],"a":1}')
    assert not same_policy('{"a": 1}', '{"a": 2}')
    assert same_policy(None, None) and not same_policy(None, "{}")


@pytest.mark.parametrize(
    "name",
    [
        "acme-scratch-exports",
        "Legacy_Bucket.Name",  # names S3 once allowed in us-east-1
        '"acme-scratch-exports"',  # a quoted name, as a malformed event can carry it
        "acme scratch",
        "acme-scratch\n",
        "",
        "a" * 256,
    ],
)
def test_a_name_botocore_would_refuse_to_send_is_no_bucket(name: str) -> None:
    """Found by the full-size bad-input run: a quoted bucket name reached S3 calls and botocore
    raised ParamValidationError, an exception that is neither an outcome nor the typed rejection."""
    from botocore.exceptions import ParamValidationError
    from botocore.handlers import validate_bucket_name

    try:
        validate_bucket_name({"Bucket": name})
        refused = False
    except ParamValidationError:
        refused = True
    found = S3BucketQuarantine().normalize_id(name)
    if refused:
        assert found is None
    # Stricter than botocore where S3 itself would refuse: no empty name, no trailing newline.
    assert (found is not None) is (name in ("acme-scratch-exports", "Legacy_Bucket.Name"))


MEMBER = "222222222222"
MEMBER_DOCUMENT = json.loads(quarantine_policy(BUCKET, MEMBER, SETTINGS))  # the central stack's settings


@pytest.mark.parametrize(
    "action",
    [*OWNERS_TAG_ACTIONS, "s3:GetBucketPolicy", "s3:PutBucketPolicy", "s3:DeleteBucketPolicy"],
)
def test_a_member_accounts_bucket_spares_the_suites_member_role_that_must_release_it(action):
    """Issue 9: the suite acts in a member account through its member role (same path, that account)."""
    member_role = f"arn:aws:iam::{MEMBER}:role/changeguard/changeguard-quarantine"
    assert not denied(MEMBER_DOCUMENT, member_role, action, BUCKET_ARN)
    # Nobody else of the member account gets in, nor a /changeguard/ role of a third account, but to
    # the bucket's tags: those the deny leaves to IAM, so that the owner can tag it to release it.
    tagging = action in OWNERS_TAG_ACTIONS
    assert denied(MEMBER_DOCUMENT, f"arn:aws:iam::{MEMBER}:role/orders-app", action, BUCKET_ARN) is not tagging
    assert (
        denied(MEMBER_DOCUMENT, f"arn:aws:iam::{MEMBER}:role/changeguard-impostor", action, BUCKET_ARN) is not tagging
    )
    assert denied(MEMBER_DOCUMENT, "arn:aws:iam::999999999999:role/changeguard/x", action, BUCKET_ARN) is not tagging


def test_the_member_role_path_follows_the_suites_and_is_listed_once_at_home():
    custom = QuarantineSettings(suite_role_prefix=f"arn:aws:iam::{ACCOUNT}:role/platform/changeguard/")
    spared = json.loads(quarantine_policy(BUCKET, MEMBER, custom))["Statement"][0]["Condition"]["ArnNotLike"]
    assert spared["aws:PrincipalArn"] == [
        f"arn:aws:iam::{ACCOUNT}:role/platform/changeguard/*",
        f"arn:aws:iam::{MEMBER}:role/platform/changeguard/*",
    ]
    at_home = DOCUMENT["Statement"][0]["Condition"]["ArnNotLike"]["aws:PrincipalArn"]
    assert at_home.count(f"{SUITE}*") == 1
