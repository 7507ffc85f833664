"""Each YARA rule hits its own harmless sample; a benign corpus has no hit."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from conftest import DOCS, SAMPLES

RULE_FILES = sorted((DOCS / "yara").glob("*.yar"))
# Rules whose only atom is short, so YARA warns that they may slow scanning (accepted, see
# the rule's meta); any other warning is a defect.
SLOW_ACCEPTED = {"Cleanroom_Miner_Monero_Wallet"}


def rule_names():
    names = []
    for f in RULE_FILES:
        names += re.findall(r"^rule (\w+)", f.read_text(), re.M)
    return names


def samples():
    rows = [line.split("\t") for line in (SAMPLES / "RULES.tsv").read_text().splitlines()
            if line and not line.startswith("#")]
    return {rule: file for rule, file in rows}


def yara(target, *extra):
    args = ["yara", "-e", "-r", *extra]
    for f in RULE_FILES:
        args.append(f"{f.stem}:{f}")
    p = subprocess.run([*args, str(target)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p


def test_every_rule_has_a_sample_and_every_sample_a_rule():
    assert sorted(samples()) == sorted(rule_names())
    for file in samples().values():
        assert (SAMPLES / file).is_file(), file


@pytest.mark.parametrize("rule", rule_names())
def test_rule_hits_its_sample(rule):
    sample = SAMPLES / samples()[rule]
    hits = {line.split()[0].split(":", 1)[1] for line in yara(sample, "-w").stdout.splitlines()}
    assert rule in hits, f"{rule} does not match {sample.name}; matched {sorted(hits)}"


def test_rules_compile_without_unexpected_warnings():
    p = yara("/dev/null")
    slow = set(re.findall(r'rule "(\w+)".*may slow down scanning', p.stderr))
    others = [line for line in p.stderr.splitlines() if "may slow down scanning" not in line and line]
    assert slow <= SLOW_ACCEPTED and not others, p.stderr


def test_benign_corpus_has_no_hit(tmp):
    corpus = tmp / "benign"
    corpus.mkdir()
    for binary in ("true", "ls", "sh", "env", "curl", "wget", "ssh", "crontab"):
        path = shutil.which(binary)
        if path:
            shutil.copy(path, corpus / binary)
    for system_file in ("/etc/services", "/etc/ld.so.conf", "/lib/systemd/system/cron.service",
                        "/etc/ssh/sshd_config", "/etc/crontab", "/etc/ld.so.cache"):
        try:
            shutil.copy(system_file, corpus / system_file.strip("/").replace("/", "_"))
        except OSError:
            pass
    (corpus / "crontab").write_text("SHELL=/bin/sh\n17 * * * * root cd / && run-parts --report /etc/cron.hourly\n"
                                     "0 3 * * * root curl -fsS https://example.com/health -o /dev/null\n")
    (corpus / "backup.service").write_text("[Service]\nExecStart=/usr/bin/rsync -a /srv/ backup:/srv/\n")
    (corpus / "authorized_keys").write_text(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA6CDnErtjmBsveIgnrWQGG2I1350yZWe9uLlUQVwV+G ops@laptop\n")
    (corpus / "install-docs.sh").write_text("#!/bin/sh\n# curl -fsSL https://get.example.com | sh\n"
                                            "echo 'see the manual' >> /tmp/notes\n")
    # A certificate-like base64 run holding a 95-character base58 stretch starting with 4A.
    (corpus / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIB" + "4A" + "x" * 93
                                     + "Q0lFTlQ=\n-----END CERTIFICATE-----\n")
    (corpus / "libs.conf").write_text("/usr/local/lib\n/opt/lib\n")
    assert len(list(corpus.iterdir())) >= 10
    hits = yara(corpus, "-w").stdout
    assert hits == "", f"benign files matched:\n{hits}"
