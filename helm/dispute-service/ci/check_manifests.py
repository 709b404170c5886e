#!/usr/bin/env python3
"""Asserts the settings the chart promises, on manifests rendered by `helm template`.

    check_manifests.py defaults.yaml all-on.yaml

Security context, probes, the migration hook, where secrets come from, connection and
shutdown settings: each is checked here so that a template change cannot drop one silently.
Exits non-zero, naming every broken promise.
"""

import sys

import yaml

failures = []


def check(condition, what):
    if not condition:
        failures.append(what)


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def one(docs, kind, name_suffix=""):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    check(len(found) == 1, f"exactly one {kind} *{name_suffix} (found {len(found)})")
    return found[0] if found else {}


def duration_seconds(text):
    assert text.endswith("s"), text
    return int(text[:-1])


def check_pod(pod, what):
    """The pod-level and container-level hardening every pod of the chart shares."""
    ctx = pod.get("securityContext", {})
    check(ctx.get("runAsNonRoot") is True, f"{what}: runAsNonRoot")
    check(ctx.get("runAsUser") == 65532, f"{what}: runAsUser 65532")
    check(ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{what}: seccomp RuntimeDefault")
    check(pod.get("automountServiceAccountToken") is False, f"{what}: automountServiceAccountToken false")
    for c in pod["containers"]:
        sc = c.get("securityContext", {})
        check(sc.get("readOnlyRootFilesystem") is True, f"{what}/{c['name']}: readOnlyRootFilesystem")
        check(sc.get("allowPrivilegeEscalation") is False, f"{what}/{c['name']}: allowPrivilegeEscalation false")
        check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{what}/{c['name']}: drop ALL capabilities")
        check(sc.get("runAsNonRoot") is True, f"{what}/{c['name']}: runAsNonRoot")
        res = c.get("resources", {})
        check(res.get("requests") and res.get("limits"), f"{what}/{c['name']}: resources requests and limits")


def check_release(docs, all_on):
    label = "all-on" if all_on else "defaults"
    deployment = one(docs, "Deployment")
    config = one(docs, "ConfigMap")
    data = config.get("data", {})
    pod = deployment["spec"]["template"]["spec"]
    check_pod(pod, f"{label} Deployment")
    container = pod["containers"][0]
    check(container.get("args") == ["serve"], f"{label}: the pod runs `serve`")

    # Probes: native gRPC on grpc.health.v1; liveness must not depend on the database.
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
    for probe, service in [("startupProbe", "liveness"), ("livenessProbe", "liveness"), ("readinessProbe", "")]:
        grpc = container.get(probe, {}).get("grpc")
        check(grpc is not None, f"{label}: {probe} is a gRPC probe")
        if grpc:
            check(grpc.get("port") == port, f"{label}: {probe} on the gRPC port")
            check(grpc.get("service", "") == service, f"{label}: {probe} asks service {service!r}")

    # Shutdown: the pod's grace outlives the drain plus the pre-stop wait.
    drain = duration_seconds(data["DISPUTE_SHUTDOWN_GRACE"])
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    check(pod["terminationGracePeriodSeconds"] > drain + pre_stop, f"{label}: terminationGracePeriodSeconds > drain + preStop")

    # Spread over nodes.
    keys = [t["topologyKey"] for t in pod.get("topologySpreadConstraints", [])]
    check("kubernetes.io/hostname" in keys, f"{label}: topology spread across nodes")

    # Configuration from a ConfigMap, secrets from a Secret; no secret in the ConfigMap.
    env_from = container.get("envFrom", [])
    check(any("configMapRef" in e for e in env_from), f"{label}: env from the ConfigMap")
    secret_refs = [e["secretRef"]["name"] for e in env_from if "secretRef" in e]
    check(len(secret_refs) == 1, f"{label}: env from one Secret")
    for key in data:
        check(key not in ("DATABASE_URL", "DISPUTE_JWT_HS256_SECRET"), f"{label}: {key} must not be in the ConfigMap")
    check(not container.get("env"), f"{label}: no inline env (secrets could leak into the Deployment)")
    check(data.get("DISPUTE_MIGRATE_ON_START") == "false", f"{label}: pods do not migrate when the Job does")
    check("DISPUTE_MAX_CONNECTION_AGE" in data, f"{label}: connection age is bounded")

    # A mounted key Secret must not use subPath, or rotations never reach the pod.
    for mount in container.get("volumeMounts", []):
        check("subPath" not in mount, f"{label}: {mount['name']} mounted without subPath")
    if "DISPUTE_JWT_JWKS_FILE" in data:
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        check(any(data["DISPUTE_JWT_JWKS_FILE"].startswith(m + "/") for m in mounts), f"{label}: the JWKS file is mounted")

    # Migrations: a pre-install/pre-upgrade hook Job running `migrate`, DATABASE_URL from a Secret.
    job = one(docs, "Job", "-migrate")
    hooks = job["metadata"].get("annotations", {})
    check(set(hooks.get("helm.sh/hook", "").split(",")) == {"pre-install", "pre-upgrade"}, f"{label}: migration Job is a pre-install,pre-upgrade hook")
    job_pod = job["spec"]["template"]["spec"]
    check_pod(job_pod, f"{label} migration Job")
    check(job_pod["restartPolicy"] == "Never", f"{label}: Job restartPolicy Never")
    migrate = job_pod["containers"][0]
    check(migrate.get("args") == ["migrate"], f"{label}: the Job runs `migrate`")
    url = next((e for e in migrate.get("env", []) if e["name"] == "DATABASE_URL"), {})
    check("secretKeyRef" in url.get("valueFrom", {}), f"{label}: the Job reads DATABASE_URL from a Secret")
    job_secret = url.get("valueFrom", {}).get("secretKeyRef", {}).get("name")
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    if job_secret in secrets:
        # A Secret the chart makes for the Job must exist before it: a hook with a lower weight.
        annotations = secrets[job_secret]["metadata"].get("annotations", {})
        check("pre-install" in annotations.get("helm.sh/hook", ""), f"{label}: the Job's Secret is a hook")
        check(int(annotations.get("helm.sh/hook-weight", "0")) < int(hooks.get("helm.sh/hook-weight", "0")), f"{label}: the Job's Secret is created first")

    # Service: gRPC with its appProtocol, and the metrics port.
    service = next(d for d in docs if d["kind"] == "Service" and not d["metadata"]["name"].endswith("-headless"))
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    check(ports.get("grpc", {}).get("appProtocol") == "grpc", f"{label}: Service appProtocol grpc")
    check("metrics" in ports, f"{label}: Service exposes metrics")

    account = one(docs, "ServiceAccount")
    check(account.get("automountServiceAccountToken") is False, f"{label}: ServiceAccount does not mount a token")

    test = one(docs, "Pod", "-test-health")
    check(test["metadata"].get("annotations", {}).get("helm.sh/hook") == "test", f"{label}: helm test hook pod")
    check(test["spec"]["containers"][0]["args"][0] == "healthcheck", f"{label}: the test pod runs `healthcheck`")
    check_pod(test["spec"], f"{label} test pod")

    if all_on:
        for kind in ["HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor"]:
            one(docs, kind)
        one(docs, "Service", "-headless")
        check("replicas" not in deployment["spec"], "all-on: the HPA owns the replica count")
        made = secrets.get(secret_refs[0] if secret_refs else "", {})
        check("DATABASE_URL" in made.get("stringData", {}), "all-on: the chart's Secret holds DATABASE_URL")
        check("OTEL_EXPORTER_OTLP_ENDPOINT" in data, "all-on: OTel endpoint configured")
    else:
        check(secret_refs == ["dispute-service-secrets"], "defaults: the Secret is one you manage")
        check(not any(d["kind"] == "Secret" for d in docs), "defaults: the chart makes no Secret")


def main():
    defaults, all_on = sys.argv[1:3]
    check_release(load(defaults), all_on=False)
    check_release(load(all_on), all_on=True)
    if failures:
        print("chart promises broken:", *failures, sep="\n  ")
        sys.exit(1)
    print("chart: every promised setting present")


if __name__ == "__main__":
    main()
