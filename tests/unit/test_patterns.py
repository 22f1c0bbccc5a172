"""EventBridge pattern matcher, checked against the examples in the EventBridge documentation.

Each group names the page its cases come from. Where the user guide is silent, the group cites the
aws/event-ruler README (the engine behind EventBridge) or says that the case pins one of our own
decisions. Every group has both matching and non-matching cases, so any test can fail.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from changeguard_tools.patterns import InvalidPatternError, compile_pattern, matches, validate


def _cases(*cases: tuple[str, dict[str, Any], dict[str, Any], bool]) -> list[Any]:
    return [pytest.param(pattern, event, expected, id=name) for name, pattern, event, expected in cases]


def _check(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    assert matches(pattern, event) is expected
    # The JSON-text form and the compiled form must agree with the dict form.
    assert matches(json.dumps(pattern), event) is expected
    assert compile_pattern(pattern)(event) is expected


# --- "Amazon EventBridge event patterns" / "Event pattern syntax": fields are ANDed --------------

EC2_EVENT: dict[str, Any] = {
    "version": "0",
    "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "111122223333",
    "time": "2017-12-22T18:43:48Z",
    "region": "us-west-1",
    "resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"],
    "detail": {"instance-id": "i-1234567890abcdef0", "state": "terminated"},
}
EC2_TERMINATED = {
    "source": ["aws.ec2"],
    "detail-type": ["EC2 Instance State-change Notification"],
    "detail": {"state": ["terminated"]},
}

BASIC = _cases(
    ("ec2-terminated-matches", EC2_TERMINATED, EC2_EVENT, True),
    ("ec2-other-state", EC2_TERMINATED, {**EC2_EVENT, "detail": {"state": "running"}}, False),
    ("ec2-other-source", EC2_TERMINATED, {**EC2_EVENT, "source": "aws.rds"}, False),
    ("multiple-values-are-ored", {"source": ["aws.ec2", "aws.fargate"]}, {"source": "aws.fargate"}, True),
    ("multiple-values-none-equal", {"source": ["aws.ec2", "aws.fargate"]}, {"source": "aws.ecs"}, False),
    ("field-missing-from-event", EC2_TERMINATED, {**EC2_EVENT, "detail": {"instance-id": "i-1"}}, False),
    ("nesting-must-match", {"detail": {"state": ["terminated"]}}, {"state": "terminated"}, False),
    ("matching-is-case-sensitive", {"source": ["aws.ec2"]}, {"source": "AWS.EC2"}, False),
    ("string-does-not-equal-number", {"x": ["5"]}, {"x": 5}, False),
    ("number-does-not-equal-string", {"x": [5]}, {"x": "5"}, False),
    ("true-does-not-equal-1", {"x": [True]}, {"x": 1}, False),
    ("1-does-not-equal-true", {"x": [1]}, {"x": True}, False),
    ("boolean-exact", {"x": [False]}, {"x": False}, True),
    ("object-value-never-matches-leaf", {"detail": ["terminated"]}, {"detail": {"state": "terminated"}}, False),
    # Event Ruler compiles a number in a pattern to a numeric equality as well as its literal text.
    ("number-matches-by-value", {"x": [5]}, {"x": 5.0}, True),
    ("large-account-number", {"account": [123456789012]}, {"account": 123456789012}, True),
)


@pytest.mark.parametrize(("pattern", "event", "expected"), BASIC)
def test_basic_matching(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    _check(pattern, event, expected)


# --- "Arrays in Amazon EventBridge event patterns" -----------------------------------------------

ARRAY_PATTERN = {
    "resources": [
        "arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f",
        "arn:aws:ec2:us-east-1:111122223333:instance/i-b188560f",
        "arn:aws:ec2:us-east-1:444455556666:instance/i-b188560f",
    ]
}
ARRAY_EVENT = {
    "resources": [
        "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:eb56d16b-bbf0-401d-b893-d5978ed4a025"
        ":autoScalingGroupName/ASGTerminate",
        "arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f",
    ]
}

ARRAYS = _cases(
    ("doc-intersection-non-empty", ARRAY_PATTERN, ARRAY_EVENT, True),
    ("intersection-empty", ARRAY_PATTERN, {"resources": ["arn:aws:ec2:us-east-1:999:instance/i-1"]}, False),
    ("empty-event-array", ARRAY_PATTERN, {"resources": []}, False),
    ("operator-on-any-element", {"tags": [{"prefix": "team:"}]}, {"tags": ["env:prod", "team:a"]}, True),
    ("operator-on-no-element", {"tags": [{"prefix": "team:"}]}, {"tags": ["env:prod", "cost:1"]}, False),
    ("nested-event-arrays", {"x": ["b"]}, {"x": [["a"], ["b"]]}, True),
    ("objects-in-array-are-not-leaves", {"x": ["a"]}, {"x": [{"y": "a"}]}, False),
    ("mixed-array-scalar-element", {"x": ["a"]}, {"x": [{"y": "b"}, "a"]}, True),
)


@pytest.mark.parametrize(("pattern", "event", "expected"), ARRAYS)
def test_arrays(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    _check(pattern, event, expected)


# --- Arrays of objects: aws/event-ruler README, "JSON Array Matching" (array consistency) --------

EMPLOYEES = {
    "employees": [
        {"firstName": "John", "lastName": "Doe"},
        {"firstName": "Anna", "lastName": "Smith"},
        {"firstName": "Peter", "lastName": "Jones"},
    ]
}
S3_OBJECT_EVENT = {
    "source": "aws.s3",
    "detail": {
        "resources": [
            {"type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::amzn-s3-demo-bucket"},
            {"type": "AWS::S3::Object", "ARN": "arn:aws:s3:::amzn-s3-demo-bucket/key"},
        ]
    },
}

ARRAYS_OF_OBJECTS = _cases(
    ("readme-anna", {"employees": {"firstName": ["Anna"]}}, EMPLOYEES, True),
    ("readme-nobody", {"employees": {"firstName": ["Zoe"]}}, EMPLOYEES, False),
    (
        "readme-multilevel",
        {"employees": {"firstName": ["Peter"]}},
        {"employees": [[EMPLOYEES["employees"][0]], [EMPLOYEES["employees"][2]]]},
        True,
    ),
    # Both fields must come from the same element: Anna is a Smith, not a Jones.
    ("readme-anna-jones-inconsistent", {"employees": {"firstName": ["Anna"], "lastName": ["Jones"]}}, EMPLOYEES, False),
    ("same-element-consistent", {"employees": {"firstName": ["Anna"], "lastName": ["Smith"]}}, EMPLOYEES, True),
    ("s3-resource-type", {"detail": {"resources": {"type": ["AWS::S3::Object"]}}}, S3_OBJECT_EVENT, True),
    ("s3-resource-type-absent", {"detail": {"resources": {"type": ["AWS::EC2::Instance"]}}}, S3_OBJECT_EVENT, False),
    (
        "s3-resource-arn-suffix",
        {"detail": {"resources": {"type": ["AWS::S3::Object"], "ARN": [{"suffix": "/key"}]}}},
        S3_OBJECT_EVENT,
        True,
    ),
    (
        "s3-resource-arn-wrong-element",
        {"detail": {"resources": {"type": ["AWS::S3::Bucket"], "ARN": [{"suffix": "/key"}]}}},
        S3_OBJECT_EVENT,
        False,
    ),
    ("array-of-scalars-has-no-fields", {"resources": {"type": ["x"]}}, {"resources": ["x"]}, False),
)


@pytest.mark.parametrize(("pattern", "event", "expected"), ARRAYS_OF_OBJECTS)
def test_arrays_of_objects(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    _check(pattern, event, expected)


# --- "Matching null values and empty strings in Amazon EventBridge event patterns" ---------------

NULL_EVENT = {
    "version": "0",
    "detail-type": "EC2 Instance Launch Successful",
    "source": "aws.autoscaling",
    "resources": [],
    "detail": {"eventVersion": "", "responseElements": None},
}

NULLS = _cases(
    ("empty-string", {"detail": {"eventVersion": [""]}}, NULL_EVENT, True),
    ("null", {"detail": {"responseElements": [None]}}, NULL_EVENT, True),
    ("empty-string-is-not-null", {"detail": {"responseElements": [""]}}, NULL_EVENT, False),
    ("null-is-not-empty-string", {"detail": {"eventVersion": [None]}}, NULL_EVENT, False),
    ("null-does-not-match-missing", {"detail": {"errorCode": [None]}}, NULL_EVENT, False),
    ("comparison-operators-empty", {"LastName": [""]}, {"LastName": "Doe"}, False),
)


@pytest.mark.parametrize(("pattern", "event", "expected"), NULLS)
def test_null_and_empty(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    _check(pattern, event, expected)


# --- "Content filtering in Amazon EventBridge event patterns": prefix, suffix, ignore case -------

STRINGS = _cases(
    ("prefix", {"time": [{"prefix": "2017-10-02"}]}, {"time": "2017-10-02T18:43:48Z"}, True),
    ("prefix-no", {"time": [{"prefix": "2017-10-02"}]}, {"time": "2017-10-03T18:43:48Z"}, False),
    ("prefix-strings-only", {"x": [{"prefix": "1"}]}, {"x": 12}, False),
    ("prefix-europe", {"region": [{"prefix": "eu-"}]}, {"region": "us-east-1"}, False),
    (
        "prefix-ignore-case",
        {"detail": {"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}},
        {"detail": {"service": "eventbridge"}},
        True,
    ),
    (
        "prefix-ignore-case-no",
        {"detail": {"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}},
        {"detail": {"service": "sns"}},
        False,
    ),
    ("suffix", {"FileName": [{"suffix": ".png"}]}, {"FileName": "image.png"}, True),
    ("suffix-case-sensitive", {"FileName": [{"suffix": ".png"}]}, {"FileName": "image.PNG"}, False),
    (
        "suffix-ignore-case",
        {"detail": {"FileName": [{"suffix": {"equals-ignore-case": ".png"}}]}},
        {"detail": {"FileName": "IMAGE.PNG"}},
        True,
    ),
    (
        "suffix-ignore-case-no",
        {"detail": {"FileName": [{"suffix": {"equals-ignore-case": ".png"}}]}},
        {"detail": {"FileName": "image.jpg"}},
        False,
    ),
    # "Comparison operators for use in event patterns": Equals (ignore case).
    ("equals-ignore-case", {"Name": [{"equals-ignore-case": "alice"}]}, {"Name": "ALICE"}, True),
    ("equals-ignore-case-no", {"Name": [{"equals-ignore-case": "alice"}]}, {"Name": "alicia"}, False),
    ("equals-ignore-case-strings-only", {"x": [{"equals-ignore-case": "true"}]}, {"x": True}, False),
    (
        "and-location-day",
        {"Location": ["New York"], "Day": ["Monday"]},
        {"Location": "New York", "Day": "Monday"},
        True,
    ),
    ("and-one-fails", {"Location": ["New York"], "Day": ["Monday"]}, {"Location": "New York", "Day": "Friday"}, False),
)


@pytest.mark.parametrize(("pattern", "event", "expected"), STRINGS)
def test_string_operators(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    _check(pattern, event, expected)


# --- "Content filtering in Amazon EventBridge event patterns": anything-but ----------------------

ANYTHING_BUT = _cases(
    ("string", {"detail": {"state": [{"anything-but": "initializing"}]}}, {"detail": {"state": "running"}}, True),
    (
        "string-excluded",
        {"detail": {"state": [{"anything-but": "initializing"}]}},
        {"detail": {"state": "initializing"}},
        False,
    ),
    ("number", {"detail": {"x-limit": [{"anything-but": 123}]}}, {"detail": {"x-limit": 124}}, True),
    ("number-excluded", {"detail": {"x-limit": [{"anything-but": 123}]}}, {"detail": {"x-limit": 123.0}}, False),
    (
        "string-list",
        {"detail": {"state": [{"anything-but": ["stopped", "overloaded"]}]}},
        {"detail": {"state": "running"}},
        True,
    ),
    (
        "string-list-excluded",
        {"detail": {"state": [{"anything-but": ["stopped", "overloaded"]}]}},
        {"detail": {"state": "overloaded"}},
        False,
    ),
    ("number-list", {"detail": {"x-limit": [{"anything-but": [100, 200, 300]}]}}, {"detail": {"x-limit": 250}}, True),
    (
        "number-list-excluded",
        {"detail": {"x-limit": [{"anything-but": [100, 200, 300]}]}},
        {"detail": {"x-limit": 200}},
        False,
    ),
    # Event Ruler only excludes a value of the same type: the string "123" is not the number 123.
    ("number-vs-string", {"x": [{"anything-but": 123}]}, {"x": "123"}, True),
    ("prefix", {"detail": {"state": [{"anything-but": {"prefix": "init"}}]}}, {"detail": {"state": "running"}}, True),
    (
        "prefix-excluded",
        {"detail": {"state": [{"anything-but": {"prefix": "init"}}]}},
        {"detail": {"state": "initializing"}},
        False,
    ),
    ("prefix-own-events", {"source": [{"anything-but": {"prefix": "aws."}}]}, {"source": "com.example.orders"}, True),
    ("prefix-aws-events", {"source": [{"anything-but": {"prefix": "aws."}}]}, {"source": "aws.ec2"}, False),
    ("suffix", {"FileName": [{"anything-but": {"suffix": ".png"}}]}, {"FileName": "a.jpg"}, True),
    ("suffix-excluded", {"FileName": [{"anything-but": {"suffix": ".png"}}]}, {"FileName": "a.png"}, False),
    ("ignore-case", {"state": [{"anything-but": {"equals-ignore-case": "initializing"}}]}, {"state": "running"}, True),
    (
        "ignore-case-excluded",
        {"state": [{"anything-but": {"equals-ignore-case": "initializing"}}]},
        {"state": "INITIALIZING"},
        False,
    ),
    ("ignore-case-list", {"state": [{"anything-but": {"equals-ignore-case": ["a", "b"]}}]}, {"state": "B"}, False),
    ("wildcard", {"FilePath": [{"anything-but": {"wildcard": "*/lib/*"}}]}, {"FilePath": "/usr/bin/python"}, True),
    (
        "wildcard-excluded",
        {"FilePath": [{"anything-but": {"wildcard": "*/lib/*"}}]},
        {"FilePath": "/usr/lib/libc.so"},
        False,
    ),
    (
        "wildcard-list",
        {"FilePath": [{"anything-but": {"wildcard": ["*/lib/*", "*/bin/*"]}}]},
        {"FilePath": "/usr/bin/x"},
        False,
    ),
    ("not-cloudtrail", {"detail-type": [{"anything-but": "AWS API Call via CloudTrail"}]}, EC2_EVENT, True),
    ("array-any-element-differs", {"state": [{"anything-but": "stopped"}]}, {"state": ["stopped", "running"]}, True),
    ("array-all-excluded", {"state": [{"anything-but": "stopped"}]}, {"state": ["stopped", "stopped"]}, False),
    ("null-is-not-excluded", {"state": [{"anything-but": "stopped"}]}, {"state": None}, True),
    # The key missing-field rule: anything-but never matches an absent field.
    ("missing-field", {"detail": {"state": [{"anything-but": "initializing"}]}}, {"detail": {}}, False),
    ("object-field", {"detail": {"state": [{"anything-but": "initializing"}]}}, {"detail": {"state": {"a": 1}}}, False),
)


@pytest.mark.parametrize(("pattern", "event", "expected"), ANYTHING_BUT)
def test_anything_but(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    _check(pattern, event, expected)


# --- "Content filtering in Amazon EventBridge event patterns": numeric --------------------------

NUMERIC_DOC = {
    "detail": {
        "c-count": [{"numeric": [">", 0, "<=", 5]}],
        "d-count": [{"numeric": ["<", 10]}],
        "x-limit": [{"numeric": ["=", 3.018e2]}],
    }
}


NUMERIC = _cases(
    ("doc-all-true", NUMERIC_DOC, {"detail": {"c-count": 5, "d-count": 9, "x-limit": 301.8}}, True),
    ("doc-c-count-zero", NUMERIC_DOC, {"detail": {"c-count": 0, "d-count": 9, "x-limit": 301.8}}, False),
    ("doc-d-count-ten", NUMERIC_DOC, {"detail": {"c-count": 1, "d-count": 10, "x-limit": 301.8}}, False),
    ("doc-x-limit-off", NUMERIC_DOC, {"detail": {"c-count": 1, "d-count": 1, "x-limit": 301.9}}, False),
    ("gt-boundary", {"n": [{"numeric": [">", 0]}]}, {"n": 0}, False),
    ("gte-boundary", {"n": [{"numeric": [">=", 0]}]}, {"n": 0}, True),
    ("lt-boundary", {"n": [{"numeric": ["<", 10]}]}, {"n": 10}, False),
    ("lte-boundary", {"n": [{"numeric": ["<=", 10]}]}, {"n": 10}, True),
    ("negative-range", {"n": [{"numeric": [">=", -5.5, "<", -1]}]}, {"n": -5.5}, True),
    ("negative-range-out", {"n": [{"numeric": [">=", -5.5, "<", -1]}]}, {"n": -1}, False),
    ("float-in-int-range", {"n": [{"numeric": [">", 0, "<", 1]}]}, {"n": 0.000001}, True),
    ("int-equals-float", {"n": [{"numeric": ["=", 5]}]}, {"n": 5.0}, True),
    ("numeric-string-is-not-number", {"n": [{"numeric": [">", 0]}]}, {"n": "5"}, False),
    ("boolean-is-not-number", {"n": [{"numeric": [">", 0]}]}, {"n": True}, False),
    ("null-is-not-number", {"n": [{"numeric": ["<", 0]}]}, {"n": None}, False),
    ("missing-is-not-number", {"n": [{"numeric": ["<", 0]}]}, {}, False),
    ("array-any-in-range", {"n": [{"numeric": [">", 100]}]}, {"n": [1, 2, 101]}, True),
    ("array-none-in-range", {"n": [{"numeric": [">", 100]}]}, {"n": [1, 2, 100]}, False),
)


@pytest.mark.parametrize(("pattern", "event", "expected"), NUMERIC)
def test_numeric(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    _check(pattern, event, expected)


# --- "Content filtering in Amazon EventBridge event patterns": IP address matching --------------

CIDR = _cases(
    (
        "ipv4-in",
        {"detail": {"sourceIPAddress": [{"cidr": "10.0.0.0/24"}]}},
        {"detail": {"sourceIPAddress": "10.0.0.255"}},
        True,
    ),
    (
        "ipv4-out",
        {"detail": {"sourceIPAddress": [{"cidr": "10.0.0.0/24"}]}},
        {"detail": {"sourceIPAddress": "10.0.1.0"}},
        False,
    ),
    ("ipv6-in", {"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:db8:1234::1"}, True),
    ("ipv6-out", {"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:db9::1"}, False),
    ("version-mismatch", {"ip": [{"cidr": "::/0"}]}, {"ip": "10.0.0.1"}, False),
    # CloudTrail writes a service name, not an address, for calls AWS makes on your behalf.
    ("not-an-address", {"ip": [{"cidr": "10.0.0.0/8"}]}, {"ip": "cloudformation.amazonaws.com"}, False),
)


@pytest.mark.parametrize(("pattern", "event", "expected"), CIDR)
def test_cidr(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    _check(pattern, event, expected)


# --- "Content filtering in Amazon EventBridge event patterns": exists ---------------------------

EXISTS_EVENT = {
    "detail-type": "EC2 Instance State-change Notification",
    "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-02ebd4584a2ebd341"],
    "detail": {"state": ["initializing", "running"]},
}
NO_C_COUNT = {"detail": {"c-count": [{"exists": False}]}}

EXISTS = _cases(
    ("true-present", {"detail": {"state": [{"exists": True}]}}, EXISTS_EVENT, True),
    ("true-absent", {"detail": {"state": [{"exists": True}]}}, {"detail": {"c-count": {"c1": 100}}}, False),
    ("false-absent", NO_C_COUNT, EXISTS_EVENT, True),
    ("false-present", NO_C_COUNT, {"detail": {"c-count": 5}}, False),
    # The user guide: c-count is not a leaf node here, so exists:false still matches.
    ("false-intermediate-node", NO_C_COUNT, {"detail": {**EXISTS_EVENT["detail"], "c-count": {"c1": 100}}}, True),
    ("true-intermediate-node", {"detail": {"c-count": [{"exists": True}]}}, {"detail": {"c-count": {"c1": 1}}}, False),
    ("true-null-is-a-value", {"x": [{"exists": True}]}, {"x": None}, True),
    ("false-null-is-a-value", {"x": [{"exists": False}]}, {"x": None}, False),
    ("true-empty-array", {"x": [{"exists": True}]}, {"x": []}, False),
    ("false-empty-array", {"x": [{"exists": False}]}, {"x": []}, True),
    ("false-parent-missing", NO_C_COUNT, {"source": "aws.ec2"}, True),
    ("false-parent-scalar", NO_C_COUNT, {"detail": "text"}, True),
    ("false-or-value-absent", {"x": [{"exists": False}, "a"]}, {}, True),
    ("false-or-value-equal", {"x": [{"exists": False}, "a"]}, {"x": "a"}, True),
    ("false-or-value-other", {"x": [{"exists": False}, "a"]}, {"x": "b"}, False),
    # Our decision, after Event Ruler: a sub-pattern made only of exists:false looks at every element.
    ("false-in-array-some-element-has-it", {"r": {"t": [{"exists": False}]}}, {"r": [{"t": 1}, {"a": 2}]}, False),
    ("false-in-array-no-element-has-it", {"r": {"t": [{"exists": False}]}}, {"r": [{"a": 1}, {"a": 2}]}, True),
    # With a positive condition beside it, one element must satisfy both (array consistency).
    (
        "false-with-positive-same-element",
        {"r": {"a": [2], "t": [{"exists": False}]}},
        {"r": [{"t": 1}, {"a": 2}]},
        True,
    ),
    ("false-with-positive-no-element", {"r": {"a": [2], "t": [{"exists": False}]}}, {"r": [{"t": 1, "a": 2}]}, False),
)


@pytest.mark.parametrize(("pattern", "event", "expected"), EXISTS)
def test_exists(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    _check(pattern, event, expected)


def test_anything_but_and_exists_false_differ_on_a_missing_field() -> None:
    """The user guide's missing-field rule: only exists:false matches a field that is not there."""
    event = {"detail": {"eventName": "PutObject"}}
    assert not matches({"detail": {"errorCode": [{"anything-but": "AccessDenied"}]}}, event)
    assert matches({"detail": {"errorCode": [{"exists": False}]}}, event)
    assert matches(
        {"detail": {"errorCode": [{"anything-but": "AccessDenied"}]}}, {"detail": {"errorCode": "Throttled"}}
    )
    assert not matches({"detail": {"errorCode": [{"exists": False}]}}, {"detail": {"errorCode": "Throttled"}})


