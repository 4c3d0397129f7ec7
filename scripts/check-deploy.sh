#!/usr/bin/env bash
# Validates the Kubernetes manifests under deploy/ offline: renders every
# overlay with `kubectl kustomize`, checks the built-in kinds against the
# Kubernetes OpenAPI schemas with PyPI's kubernetes-validate (--strict:
# unknown fields fail), the CRD kinds (Multus' NetworkAttachmentDefinition,
# Prometheus Operator's ServiceMonitor) against deploy/schemas/crds.json,
# and the SR-IOV JSON config inside the attachment. Then it proves the
# check can fail: a copy of the base with one field misspelled must be
# refused.
#
#   scripts/check-deploy.sh
#
# Needs kubectl (for kustomize) and kubernetes-validate (`pip install
# kubernetes-validate`); exits 1 naming what is missing otherwise.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
for tool in kubectl kubernetes-validate python3; do
    command -v $tool >/dev/null || { echo "check-deploy: $tool is not installed" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

check() { # rendered.yaml
    kubernetes-validate --strict --quiet --no-warn "$1" || return 1
    python3 - "$1" deploy/schemas/crds.json <<'PY' || return 1
import json, sys, yaml, jsonschema
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
schemas = json.load(open(sys.argv[2]))
bad = 0
for d in docs:
    kind = d.get("kind")
    if kind in schemas:
        try:
            jsonschema.validate(d, schemas[kind])
            if kind == "NetworkAttachmentDefinition":
                cfg = json.loads(d["spec"]["config"])
                assert cfg.get("type") and cfg.get("cniVersion"), "CNI config needs type and cniVersion"
        except Exception as e:
            print(f"{sys.argv[1]}: {kind}/{d['metadata'].get('name')}: {e}", file=sys.stderr)
            bad += 1
sys.exit(1 if bad else 0)
PY
}

for overlay in deploy/overlays/*/; do
    name=$(basename "$overlay")
    kubectl kustomize "$overlay" >"$work/$name.yaml"
    check "$work/$name.yaml" || { echo "check-deploy: $name: invalid" >&2; exit 1; }
    echo "check-deploy: $name: $(grep -c '^kind:' "$work/$name.yaml") objects valid"
done

# The check must be able to fail.
cp -r deploy "$work/broken"
sed -i 's/readinessProbe:/readinesProbe:/' "$work/broken/base/daemonset.yaml"
kubectl kustomize "$work/broken/overlays/af-packet" >"$work/broken.yaml"
if check "$work/broken.yaml" 2>/dev/null; then
    echo "check-deploy: a misspelled field (readinesProbe) passed the check" >&2
    exit 1
fi
sed -i 's/interval: 15s/intervall: 15s/' "$work/broken/overlays/sriov/servicemonitor.yaml"
sed -i 's/readinesProbe:/readinessProbe:/' "$work/broken/base/daemonset.yaml"
kubectl kustomize "$work/broken/overlays/sriov" >"$work/broken2.yaml"
if check "$work/broken2.yaml" 2>/dev/null; then
    echo "check-deploy: a misspelled ServiceMonitor field (intervall) passed the check" >&2
    exit 1
fi
echo "check-deploy: misspelled fields are refused (built-in kind and CRD)"
