"""S3 buckets: Block Public Access on, and a deny-all bucket policy that spares the people who must get in.

The deny statement spares the break-glass roles (tunable ``break-glass-role-arns``) and the
suite's own role path: without that exception the release could not put the original policy
back. It leaves out reading and writing the bucket's tags, so that its owner can tag it to
release it. The original policy (or none) and Block Public Access settings (or none) are saved.
Every bucket call passes ``ExpectedBucketOwner``, so a same-named bucket in another account is
never touched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from changeguard.domain.partition import partition_of, role_prefix_in
from changeguard.domain.quarantine import ReleaseResult, ResourceRef
from changeguard.quarantine.base import (
    QuarantineHandler,
    QuarantineSettings,
    ReleaseOutcome,
    ResourceState,
    error_code,
    register,
)

DENY_SID = "ChangeGuardQuarantineDenyAll"
BLOCK_ALL: dict[str, bool] = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
_NO_PAB = "NoSuchPublicAccessBlockConfiguration"
_NO_POLICY = "NoSuchBucketPolicy"
_NO_TAGS = "NoSuchTagSet"
_BUCKET_NAME = re.compile(r"^[a-zA-Z0-9.\-_]{1,255}$")
#: What the deny leaves to the bucket's own IAM permissions: reading and writing its tags. Every alert
#: tells the owner to tag the resource to release it; denied these, nobody but the suite and the
#: break-glass roles could (the account root is spared only the bucket-policy calls), and a bucket
#: quarantined with no break-glass role configured could not be released the documented way. A
#: bucket with attribute-based access control (ABAC) enabled takes its tags through ``TagResource``,
#: ``UntagResource`` and ``ListTagsForResource`` only: S3 refuses ``PutBucketTagging`` on it (S3 API
#: reference, PutBucketAbac), so those are left to the owner too. None of them reads or writes data.
OWNER_ACTIONS = (
    "s3:GetBucketTagging",
    "s3:PutBucketTagging",
    "s3:TagResource",
    "s3:UntagResource",
    "s3:ListTagsForResource",
)


def quarantine_policy(bucket: str, account: str, settings: QuarantineSettings, partition: str = "aws") -> str:
    """The deny-all bucket policy: nobody but the break-glass roles and the suite may use the bucket,
    except to read and write its tags (``OWNER_ACTIONS``).

    ``aws:PrincipalArn`` is the role ARN for assumed-role sessions, so role ARNs (with wildcards)
    are what the exception lists. The account root can still delete a policy that locks
    everyone out: that is the way back if this one is ever wrong.
    """
    prefix = settings.suite_role_prefix or f"arn:{partition}:iam::{account}:role/changeguard/"
    # Issue 9: in a member account the suite acts through its member role, under the same path in
    # the bucket's own account: sparing only the central account's roles would lock the suite out
    # of the bucket it quarantined, and nothing but the owner's root could release it.
    here = role_prefix_in(prefix, account) or f"arn:{partition}:iam::{account}:role/changeguard/"
    spared = list(dict.fromkeys([prefix.rstrip("*") + "*", here + "*"]))
    spared += [arn for arn in settings.break_glass_role_arns if arn not in spared]
    document = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": DENY_SID,
                "Effect": "Deny",
                "Principal": "*",
                # A Deny with NotAction denies every action but those listed, on the resources listed
                # (IAM JSON policy elements: NotAction); it allows nothing by itself.
                "NotAction": list(OWNER_ACTIONS),
                "Resource": [f"arn:{partition}:s3:::{bucket}", f"arn:{partition}:s3:::{bucket}/*"],
                "Condition": {"ArnNotLike": {"aws:PrincipalArn": spared}},
            }
        ],
    }
    return json.dumps(document, separators=(",", ":"))


def same_policy(a: str | None, b: str | None) -> bool:
    """Bucket policies compare as JSON documents (S3 may return them reformatted)."""
    if a is None or b is None:
        return a is b
    try:
        return bool(json.loads(a) == json.loads(b))
    except ValueError:
        return a == b


@register
class S3BucketQuarantine(QuarantineHandler):
    type = "s3:bucket"
    config_type = "AWS::S3::Bucket"
    event_source = "s3.amazonaws.com"
    service = "s3"
    describes = "turn on Block Public Access and put a deny-all bucket policy (break-glass roles excepted)"
    notes = (
        "Every request to the bucket is denied, including AWS services delivering to it (logs, replication),"
        " except from the break-glass roles and ChangeGuard's own roles.",
    )
    permissions = (
        "s3:GetBucketTagging",
        "s3:PutBucketTagging",
        "s3:GetBucketPolicy",
        "s3:PutBucketPolicy",
        "s3:DeleteBucketPolicy",
        "s3:GetBucketPublicAccessBlock",
        "s3:PutBucketPublicAccessBlock",
    )
    id_paths = {
        "CreateBucket": ("requestParameters.bucketName",),
        "PutBucketTagging": ("requestParameters.bucketName",),
        "DeleteBucketTagging": ("requestParameters.bucketName",),
    }

    # -- naming -------------------------------------------------------------------------------
    def normalize_id(self, value: str) -> str | None:
        if value.startswith("arn:"):
            if not self.owns_arn(value):
                return None
            value = value.split(":::", 1)[1]
        # What S3 (and botocore, before sending) accepts as a bucket name, legacy names included:
        # anything else is no bucket, and is skipped rather than sent.
        return value if _BUCKET_NAME.fullmatch(value) else None

    def arn(self, resource_id: str, account: str, region: str) -> str:
        return f"arn:{partition_of(region)}:s3:::{resource_id}"

    def owns_arn(self, arn: str) -> bool:
        return arn.startswith("arn:aws") and ":s3:::" in arn and "/" not in arn.split(":::", 1)[1]

    # -- state --------------------------------------------------------------------------------
    def read(self, ref: ResourceRef) -> ResourceState | None:
        from botocore.exceptions import ClientError

        s3 = self.api(ref)
        bucket = {"Bucket": ref.resource_id, "ExpectedBucketOwner": ref.account}
        try:
            try:
                tag_set = s3.get_bucket_tagging(**bucket)["TagSet"]
            except ClientError as exc:
                if error_code(exc) != _NO_TAGS:
                    raise
                tag_set = []
            try:
                pab: dict[str, bool] | None = dict(
                    s3.get_public_access_block(**bucket)["PublicAccessBlockConfiguration"]
                )
            except ClientError as exc:
                if error_code(exc) != _NO_PAB:
                    raise
                pab = None
            try:
                policy: str | None = str(s3.get_bucket_policy(**bucket)["Policy"])
            except ClientError as exc:
                if error_code(exc) != _NO_POLICY:
                    raise
                policy = None
        except ClientError:
            return None  # gone, another owner's, or access denied: never act on what we cannot see
        return ResourceState(
            ref=ref,
            name=ref.resource_id,
            tags={t["Key"]: t.get("Value", "") for t in tag_set},
            config={"public_access_block": pab, "policy": policy},
        )

    def snapshot(self, ref: ResourceRef, state: ResourceState, settings: QuarantineSettings) -> dict[str, Any]:
        return {
            "public_access_block": state.config["public_access_block"],
            "policy": state.config["policy"],
            "quarantine_policy": quarantine_policy(ref.resource_id, ref.account, settings, partition_of(ref.region)),
        }

    # -- quarantine ---------------------------------------------------------------------------
    def quarantine(
        self,
        ref: ResourceRef,
        state: ResourceState,
        settings: QuarantineSettings,
        saved: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        saved = saved if saved is not None else self.snapshot(ref, state, settings)
        s3 = self.api(ref)
        bucket = {"Bucket": ref.resource_id, "ExpectedBucketOwner": ref.account}
        if state.config["public_access_block"] != BLOCK_ALL:
            s3.put_public_access_block(**bucket, PublicAccessBlockConfiguration=dict(BLOCK_ALL))
        if not same_policy(state.config["policy"], saved["quarantine_policy"]):
            s3.put_bucket_policy(**bucket, Policy=saved["quarantine_policy"])
        return saved

    # -- release ------------------------------------------------------------------------------
    def release(self, ref: ResourceRef, saved: dict[str, Any], *, dry_run: bool = False) -> ReleaseOutcome:
        state = self.read(ref)
        if state is None:
            return ReleaseOutcome(result=ReleaseResult.DRIFT, detail=f"bucket {ref.resource_id} can no longer be read")
        pab, policy = state.config["public_access_block"], state.config["policy"]
        original_pab, original_policy = saved.get("public_access_block"), saved.get("policy")
        if pab == original_pab and same_policy(policy, original_policy):
            return ReleaseOutcome(result=ReleaseResult.NOOP, detail="the original policy and settings are in place")
        # Each half is either as quarantine left it or already restored (an interrupted release).
        pab_ok = pab in (BLOCK_ALL, original_pab)
        policy_ok = same_policy(policy, saved.get("quarantine_policy")) or same_policy(policy, original_policy)
        if not (pab_ok and policy_ok):
            changed = [n for n, ok in (("Block Public Access", pab_ok), ("bucket policy", policy_ok)) if not ok]
            return ReleaseOutcome(
                result=ReleaseResult.DRIFT, detail=f"{' and '.join(changed)} changed while quarantined"
            )
        calls: list[str] = []
        s3 = self.api(ref)
        bucket = {"Bucket": ref.resource_id, "ExpectedBucketOwner": ref.account}
        # Settings first: a public original policy can only go back once Block Public Access allows it.
        if pab != original_pab:
            calls.append("restore Block Public Access" if original_pab else "remove Block Public Access")
            if not dry_run:
                if original_pab is None:
                    s3.delete_public_access_block(**bucket)
                else:
                    s3.put_public_access_block(**bucket, PublicAccessBlockConfiguration=dict(original_pab))
        if not same_policy(policy, original_policy):
            calls.append("restore the bucket policy" if original_policy else "delete the quarantine policy")
            if not dry_run:
                if original_policy is None:
                    s3.delete_bucket_policy(**bucket)
                else:
                    s3.put_bucket_policy(**bucket, Policy=original_policy)
        return ReleaseOutcome(
            result=ReleaseResult.RESTORED,
            detail="original bucket policy and Block Public Access settings restored",
            calls=tuple(calls),
        )

    # -- tags (PutBucketTagging replaces the whole set: read, change, write) -----------------
    def set_tags(self, ref: ResourceRef, tags: Mapping[str, str]) -> None:
        current = self._tags(ref)
        merged = {**current, **tags}
        if merged != current:
            self._put_tags(ref, merged)

    def remove_tags(self, ref: ResourceRef, keys: list[str]) -> None:
        current = self._tags(ref)
        left = {k: v for k, v in current.items() if k not in keys}
        if left == current:
            return
        bucket = {"Bucket": ref.resource_id, "ExpectedBucketOwner": ref.account}
        if left:
            self._put_tags(ref, left)
        else:
            self.api(ref).delete_bucket_tagging(**bucket)

    def _tags(self, ref: ResourceRef) -> dict[str, str]:
        from botocore.exceptions import ClientError

        try:
            tag_set = self.api(ref).get_bucket_tagging(Bucket=ref.resource_id, ExpectedBucketOwner=ref.account)[
                "TagSet"
            ]
        except ClientError as exc:
            if error_code(exc) != _NO_TAGS:
                raise
            return {}
        return {t["Key"]: t.get("Value", "") for t in tag_set}

    def _put_tags(self, ref: ResourceRef, tags: Mapping[str, str]) -> None:
        self.api(ref).put_bucket_tagging(
            Bucket=ref.resource_id,
            ExpectedBucketOwner=ref.account,
            Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]},
        )