# --- "Comparison operators for use in event patterns": wildcard (escaping per Event Ruler) -------

WILDCARD = _cases(
    (
        "doc-event-bus-arn",
        {"EventBusArn": [{"wildcard": "arn:aws:events:us-east-1:*:event-bus/*"}]},
        {"EventBusArn": "arn:aws:events:us-east-1:123456789012:event-bus/orders"},
        True,
    ),
    (
        "doc-event-bus-arn-region",
        {"EventBusArn": [{"wildcard": "arn:aws:events:us-east-1:*:event-bus/*"}]},
        {"EventBusArn": "arn:aws:events:eu-west-1:123456789012:event-bus/orders"},
        False,
    ),
    ("star-matches-empty", {"f": [{"wildcard": "*.png"}]}, {"f": ".png"}, True),
    ("anchored-at-both-ends", {"f": [{"wildcard": "*.png"}]}, {"f": "a.png.bak"}, False),
    ("middle", {"f": [{"wildcard": "*Title*"}]}, {"f": "A Title Here"}, True),
    ("readme-simple-service", {"source": [{"wildcard": "Simple*Service"}]}, {"source": "SimpleQueueService"}, True),
    ("no-star-is-exact", {"f": [{"wildcard": "abc"}]}, {"f": "abcd"}, False),
    ("escaped-star-literal", {"f": [{"wildcard": "a\\*b"}]}, {"f": "a*b"}, True),
    ("escaped-star-not-wild", {"f": [{"wildcard": "a\\*b"}]}, {"f": "axxb"}, False),
    ("escaped-backslash", {"f": [{"wildcard": "C:\\\\*"}]}, {"f": "C:\\Windows"}, True),
    ("regex-chars-are-literal", {"f": [{"wildcard": "a.c*"}]}, {"f": "abc"}, False),
    ("multiline-value", {"f": [{"wildcard": "a*z"}]}, {"f": "a\nz"}, True),
    ("strings-only", {"f": [{"wildcard": "1*"}]}, {"f": 12}, False),
)


