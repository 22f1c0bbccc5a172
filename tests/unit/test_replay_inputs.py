"""What `changeguard replay` reads: CloudTrail's log files as the trail delivers them, and says when a
folder holds nothing to replay.

CloudTrail delivers ``<account>_CloudTrail_<region>_<time>_<unique>.json.gz`` (gzip) under
``AWSLogs/<account>/CloudTrail/<region>/<yyyy>/<mm>/<dd>/``, and digest files (hashes, not events)
under ``CloudTrail-Digest/`` in the same bucket.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from changeguard_tools.replay import read_items
from sample_events import load_event

LOG = "111122223333_CloudTrail_us-east-1_20261121T0945Z_Mu0KsOhtH1ar15ZZ.json.gz"
DIGEST = "111122223333_CloudTrail-Digest_us-east-1_trail_us-east-1_20261121T100000Z.json.gz"


def record(event_id: str) -> dict[str, object]:
    detail = load_event("correlate_change/02-console-no-ticket.json")["detail"]
    return {**detail, "eventID": event_id}


def trail_bucket(root: Path) -> Path:
    """A folder as `aws s3 sync` of a trail bucket leaves it: log files, a digest file."""
    logs = root / "AWSLogs" / "111122223333" / "CloudTrail" / "us-east-1" / "2026" / "11" / "21"
    logs.mkdir(parents=True)
    (logs / LOG).write_bytes(gzip.compress(json.dumps({"Records": [record("e-1"), record("e-2")]}).encode()))
    (logs / LOG.replace("Mu0K", "Zz9A")).write_bytes(gzip.compress(json.dumps({"Records": [record("e-3")]}).encode()))
    digests = root / "AWSLogs" / "111122223333" / "CloudTrail-Digest" / "us-east-1" / "2026" / "11" / "21"
    digests.mkdir(parents=True)
    digest = {"awsAccountId": "111122223333", "digestStartTime": "2026-11-21T09:00:00Z", "logFiles": []}
    (digests / DIGEST).write_bytes(gzip.compress(json.dumps(digest).encode()))
    return root / "AWSLogs"


def test_a_folder_synced_from_the_trail_bucket_replays_every_record_and_skips_digest_files(tmp_path):
    items = list(read_items([trail_bucket(tmp_path)]))
    assert [i.error for i in items] == [None, None, None]
    assert [i.event["detail"]["eventID"] for i in items if i.event] == ["e-1", "e-2", "e-3"]
    assert all(i.source_file.endswith(".json.gz") for i in items)


def test_a_gzip_file_is_read_by_its_content_whatever_its_name(tmp_path):
    named = tmp_path / LOG
    named.write_bytes(gzip.compress(json.dumps({"Records": [record("e-1")]}).encode()))
    misnamed = tmp_path / "downloaded.json"  # a browser download keeps the bytes, not always the name
    misnamed.write_bytes(named.read_bytes())
    for path in (named, misnamed):
        [item] = read_items([path])
        assert item.error is None and item.event and item.event["detail"]["eventID"] == "e-1"


def test_json_and_json_gz_files_are_read_together_in_name_order(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([record("e-a")]))
    (tmp_path / "b.json.gz").write_bytes(gzip.compress(json.dumps([record("e-b")]).encode()))
    (tmp_path / "c.json").write_text(json.dumps([record("e-c")]))
    (tmp_path / "notes.txt").write_text("not an input")
    assert [i.event["detail"]["eventID"] for i in read_items([tmp_path]) if i.event] == ["e-a", "e-b", "e-c"]


def test_a_truncated_gzip_file_is_one_error_line(tmp_path):
    whole = gzip.compress(json.dumps({"Records": [record("e-1")]}).encode())
    (tmp_path / LOG).write_bytes(whole[: len(whole) // 2])
    [item] = read_items([tmp_path / LOG])
    assert item.event is None and item.error and item.error.startswith("cannot read")


def test_a_folder_with_nothing_to_replay_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "README.txt").write_text("no events here")
    items = list(read_items([tmp_path / "empty", tmp_path / "other"]))
    assert [i.source_file for i in items] == [str(tmp_path / "empty"), str(tmp_path / "other")]
    assert all(i.event is None and i.error and "nothing to replay" in i.error for i in items)
