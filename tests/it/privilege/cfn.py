"""Reads cleanroom's CloudFormation templates for the privilege tests, with the lab's own
loader and resolver (lab/labext/cfn_roles.py), so the tests read the templates exactly as
the lab's roles-from-template route deploys them.

    cfn.py template PATH                      the template as JSON (short tags in long form)
    cfn.py resolve PATH LOGICAL PROPERTY ACCOUNT REGION PARAMS_JSON RESOURCES_JSON
                                              one resource property, every intrinsic resolved
"""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "lab"))

from labext.cfn_roles import Resolver, _parameters, load_template  # noqa: E402


def main(argv: list[str]) -> int:
    mode, path = argv[1], Path(argv[2])
    template = load_template((path if path.is_absolute() else REPO / path).read_text())
    if mode == "template":
        print(json.dumps(template))
        return 0
    logical, prop, account, region, params, resources = argv[3:9]
    values, errors = _parameters(template, json.loads(params))
    resolver = Resolver(template, values, account, region, "cleanroom-lab", json.loads(resources))
    node = template["Resources"][logical]["Properties"][prop]
    out = resolver.resolve(node, f"Resources.{logical}.Properties.{prop}")
    errors += resolver.errors
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