@pytest.mark.parametrize(("pattern", "event", "expected"), WILDCARD)
def test_wildcard(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    _check(pattern, event, expected)


# --- "$or" ("Comparison operators for use in event patterns"; aws/event-ruler README examples) ---

OR_DOC = {
    "detail": {
        "$or": [
            {"c-count": [{"numeric": [">", 0, "<=", 5]}]},
            {"d-count": [{"numeric": ["<", 10]}]},
            {"x-limit": [{"numeric": ["=", 3.018e2]}]},
        ]
    }
}
OR_SOURCE_AND = {
    "source": ["aws.cloudwatch"],
    "$or": [{"metricName": ["CPUUtilization", "ReadLatency"]}, {"namespace": ["AWS/EC2", "AWS/ES"]}],
}
OR_NESTED = {
    "source": ["aws.cloudwatch"],
    "$or": [
        {"metricName": ["CPUUtilization", "ReadLatency"]},
        {
            "metricType": ["MetricType"],
            "namespace": ["AWS/EC2", "AWS/ES"],
            "$or": [{"metricId": [1234]}, {"spaceId": [1000]}],
        },
        {"scope": ["Service"]},
    ],
}
OR_PARALLEL = {
    "$or": [{"metricName": ["CPUUtilization"]}, {"namespace": ["AWS/EC2"]}],
    "detail": {"$or": [{"source": ["aws.cloudwatch"]}, {"detail-type": ["CloudWatch Alarm State Change"]}]},
}
DEPLOYER = "arn:aws:iam::111122223333:role/Deployer"
EXCLUDE_DEPLOYER = {
    "source": ["aws.s3"],
    "detail": {
        "userIdentity": {
            "$or": [
                {"sessionContext": {"sessionIssuer": {"arn": [{"anything-but": [DEPLOYER]}]}}},
                {"sessionContext": {"sessionIssuer": {"arn": [{"exists": False}]}}},
            ]
        }
    },
}


def _cloudtrail(user_identity: dict[str, Any]) -> dict[str, Any]:
    return {"source": "aws.s3", "detail": {"eventName": "PutBucketPolicy", "userIdentity": user_identity}}


def _role(arn: str) -> dict[str, Any]:
    return {"type": "AssumedRole", "sessionContext": {"sessionIssuer": {"type": "Role", "arn": arn}}}


OR = _cases(
    ("doc-first", OR_DOC, {"detail": {"c-count": 3}}, True),
    ("doc-last", OR_DOC, {"detail": {"x-limit": 301.8}}, True),
    ("doc-none", OR_DOC, {"detail": {"c-count": 6, "d-count": 10, "x-limit": 1}}, False),
    ("and-with-or", OR_SOURCE_AND, {"source": "aws.cloudwatch", "namespace": "AWS/ES"}, True),
    ("and-with-or-source-fails", OR_SOURCE_AND, {"source": "aws.ec2", "namespace": "AWS/ES"}, False),
    (
        "nested-inner-branch",
        OR_NESTED,
        {"source": "aws.cloudwatch", "metricType": "MetricType", "namespace": "AWS/EC2", "spaceId": 1000},
        True,
    ),
    (
        "nested-inner-missing",
        OR_NESTED,
        {"source": "aws.cloudwatch", "metricType": "MetricType", "namespace": "AWS/EC2"},
        False,
    ),
    ("nested-scope", OR_NESTED, {"source": "aws.cloudwatch", "scope": "Service"}, True),
    ("parallel-both", OR_PARALLEL, {"namespace": "AWS/EC2", "detail": {"source": "aws.cloudwatch"}}, True),
    ("parallel-one-side", OR_PARALLEL, {"namespace": "AWS/EC2", "detail": {"source": "aws.ec2"}}, False),
    # A CloudTrail rule that ignores one role but still sees root and IAM-user calls, which have no
    # sessionContext at all.
    ("cloudtrail-root", EXCLUDE_DEPLOYER, _cloudtrail({"type": "Root", "arn": "arn:aws:iam::111122223333:root"}), True),
    ("cloudtrail-iam-user", EXCLUDE_DEPLOYER, _cloudtrail({"type": "IAMUser", "userName": "alice"}), True),
    ("cloudtrail-other-role", EXCLUDE_DEPLOYER, _cloudtrail(_role("arn:aws:iam::111122223333:role/Admin")), True),
    ("cloudtrail-excluded-role", EXCLUDE_DEPLOYER, _cloudtrail(_role(DEPLOYER)), False),
    ("cloudtrail-other-source", EXCLUDE_DEPLOYER, {**_cloudtrail(_role("arn:x")), "source": "aws.ec2"}, False),
)


@pytest.mark.parametrize(("pattern", "event", "expected"), OR)
def test_or(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    _check(pattern, event, expected)


# --- "Content filtering in Amazon EventBridge event patterns": complex example, repeated keys ----

COMPLEX = {
    "time": [{"prefix": "2017-10-02"}],
    "detail": {
        "state": [{"anything-but": "initializing"}],
        "c-count": [{"numeric": [">", 0, "<=", 5]}],
        "d-count": [{"numeric": ["<", 10]}],
        "x-limit": [{"anything-but": [100, 200, 300]}],
    },
}
COMPLEX_EVENT = {
    "time": "2017-10-02T16:24:49Z",
    "detail": {"c-count": 5, "d-count": 3, "x-limit": 301.8, "state": "running"},
}


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        pytest.param(COMPLEX_EVENT, True, id="matches"),
        pytest.param({**COMPLEX_EVENT, "detail": {**COMPLEX_EVENT["detail"], "x-limit": 200}}, False, id="x-limit"),
        pytest.param({**COMPLEX_EVENT, "time": "2017-10-03T00:00:00Z"}, False, id="time"),
    ],
)
def test_complex_example(event: dict[str, Any], expected: bool) -> None:
    _check(COMPLEX, event, expected)


