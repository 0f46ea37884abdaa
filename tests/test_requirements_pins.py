"""The Debian package's venv is built from packaging/requirements.txt alone: every runtime
dependency of setup.py (cronsim included) must be pinned there, inside setup.py's range."""
import ast
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def setup_requirements():
    """install_requires and the postgresql extra (the package bundles it), as setup.py says."""
    call = next(n for n in ast.walk(ast.parse((ROOT / "setup.py").read_text()))
                if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    args = {k.arg: k.value for k in call.keywords}
    extras = ast.literal_eval(args["extras_require"])
    return [Requirement(r) for r in ast.literal_eval(args["install_requires"]) + extras["postgresql"]]


def pins():
    out = {}
    for line in (ROOT / "packaging" / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return out


@pytest.mark.parametrize("req", setup_requirements(), ids=str)
def test_every_runtime_dependency_is_pinned_for_the_deb_in_range(req):
    name = re.sub(r"[-_.]+", "-", req.name).lower()
    assert name in pins(), f"{req.name} is not in packaging/requirements.txt"
    assert req.specifier.contains(pins()[name]), f"{req.name}=={pins()[name]} is outside setup.py's {req.specifier}"


def test_the_list_is_read():
    assert "cronsim" in {r.name for r in setup_requirements()}
