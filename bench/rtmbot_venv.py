"""A throwaway virtualenv with python-rtmbot 0.4.1 from PyPI, outside the repository.

Built once under /tmp/rtmbotd-bench-venvs/ (or $RTMBOTD_BENCH_VENVS) and reused while
its marker file is there. Nothing of it is vendored or committed.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from children import child_env

RTMBOT = "rtmbot==0.4.1"
PYYAML_3 = "pyyaml>=3,<4"      # what rtmbot 0.4.1 pins
ROOT = Path(os.environ.get("RTMBOTD_BENCH_VENVS", "/tmp/rtmbotd-bench-venvs"))
MARKER = ".bench-ready.json"
PACKAGES = ("rtmbot", "slackclient", "websocket-client", "PyYAML", "requests")


class SetupError(RuntimeError):
    """python-rtmbot could not be installed; the message says at which step and why."""


@dataclass(frozen=True)
class RtmbotEnv:
    python: Path
    versions: dict[str, str]
    notes: list[str]       # how it was installed, and why any step differs from a plain pip install


def _venv_dir() -> Path:
    v = sys.version_info
    return ROOT / f"rtmbot-0.4.1-py{v.major}.{v.minor}"


def _run(argv: list[str], log) -> subprocess.CompletedProcess:
    log.write(f"\n$ {' '.join(argv)}\n")
    log.flush()
    proc = subprocess.run(argv, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=900)
    log.write(proc.stdout)
    log.flush()
    return proc


def _error_line(output: str) -> str:
    """The most telling line of a failed pip run (a compiler error beats pip's summary)."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for needle in ("fatal error:", "error: command", "ERROR: "):
        for line in lines:
            if needle in line:
                return line[:300]
    return lines[-1][:300] if lines else "no output"


def ensure(progress=print) -> RtmbotEnv:
    """The venv's python, building the venv first when it is not there; SetupError."""
    venv = _venv_dir()
    marker = venv / MARKER
    python = venv / "bin" / "python"
    if marker.is_file() and python.exists():
        data = json.loads(marker.read_text())
        return RtmbotEnv(python, data["versions"], data["notes"])
    progress(f"building the throwaway venv {venv} (python-rtmbot 0.4.1 from PyPI)")
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    log_path = venv.parent / (venv.name + ".install.log")
    with open(log_path, "w", encoding="utf-8") as log:
        proc = _run([sys.executable, "-m", "venv", str(venv)], log)
        if proc.returncode != 0:
            raise SetupError(f"python -m venv failed: {_error_line(proc.stdout)} (see {log_path})")
        pip = [str(python), "-m", "pip", "install", "--no-input", "--no-cache-dir"]
        proc = _run([*pip, RTMBOT], log)
        if proc.returncode != 0:
            # PyYAML 3.x has no wheel for this Python and its C extension no longer compiles
            # (longintrepr.h moved in 3.11): build it pure-Python, then install rtmbot again.
            first = _error_line(proc.stdout)
            notes.append(f"`pip install {RTMBOT}` failed: {first}")
            proc = _run([*pip, "wheel"], log)
            if proc.returncode == 0:
                proc = _run([*pip, "--no-use-pep517", "--global-option=--without-libyaml", PYYAML_3],
                            log)
            if proc.returncode != 0:
                raise SetupError(f"{first}; building {PYYAML_3} without libyaml failed too: "
                                 f"{_error_line(proc.stdout)} (see {log_path})")
            notes.append(f"so {PYYAML_3} was built pure-Python (--without-libyaml) first")
            proc = _run([*pip, RTMBOT], log)
            if proc.returncode != 0:
                raise SetupError(f"pip install {RTMBOT} failed: {_error_line(proc.stdout)} "
                                 f"(see {log_path})")
        proc = _run([str(python), "-c",
                     "import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
                     f"{list(PACKAGES)!r}}}))"], log)
        if proc.returncode != 0:
            raise SetupError(f"reading installed versions failed: {_error_line(proc.stdout)}")
        versions = json.loads(proc.stdout.strip().splitlines()[-1])
    marker.write_text(json.dumps({"versions": versions, "notes": notes}, indent=1))
    return RtmbotEnv(python, versions, notes)