def test_repeated_key_last_one_wins() -> None:
    """The user guide: with a key given twice, only the last reference is used to evaluate events."""
    pattern = '{"detail": {"location": [{"prefix": "us-"}], "location": [{"anything-but": "us-east"}]}}'
    assert matches(pattern, {"detail": {"location": "eu-west"}})
    assert not matches(pattern, {"detail": {"location": "us-east"}})


# --- Invalid patterns ----------------------------------------------------------------------------

INVALID = [
    pytest.param("not json", id="not-json"),
    pytest.param("[]", id="top-level-array"),
    pytest.param({}, id="empty-pattern"),
    pytest.param({"detail": {}}, id="empty-object"),
    pytest.param({"source": "aws.ec2"}, id="non-array-leaf"),
    pytest.param({"source": 5}, id="non-array-number-leaf"),
    pytest.param({"source": []}, id="empty-array"),
    pytest.param({"source": [["aws.ec2"]]}, id="nested-array"),
    pytest.param({"source": [{"contains": "ec2"}]}, id="unknown-operator"),
    pytest.param({"source": [{}]}, id="empty-operator"),
    pytest.param({"source": [{"prefix": "a", "suffix": "b"}]}, id="two-operators-in-one-object"),
    pytest.param({"source": [{"prefix": 5}]}, id="prefix-not-string"),
    pytest.param({"source": [{"prefix": {"equals-ignore-case": 5}}]}, id="prefix-ignore-case-not-string"),
    pytest.param({"source": [{"suffix": {"wildcard": "x"}}]}, id="suffix-bad-nested"),
    pytest.param({"source": [{"exists": "true"}]}, id="exists-not-boolean"),
    pytest.param({"source": [{"equals-ignore-case": ["a"]}]}, id="equals-ignore-case-list"),
    pytest.param({"source": [{"anything-but": []}]}, id="anything-but-empty-list"),
    pytest.param({"source": [{"anything-but": ["a", 1]}]}, id="anything-but-mixed-types"),
    pytest.param({"source": [{"anything-but": None}]}, id="anything-but-null"),
    pytest.param({"source": [{"anything-but": True}]}, id="anything-but-boolean"),
    pytest.param({"source": [{"anything-but": {"prefix": ["a", "b"]}}]}, id="anything-but-prefix-list"),
    pytest.param({"source": [{"anything-but": {"prefix": ""}}]}, id="anything-but-empty-prefix"),
    pytest.param({"source": [{"anything-but": {"numeric": [">", 1]}}]}, id="anything-but-numeric"),
    pytest.param({"n": [{"numeric": [">"]}]}, id="numeric-no-bound"),
    pytest.param({"n": [{"numeric": ["!=", 1]}]}, id="numeric-bad-operator"),
    pytest.param({"n": [{"numeric": [">", "1"]}]}, id="numeric-string-bound"),
    pytest.param({"n": [{"numeric": [">", True]}]}, id="numeric-boolean-bound"),
    pytest.param({"n": [{"numeric": ["<", 10, ">", 0]}]}, id="numeric-upper-then-lower"),
    pytest.param({"n": [{"numeric": [">", 5, "<", 1]}]}, id="numeric-empty-range"),
    pytest.param({"n": [{"numeric": ["=", 1, "<", 5]}]}, id="numeric-equals-with-range"),
    pytest.param({"n": [{"numeric": 5}]}, id="numeric-not-array"),
    pytest.param({"ip": [{"cidr": "10.0.0.0/33"}]}, id="cidr-bad-mask"),
    pytest.param({"ip": [{"cidr": "not-an-ip/8"}]}, id="cidr-bad-address"),
    pytest.param({"ip": [{"cidr": "10.0.0.1"}]}, id="cidr-without-block"),
    pytest.param({"f": [{"wildcard": "a**b"}]}, id="wildcard-consecutive"),
    pytest.param({"f": [{"wildcard": "a\\b"}]}, id="wildcard-bad-escape"),
    pytest.param({"f": [{"wildcard": "a\\"}]}, id="wildcard-trailing-backslash"),
    pytest.param({"$or": [{"a": ["x"]}]}, id="or-single-branch"),
    pytest.param({"$or": {"a": ["x"]}}, id="or-not-array"),
    pytest.param({"$or": [{"a": ["x"]}, "b"]}, id="or-branch-not-object"),
    pytest.param({"$or": [{"a": ["x"]}, {}]}, id="or-empty-branch"),
    # An operator name used as a field inside $or, as in `"sessionIssuer": {"anything-but": [...]}`.
    pytest.param(
        {
            "$or": [
                {"detail": {"sessionIssuer": {"anything-but": ["arn:x"]}}},
                {"detail": {"sessionIssuer": [{"exists": False}]}},
            ]
        },
        id="or-operator-as-field-name",
    ),
    pytest.param({"x": [float("nan")]}, id="nan"),
    pytest.param({"x": [{1, 2}]}, id="not-json-serialisable"),
]


