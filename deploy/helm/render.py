"""``python deploy/helm/render.py [VALUES.yaml] [--name RELEASE] [--namespace NS] [--lint] [--json]``: what
``helm template`` prints, without a helm binary or a cluster.

Renders the chart beside this script (``edge-deploy-triton``) with Helm's own engine, the Helm v4 SDK
that ``helm-python-sdk`` binds (``pip install helm-python-sdk``; in the dev extra). Prints the manifests as
YAML (``--json``: ``{"manifests": {template: text}}``, or ``{"error": message}`` when the values are refused,
with exit code 1); ``--lint`` prints ``helm lint``'s report as JSON instead. The values file is checked
against the chart's ``values.schema.json`` first, as ``helm install`` does.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parent / "edge-deploy-triton"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python deploy/helm/render.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("values", nargs="?", type=Path, help="a values file (default: the chart's values.yaml)")
    parser.add_argument("--name", default="edge", help="release name (default edge)")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--lint", action="store_true", help="print helm lint's report (strict) as JSON")
    parser.add_argument("--json", action="store_true", help="print {template: manifest} as JSON")
    args = parser.parse_args(argv)
    try:
        import helm_python as helm
    except ImportError:
        parser.error("rendering needs helm-python-sdk: pip install helm-python-sdk (or `helm template` with a helm "
                     "binary)")
    values = yaml.safe_load(args.values.read_text(encoding="utf-8")) if args.values else {}
    if args.lint:
        print(json.dumps(helm.lint(CHART, values, strict=True, namespace=args.namespace)))
        return 0
    try:
        with helm.Chart.load(CHART) as chart:
            manifests = chart.render(values, name=args.name, namespace=args.namespace)
    except helm.HelmError as exc:
        print(json.dumps({"error": str(exc)}) if args.json else f"refused: {exc}", file=sys.stdout)
        return 1
    print(json.dumps({"manifests": manifests}) if args.json else
          "\n---\n".join(f"# Source: {name}\n{text.strip()}" for name, text in sorted(manifests.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
