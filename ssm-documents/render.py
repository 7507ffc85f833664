#!/usr/bin/env python3
"""Render a collection document: the form that is registered with SSM.

    render.py DOCUMENT.json            the rendered document on stdout
    render.py --digest DOCUMENT.json   sha256:<hex> of those bytes (names the version)

The only templating: in a step's runCommand array, an element that is exactly
"#cleanroom:include <path relative to ssm-documents/>" is replaced by that file's lines
(split on \\n, the trailing newline dropped). Nothing else is rewritten. The rendered bytes
are json.dumps(document, indent=2, sort_keys=True) + "\\n"; the Rust side serialises the
same way, so keys and values stay plain JSON.
"""
import hashlib
import json
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
INCLUDE = "#cleanroom:include "


def include(path):
    full = os.path.realpath(os.path.join(ROOT, path))
    if not full.startswith(ROOT + os.sep) or not os.path.isfile(full):
        sys.exit(f"render.py: {path} is not a file inside ssm-documents/")
    with open(full, encoding="utf-8") as f:
        content = f.read()
    if content.endswith("\n"):
        content = content[:-1]
    return content.split("\n")


def render(document):
    for step in document.get("mainSteps", []):
        commands = step.get("inputs", {}).get("runCommand")
        if isinstance(commands, list):
            out = []
            for line in commands:
                if isinstance(line, str) and line.startswith(INCLUDE):
                    out.extend(include(line[len(INCLUDE):]))
                else:
                    out.append(line)
            step["inputs"]["runCommand"] = out
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")


def main():
    args = sys.argv[1:]
    digest = "--digest" in args
    args = [a for a in args if a != "--digest"]
    if len(args) != 1:
        sys.exit("usage: render.py [--digest] DOCUMENT.json")
    with open(args[0], encoding="utf-8") as f:
        rendered = render(json.load(f))
    if digest:
        print("sha256:" + hashlib.sha256(rendered).hexdigest())
    else:
        sys.stdout.buffer.write(rendered)


if __name__ == "__main__":
    main()
