"""A throwaway virtualenv with this checkout of rtmbotd installed as a user installs it.

`pip install <repo>` (not editable: an editable install's import hook alone costs about
2 MiB resident, which no user pays), under /tmp/rtmbotd-bench-venvs/ (or
$RTMBOTD_BENCH_VENVS), named by a hash of the package's files and reused while that
hash matches. rtmbotd and the floor run from it; python-rtmbot has its own.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from children import REPO, child_env
from rtmbot_venv import ROOT, SetupError, _error_line, _run

MARKER = ".bench-ready.json"
PACKAGES = ("rtmbotd", "websockets", "aiohttp", "slack_sdk", "PyYAML", "SQLAlchemy")


@dataclass(frozen=True)
class RtmbotdEnv:
    python: Path
    script: Path           # the `rtmbotd` console script
    versions: dict[str, str]


def source_hash() -> str:
    """What pip would install: setup.py and every file of the rtmbotd package."""
    digest = hashlib.sha256()
    files = [REPO / "setup.py", REPO / "README.md", *sorted((REPO / "rtmbotd").rglob("*"))]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def ensure(progress=print) -> RtmbotdEnv:
    """The venv for the current sources, building it first when missing; SetupError."""
    v = sys.version_info
    venv = ROOT / f"rtmbotd-{source_hash()}-py{v.major}.{v.minor}"
    python, script, marker = venv / "bin" / "python", venv / "bin" / "rtmbotd", venv / MARKER
    if marker.is_file() and script.exists():
        return RtmbotdEnv(python, script, json.loads(marker.read_text())["versions"])
    for old in ROOT.glob("rtmbotd-*-py*"):          # earlier sources' venvs and logs
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    progress(f"building the throwaway venv {venv} (pip install {REPO}, not editable)")
    ROOT.mkdir(parents=True, exist_ok=True)
    log_path = venv.parent / (venv.name + ".install.log")
    with open(log_path, "w", encoding="utf-8") as log, tempfile.TemporaryDirectory() as tmp:
        # A copy of exactly what is packaged: an in-tree build/ could carry stale modules.
        src = Path(tmp) / "src"
        shutil.copytree(REPO / "rtmbotd", src / "rtmbotd", ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("setup.py", "README.md"):
            shutil.copy(REPO / name, src / name)
        for argv in ([sys.executable, "-m", "venv", str(venv)],
                     [str(python), "-m", "pip", "install", "--no-input", str(src)]):
            proc = _run(argv, log)
            if proc.returncode != 0:
                raise SetupError(f"{' '.join(argv[:4])} failed: {_error_line(proc.stdout)} (see {log_path})")
        proc = subprocess.run([str(python), "-c",
                               "import json, importlib.metadata as m; print(json.dumps({p: m.version(p) "
                               f"for p in {list(PACKAGES)!r}}}))"],
                              env=child_env(), capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise SetupError(f"reading installed versions failed: {_error_line(proc.stderr)}")
    versions = json.loads(proc.stdout.strip().splitlines()[-1])
    marker.write_text(json.dumps({"versions": versions}, indent=1))
    return RtmbotdEnv(python, script, versions)
