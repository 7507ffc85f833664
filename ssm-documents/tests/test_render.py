"""render.py and the three documents: the include rule, the digest, the parameters, SSM's
64 KB document quota."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys

import pytest

from conftest import DOCS, SCRIPTS

DOCUMENTS = ["Cleanroom-DiskImage", "Cleanroom-Triage", "Cleanroom-Yara"]
STEP = {"Cleanroom-DiskImage": ("image", "disk-image.sh"), "Cleanroom-Triage": ("triage", "triage.sh"),
        "Cleanroom-Yara": ("yara", "yara-scan.sh")}
# CreateDocument: "The content of the document must not exceed 64KB" (MaxDocumentSizeExceeded,
# "The size limit of a document is 64 KB"), parameters given at run time included: the
# rendered bytes must leave room for them.
SSM_DOCUMENT_MAX_BYTES = 64_000
PARAMETERS = {"VolumeId", "EvidenceBucket", "EvidencePrefix", "Region", "CaseId"}
HEREDOC_END = "CLEANROOM_END_OF_INCLUDED_FILE"


def render(*args: str) -> bytes:
    return subprocess.run([sys.executable, str(DOCS / "render.py"), *args], capture_output=True,
                          check=True).stdout


def rendered(name: str) -> dict:
    return json.loads(render(str(DOCS / f"{name}.json")))


def test_include_rule_replaces_exact_elements_only(tmp):
    doc = {"schemaVersion": "2.2", "mainSteps": [{"action": "aws:runShellScript", "name": "s", "inputs": {
        "runCommand": ["before", "#cleanroom:include tests/samples/ld.so.preload",
                       " #cleanroom:include tests/samples/ld.so.preload", "after"]}}]}
    path = tmp / "doc.json"
    path.write_text(json.dumps(doc))
    out = render(str(path))
    got = json.loads(out)["mainSteps"][0]["inputs"]["runCommand"]
    assert got == ["before", "/usr/local/lib/libprocesshider.so",
                   " #cleanroom:include tests/samples/ld.so.preload", "after"]
    assert out == (json.dumps(json.loads(out), indent=2, sort_keys=True) + "\n").encode()
    assert render("--digest", str(path)).decode() == f"sha256:{hashlib.sha256(out).hexdigest()}\n"


def test_include_outside_ssm_documents_is_refused(tmp):
    path = tmp / "doc.json"
    path.write_text(json.dumps({"mainSteps": [{"inputs": {"runCommand": ["#cleanroom:include ../README.md"]}}]}))
    p = subprocess.run([sys.executable, str(DOCS / "render.py"), str(path)], capture_output=True, text=True)
    assert p.returncode != 0 and "not a file inside ssm-documents" in p.stderr


@pytest.mark.parametrize("name", DOCUMENTS)
def test_document_renders_whole_scripts_within_the_size_quota(name):
    raw = render(str(DOCS / f"{name}.json"))
    assert len(raw) < SSM_DOCUMENT_MAX_BYTES, f"{name} is {len(raw)} bytes rendered"
    doc = json.loads(raw)
    assert doc["schemaVersion"] == "2.2"
    (step,) = doc["mainSteps"]
    assert (step["action"], step["name"]) == ("aws:runShellScript", STEP[name][0])
    assert step["inputs"]["timeoutSeconds"] == 172800
    lines = step["inputs"]["runCommand"]
    assert lines[0] == "#!/bin/bash"
    text = "\n".join(lines) + "\n"
    assert "#cleanroom:include" not in text
    # The script and lib.sh are there whole, the script last.
    script = (SCRIPTS / STEP[name][1]).read_text()
    assert text.endswith(script)
    assert (SCRIPTS / "lib.sh").read_text() in text


@pytest.mark.parametrize("name", DOCUMENTS)
def test_only_declared_parameters_are_substituted(name):
    doc = rendered(name)
    assert set(doc["parameters"]) == PARAMETERS
    text = json.dumps(doc["mainSteps"])
    used = set(re.findall(r"\{\{\s*([^}]*?)\s*\}\}", text))
    assert used == PARAMETERS, "an included file holds '{{ ... }}', which SSM would try to substitute"


@pytest.mark.parametrize("name", DOCUMENTS)
def test_parameters_are_validated_like_the_scripts_validate_them(name):
    doc = rendered(name)
    lib = (SCRIPTS / "lib.sh").read_text()
    in_lib = dict(re.findall(r"^readonly CL_RE_(\w+)='([^']+)'$", lib, re.M))
    lib_name = {"VolumeId": "VOLUME", "EvidenceBucket": "BUCKET", "Region": "REGION", "CaseId": "CASE"}
    for name_, spec in doc["parameters"].items():
        assert spec["type"] == "String" and "default" not in spec
        if name_ in lib_name:
            assert spec["allowedPattern"] == in_lib[lib_name[name_]], name_
    good = {"VolumeId": "vol-0123456789abcdef0", "EvidenceBucket": "cleanroom-evidence-111122223333",
            "EvidencePrefix": "cases/CASE-1/evidence/111122223333/i-0123456789abcdef0/vol-0123456789abcdef0/",
            "Region": "us-gov-west-1", "CaseId": "IR-2026.11_05"}
    bad = {"VolumeId": ["vol-0123", "vol-0123456789abcdef0; reboot", "VOL-0123456789"],
           "EvidenceBucket": ["Evidence", "a", "b/../c", "bucket name"],
           "EvidencePrefix": ["cases/C/evidence/1/i-0123456789abcdef0/vol-0123456789abcdef0/",
                              "cases/C/evidence/111122223333/i-01234567/vol-01234567",
                              "cases/../evidence/111122223333/i-01234567/vol-01234567/",
                              "cases/C/evidence/111122223333/i-01234567/vol-01234567/../x/"],
           "Region": ["us-east", "US-EAST-1", "us-east-1'"],
           "CaseId": ["", "-x", "a b", "x" * 65, "C'1"]}
    for param, value in good.items():
        assert re.fullmatch(doc["parameters"][param]["allowedPattern"], value), (param, value)
    for param, values in bad.items():
        for value in values:
            assert not re.fullmatch(doc["parameters"][param]["allowedPattern"], value), (param, value)


def test_included_files_survive_the_heredoc():
    # Helpers reach the instance through quoted heredocs: no line may end one early, and each
    # must end with a newline so the written file is byte-for-byte the repository's.
    for path in list((DOCS / "scripts").glob("*.py")) + list((DOCS / "yara").glob("*.yar")):
        text = path.read_text()
        assert HEREDOC_END not in text.splitlines(), path
        assert text.endswith("\n") and not text.endswith("\n\n"), path


def test_committed_documents_are_the_sources_not_renders():
    for name in DOCUMENTS:
        lines = json.loads((DOCS / f"{name}.json").read_text())["mainSteps"][0]["inputs"]["runCommand"]
        assert f"#cleanroom:include scripts/{STEP[name][1]}" == lines[-1]
        assert len(lines) < 60, "scripts are included, never copied into the document"