@pytest.mark.parametrize("pattern", INVALID)
def test_invalid_patterns_raise(pattern: Any) -> None:
    with pytest.raises(InvalidPatternError):
        validate(pattern)
    with pytest.raises(InvalidPatternError):
        matches(pattern, {"source": "aws.ec2"})


def test_invalid_pattern_error_is_a_value_error_with_the_field_path() -> None:
    with pytest.raises(ValueError, match=r"detail\.state: empty arrays"):
        validate({"detail": {"state": []}})
    with pytest.raises(InvalidPatternError, match=r"unknown operator 'contains'"):
        validate({"detail": {"state": [{"contains": "x"}]}})


@pytest.mark.parametrize(
    "pattern",
    [
        pytest.param(EC2_TERMINATED, id="basic"),
        pytest.param(OR_NESTED, id="nested-or"),
        pytest.param(EXCLUDE_DEPLOYER, id="cloudtrail-exclude"),
        # Outside $or an operator name is an ordinary field name, as in Event Ruler.
        pytest.param({"detail": {"anything-but": ["x"]}}, id="operator-name-as-field-outside-or"),
    ],
)
def test_valid_patterns_validate(pattern: dict[str, Any]) -> None:
    validate(pattern)


def test_compile_pattern_is_cached_and_reusable() -> None:
    first = compile_pattern(EC2_TERMINATED)
    assert compile_pattern(json.loads(json.dumps(EC2_TERMINATED))) is first
    assert first(EC2_EVENT)
    assert not first({**EC2_EVENT, "source": "aws.rds"})
