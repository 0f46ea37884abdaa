"""bench/RESULTS.md holds one section per benchmark: writing one keeps the others."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import results  # noqa: E402


def test_each_benchmark_replaces_only_its_own_section(tmp_path):
    path = tmp_path / "RESULTS.md"
    results.write_section("cluster", "Cluster", "bench/cluster.py --write-results", "failover 6.0 s\n", path)
    results.write_section("compare", "Compare", "bench/compare --write-results", "median 0.30 ms", path)
    results.write_section("cluster", "Cluster", "bench/cluster.py --write-results", "failover 5.9 s", path)
    text = path.read_text()
    assert text.index("<!-- compare -->") < text.index("<!-- cluster -->")
    assert "median 0.30 ms" in text and "failover 5.9 s" in text and "failover 6.0 s" not in text
    assert set(results.read_sections(path)) == {"compare", "cluster"}


def test_the_old_single_run_file_becomes_the_compare_section(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results: old\n\nWritten by ...\n\nCommand, from the repository root: "
                    "`bench/compare --write-results`\n\n```text\nmedian 0.30 ms\n```\n")
    results.write_section("cluster", "Cluster", "cmd", "failover 6.0 s", path)
    sections = results.read_sections(path)
    assert "median 0.30 ms" in sections["compare"] and "failover 6.0 s" in sections["cluster"]
