"""`changeguard evidence` and `report --out` into a folder that already holds a pack.

The folder must end up holding the pack just built and nothing else: a file of an earlier pack that
the new one lacks (``digest-verification.*`` when the re-run has no ``--bucket``) would sit beside
the new ``changes.csv``, outside the new manifest, and an auditor would read it as this pack's.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from changeguard.adapters.dynamodb import entry_to_item
from changeguard.domain.kpis import KpiTargets
from changeguard.domain.ledger import LedgerEntry
from changeguard.services.evidence import DigestService, DigestStore, EvidenceService
from changeguard_tools import cli, reports_cli
from fakes import FakeClock, MemoryBucket, ShardedDayIndex, verdict_entry

AT = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
NOW = datetime(2026, 12, 5, 3, 15, tzinfo=UTC)


def verdict(cid: str, value: str) -> LedgerEntry:
    return verdict_entry(cid, value, at=AT)


@pytest.fixture
def ledger(monkeypatch: pytest.MonkeyPatch) -> ShardedDayIndex:
    """A ledger with its digests, behind the CLI's service (the bucket only when --bucket is given)."""
    index = ShardedDayIndex([entry_to_item(verdict("c-1", "NO_TICKET"))])
    store = DigestStore(MemoryBucket())
    clock = FakeClock(NOW)
    digests = DigestService(function="write_digest", ledger=index, store=store, clock=clock)
    digests.run(datetime(2026, 11, 23, 3, 15, tzinfo=UTC))
    digests.run(NOW)

    def service(args: Any) -> EvidenceService:
        return EvidenceService(
            ledger=index,
            digests=store if args.bucket else None,
            tickets=None,
            targets=KpiTargets,
            clock=clock,
            source="test",
        )

    monkeypatch.setattr(reports_cli, "_service", service)
    return index


def files_of(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def in_manifest(folder: Path) -> list[str]:
    return sorted({*json.loads((folder / "manifest.json").read_text())["files"], "manifest.json"})


def evidence_args(out: Path) -> list[str]:
    return ["evidence", "--period", "2026-11", "--out", str(out)]


def report_args(out: Path) -> list[str]:
    return ["report", "--from", "2026-11-01", "--to", "2026-11-30", "--out", str(out)]


@pytest.mark.parametrize(("command", "label"), [(evidence_args, "2026-11"), (report_args, "2026-11-01..2026-11-30")])
def test_a_folder_holding_an_earlier_pack_is_refused_without_overwrite(ledger, tmp_path, command, label):
    assert cli.main([*command(tmp_path), "--table", "t", "--bucket", "b"]) == 0
    folder = tmp_path / label
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(SystemExit) as exc:
        cli.main([*command(tmp_path), "--table", "t"])
    assert "is not empty" in str(exc.value.code) and "--overwrite" in str(exc.value.code)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the earlier pack, untouched
    assert files_of(tmp_path) == [label]  # and no staging folder left behind


@pytest.mark.parametrize(("command", "label"), [(evidence_args, "2026-11"), (report_args, "2026-11-01..2026-11-30")])
def test_overwrite_replaces_the_earlier_pack_whole(ledger, tmp_path, capsys, command, label):
    assert cli.main([*command(tmp_path), "--table", "t", "--bucket", "b"]) == 0
    folder = tmp_path / label
    assert json.loads((folder / "digest-verification.json").read_text())["ok"] is True
    ledger.put(entry_to_item(verdict("c-2", "AUTHORIZED")))  # the ledger changed since

    assert cli.main([*command(tmp_path), "--table", "t", "--overwrite"]) == 0
    assert files_of(folder) == in_manifest(folder)  # only this pack's files
    assert "digest-verification.json" not in files_of(folder)
    assert "c-2" in (folder / "changes.csv").read_text()
    assert files_of(tmp_path) == [label]  # no staging or earlier folder left behind


def test_an_empty_folder_is_written_into_without_overwrite(ledger, tmp_path):
    (tmp_path / "2026-11").mkdir()
    assert cli.main([*evidence_args(tmp_path), "--table", "t"]) == 0
    assert files_of(tmp_path / "2026-11") == in_manifest(tmp_path / "2026-11")


def test_a_failed_write_leaves_the_earlier_pack_as_it_was(ledger, tmp_path, monkeypatch):
    assert cli.main([*evidence_args(tmp_path), "--table", "t", "--bucket", "b"]) == 0
    folder = tmp_path / "2026-11"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def full_disk(self: Any, key: str, body: bytes, content_type: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(reports_cli.LocalFolder, "put", full_disk)
    with pytest.raises(OSError, match="No space left"):
        cli.main([*evidence_args(tmp_path), "--table", "t", "--overwrite"])
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert files_of(tmp_path) == ["2026-11"]
