"""packaging/prometheus/rtmbotd-rules.yml: valid for promtool, alerting when it should, on real names."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "packaging" / "prometheus" / "rtmbotd-rules.yml"
RULE_TESTS = REPO / "tests" / "fixtures" / "prometheus" / "rtmbotd-rules.test.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    result = subprocess.run(["sh", str(REPO / "scripts" / "install-promtool")], capture_output=True, text=True,
                            timeout=600, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        pytest.skip(f"promtool cannot be installed here: {result.stderr.strip()[-300:]}")
    return result.stdout.strip().splitlines()[-1]


def test_promtool_check_rules(promtool):
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_promtool_test_rules(promtool):
    """Each alert fires on the series that should raise it and not on a near miss."""
    result = subprocess.run([promtool, "test", "rules", RULE_TESTS.name], capture_output=True, text=True,
                            timeout=120, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_use_only_metrics_the_daemon_exports():
    from prometheus_client import generate_latest

    from rtmbotd.metrics.live import LiveMetrics
    live = LiveMetrics("test")
    live.cluster_leader(True)          # exported in cluster mode only
    live.plugins_busy(["p"], [])       # labelled series appear with their first plugin
    exported = set(re.findall(r"^(rtmbotd_\w+)", generate_latest(live.registry).decode(), re.M))
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    used = {name for rule in rules for name in re.findall(r"rtmbotd_\w+", rule["expr"])}
    assert {re.search(r'job=~"([^"]+)"', r["expr"]).group(1) for r in rules if "up{" in r["expr"]} == {"rtmbotd.*"}
    assert used and used <= exported, used - exported
    assert {r["alert"] for r in rules} == {"RtmbotdDisconnected", "RtmbotdPluginErrors", "RtmbotdOutboxGrowing",
                                          "RtmbotdReloadRejected", "RtmbotdNoClusterLeader", "RtmbotdDown",
                                          "RtmbotdNotScraped"}
