"""The README's first command: the demo runs the scenario end to end and shows alerts."""

from __future__ import annotations

import io

from changeguard_tools.demo import run_demo


def test_demo_runs_the_correlation_scenario(tmp_path):
    out = io.StringIO()
    assert run_demo(out_dir=tmp_path, out=out) == 0
    text = out.getvalue()
    assert "CorrelateChangeFunction: AUTHORIZED" in text
    for verdict in ("NO_TICKET", "NOT_APPROVED", "SELF_APPROVED", "EMERGENCY", "EXEMPT"):
        assert f"CorrelateChangeFunction: {verdict}" in text, verdict
    assert "ALERT    [critical]" in text
    # The Config item of the console change is recorded as evidence, not judged again (nor instead).
    assert "CorrelateChangeFunction: NOT_A_CHANGE; recorded the Config item" in text
    assert "Summary:" in text.splitlines()[-1] and "alert(s) received" in text
    assert (tmp_path / "handlers.log").exists()
