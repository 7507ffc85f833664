"""The tooling AMI recipe installs what the documents call, and its test phase (the AMI
self-test) passes here and fails when the scripts miss the planted intrusion."""

from __future__ import annotations

import re
import shutil
import subprocess

from conftest import BASH, DOCS, REPO, SCRIPTS

RECIPE = REPO / "amis" / "forensic-tooling.yaml"
# Which installation in the recipe provides each tool the scripts ask for (cl_tools).
PROVIDER = {"mmls": "sleuthkit", "fsstat": "sleuthkit", "fls": "sleuthkit", "icat": "sleuthkit",
            "istat": "sleuthkit", "mactime": "sleuthkit", "yara": "VirusTotal/yara", "yarac": "VirusTotal/yara",
            "aws": "awscli==", "jq": " jq ", "openssl": " openssl ", "python3": " python3 "}


def test_recipe_installs_every_tool_the_scripts_call():
    called = set()
    for script in SCRIPTS.glob("*.sh"):
        for line in re.findall(r"^\s*cl_tools (.+)$", script.read_text(), re.M):
            called.update(line.split())
    assert called, "no cl_tools calls found"
    recipe = RECIPE.read_text()
    for tool in sorted(called):
        assert tool in PROVIDER, f"{tool}: say which recipe step installs it"
        assert PROVIDER[tool] in recipe, f"{tool}: {PROVIDER[tool]!r} not in {RECIPE.name}"
    assert "ami-selftest.sh" in recipe
    lab_cli = re.search(r"^awscli==(\S+)$", (REPO / "lab" / "requirements.txt").read_text(), re.M).group(1)
    assert re.search(rf"AwsCliVersion:\n(?:\s+\w+:.*\n)*?\s+Default: {re.escape(lab_cli)}\n", recipe)
    yara = subprocess.run(["yara", "--version"], capture_output=True, text=True).stdout.strip()
    assert re.search(rf"YaraVersion:\n\s+Type: String\n\s+Default: {re.escape(yara)}\n", recipe), \
        "the AMI must build the YARA version the tests run with"


def test_ami_selftest_passes():
    p = subprocess.run([BASH, str(DOCS / "tests" / "ami-selftest.sh")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("ami-selftest: ok (") and "yara" in p.stdout


def test_ami_selftest_fails_when_a_rule_is_missing(tmp):
    copy = tmp / "ssm-documents"
    shutil.copytree(DOCS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "yara" / "miners.yar").write_text("// emptied: the miner rules are gone\n")
    p = subprocess.run([BASH, str(copy / "tests" / "ami-selftest.sh"), str(copy)], capture_output=True, text=True)
    assert p.returncode == 1
    assert "FAILED: YARA missed the miner" in p.stderr
