"""bench/RESULTS.md: one section per benchmark that records its runs there.

`bench/compare --write-results` and `bench/cluster.py --write-results` each replace only
their own section (between `<!-- NAME -->` markers), so a run of one keeps the other's
latest figures. The file is only ever written from a run's output, never by hand.
"""
from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
TITLE = "# Benchmark results\n\nWritten by the benchmarks' `--write-results` from the output of the runs below; never edited by hand. Run them again to refresh a section (see bench/README.md).\n"
ORDER = ("compare", "cluster")


def write_section(name: str, heading: str, command: str, text: str, path: Path = RESULTS) -> None:
    """Replace section `name` of `path` with this run's `text` (the other sections stay)."""
    sections = read_sections(path)
    sections[name] = (f"## {heading}\n\nCommand, from the repository root: `{command}`\n\n"
                      "```text\n" + text.rstrip("\n") + "\n```\n")
    names = [n for n in ORDER if n in sections] + sorted(n for n in sections if n not in ORDER)
    body = "\n".join(f"<!-- {n} -->\n{sections[n]}<!-- /{n} -->\n" for n in names)
    path.write_text(TITLE + "\n" + body, encoding="utf-8")


def read_sections(path: Path = RESULTS) -> dict[str, str]:
    """The sections of `path` by name; a file from before the sections is the compare one."""
    try:
        old = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    found = {m.group(1): m.group(2) for m in re.finditer(r"<!-- (\w+) -->\n(.*?)<!-- /\1 -->\n", old, re.S)}
    if not found and "```text" in old:          # the single-run file bench/compare used to write
        start = old.index("Command, from the repository root")
        found["compare"] = "## rtmbotd, python-rtmbot 0.4.1 and the floor (bench/compare)\n\n" + old[start:]
    return found
