"""packaging/build-deb without its build dependencies says how to get them (or, as root, gets them)."""
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534

# Unmet until the (fake) installer has run: then it is content.
FAKE_CHECKBUILDDEPS = """#!/bin/sh
[ -e "{marker}" ] && exit 0
echo "dpkg-checkbuilddeps: error: Unmet build dependencies: dh-virtualenv (>= 1.2)" >&2
exit 1
"""


@pytest.fixture
def tree(tmp_path):
    """A copy of build-deb and debian/control, a fake dpkg-checkbuilddeps and a fake
    installer; the copy has no rtmbotd/, so a build that gets past the check stops at its version."""
    repo = tmp_path / "repo"
    (repo / "packaging" / "debian").mkdir(parents=True)
    (repo / "scripts").mkdir()
    shutil.copy(REPO / "packaging" / "build-deb", repo / "packaging" / "build-deb")
    shutil.copy(REPO / "packaging" / "debian" / "control", repo / "packaging" / "debian" / "control")
    marker = tmp_path / "installed"
    installer = repo / "scripts" / "install-system-test-deps"
    installer.write_text(f"#!/bin/sh\ntouch {marker}\necho fake installer ran\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dpkg-checkbuilddeps").write_text(FAKE_CHECKBUILDDEPS.format(marker=marker))
    for script in (installer, bin_dir / "dpkg-checkbuilddeps", repo / "packaging" / "build-deb"):
        script.chmod(0o755)
    tmp_path.chmod(tmp_path.stat().st_mode | stat.S_IRWXO)
    for folder in tmp_path.parents:      # let nobody reach the copy
        if str(folder).startswith("/tmp/"):
            folder.chmod(folder.stat().st_mode | stat.S_IXOTH)
    env = {"PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path)}
    return repo, marker, env, tmp_path / "out"


def test_unmet_build_deps_name_the_installer_when_not_root(tree):
    repo, marker, env, out = tree
    if os.geteuid() == 0:
        command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    else:
        command = []
    result = subprocess.run(command + ["bash", str(repo / "packaging" / "build-deb"), str(out)],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Unmet build dependencies: dh-virtualenv" in result.stderr
    assert f"sudo {repo}/scripts/install-system-test-deps" in result.stderr
    assert not marker.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the installing path runs as root")
def test_unmet_build_deps_are_installed_when_root(tree):
    repo, marker, env, out = tree
    result = subprocess.run(["bash", str(repo / "packaging" / "build-deb"), str(out)],
                            env=env, capture_output=True, text=True, timeout=60)
    assert marker.exists() and "fake installer ran" in result.stdout
    assert "rtmbotd/__init__.py" in result.stderr      # past the check: reading the version
