"""Validates rendered Kubernetes manifests offline against the Kubernetes
OpenAPI schemas that the `kubernetes-validate` package carries (strict: an
unknown field fails). Used by tests/deploy_artifacts.rs on `helm template`
output.

    python validate_manifests.py --kube-version 1.30.0 FILE...

The custom resources the chart renders (ServiceMonitor and PrometheusRule
of the prometheus-operator, KEDA's ScaledObject) have no schema there:
they are listed as skipped with that reason, and the Rust test checks
their structure itself. Any other kind without a schema fails. Prints one
JSON object, per file: {"FILE": {"validated": [...], "skipped": [...],
"errors": [...]}, ...}; exits 1 when any file has an error. Several files
in one run: the schemas load once.
"""
import argparse
import functools
import json
import sys

import kubernetes_validate
import kubernetes_validate.utils
import yaml

# kubernetes-validate reads the schema files again for every document (the
# definitions file is large); read each once. The schemas are never changed.
kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(
    kubernetes_validate.utils.schema_contents
)

CUSTOM_RESOURCES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kube-version", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    reports = {}
    for path in args.files:
        report = reports[path] = {"validated": [], "skipped": [], "errors": []}
        with open(path) as file:
            documents = [d for d in yaml.safe_load_all(file) if d is not None]
        if not documents:
            report["errors"].append(f"{path}: no manifests")
        for document in documents:
            api_version = document.get("apiVersion", "")
            kind = document.get("kind", "")
            name = f"{kind}/{document.get('metadata', {}).get('name', '?')}"
            if (api_version, kind) in CUSTOM_RESOURCES:
                report["skipped"].append(
                    f"{name}: {api_version} is a custom resource, not in the Kubernetes schemas"
                )
                continue
            try:
                kubernetes_validate.validate(document, args.kube_version, strict=True)
                report["validated"].append(name)
            except kubernetes_validate.SchemaNotFoundError as error:
                report["errors"].append(f"{name}: no schema ({error})")
            except kubernetes_validate.ValidationError as error:
                where = "/".join(str(p) for p in error.path)
                report["errors"].append(f"{name}: {where}: {error.message}")
            except Exception as error:  # an unreadable document is a failure too
                report["errors"].append(f"{name}: {type(error).__name__}: {error}")
    json.dump(reports, sys.stdout, indent=1)
    sys.exit(1 if any(report["errors"] for report in reports.values()) else 0)


if __name__ == "__main__":
    main()
