"""benchmarks/data_loaders end to end on a few images: every layout written from the same images, read
through train.py's stream, the bucketed and square training runs timed, the table rendered from the rows."""

import pytest
from test_cli_errors import script

from dit.cli import run_cli
from dit.eval.records import read_rows


@pytest.mark.slow("writes six data layouts, encodes two latent caches and trains twice through the real scripts")
def test_every_layout_is_timed_and_tabled(tmp_path, capsys):
    bench = script("benchmarks/data_loaders/data_loaders.py")
    out = tmp_path / "dl"
    assert run_cli(bench.main, ["--out", str(out), "--images", "48", "--batches", "2", "--steps", "5", "--batch", "8",
                                "--num-workers", "0"]) == 0
    rows = read_rows(out / "results.jsonl")
    assert [r.get("source") for r in rows if r["kind"] == "loader"] == list(bench.SOURCES)
    assert [r["buckets"] for r in rows if r["kind"] == "train"] == ["none", "auto"]
    assert all(len(r["seconds"]) >= 2 and min(r["seconds"]) > 0 for r in rows)
    assert run_cli(bench.main, ["--out", str(out), "--report"]) == 0
    table = capsys.readouterr().out
    assert "| latent-cache | 48 | 64 px | 0 |" in table and "| latent-shards | 48 | 64 px | 0 |" in table
    assert "| auto | 8 |" in table
