"""Checks of the rendered Kubernetes manifests (`make k8s-check`).

For every overlay (k8s/overlays/*), from the output of `kubectl kustomize`:

- the NetworkPolicies allow exactly the declared calls between the three
  services (DESIGN §2, plus the one documented addition), and exactly the
  declared paths between every workload of the namespace (services,
  collector, dev's PostgreSQL and Redis); an edge counts only when the
  caller's egress AND the callee's ingress allow it, on a port the callee
  listens on;
- a default deny (ingress and egress) covers the namespace;
- outside callers reach only their own service, by label, and every service
  can resolve names (kube-dns);
- every Deployment and StatefulSet carries the security context items,
  resources and probes the operators' checklist asks for; failures name the
  workload and the missing item;
- every EQUIPOISE_* variable a service is given is a known setting (the
  binary refuses unknown ones), and production commits no Secret.

Self-checks mutate the parsed documents (an extra edge, a missing edge, a
one-sided rule, an allow-all policy, no default deny, a weakened security
context) and expect the checks to fail, so the checks can fail.

Run by scripts/check-k8s.sh with K8S_RENDERED_DIR holding <overlay>.yaml;
without it, the overlays are rendered here with `kubectl kustomize`.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
import subprocess
import tempfile
import tomllib
import unittest
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
# Every overlay under k8s/overlays; each must be listed in WORKLOAD_EDGES.
OVERLAYS = tuple(sorted(p.name for p in (ROOT / "k8s" / "overlays").iterdir() if p.is_dir()))
NAMESPACE = "equipoise"
SERVICES = ("randomisation", "blinding", "safety")

# The calls between services in DESIGN §2: (caller, callee).
DESIGN_EDGES = frozenset(
    {
        ("randomisation", "blinding"),  # assign a code
        ("safety", "blinding"),  # unblind a subject for a SUSAR; DSMB arms
        ("blinding", "randomisation"),  # look up an allocation
    }
)
# The one addition: the built safety service reads trial definitions
# (expectedness against the RSI in force) and confirms a reported subject's
# allocation site from randomisation. Without it no case can be classified.
ADDED_EDGES = frozenset({("safety", "randomisation")})
SERVICE_EDGES = DESIGN_EDGES | ADDED_EDGES

COLLECTOR = "otel-collector"
TELEMETRY_EDGES = frozenset((service, COLLECTOR) for service in SERVICES)
# Every path between workloads of the namespace, per overlay.
WORKLOAD_EDGES = {
    "dev": SERVICE_EDGES
    | TELEMETRY_EDGES
    | {(service, "postgres") for service in SERVICES}
    | {("randomisation", "redis")},
    # PostgreSQL, Redis and the tracing backend are outside the namespace.
    "production": SERVICE_EDGES | TELEMETRY_EDGES,
}

# Callers from outside the namespace: the label their namespace and pods
# carry, and the services they may call.
CLIENT_LABEL = "equipoise/client"
EXTERNAL_CLIENTS = {
    "edc-gateway": {"randomisation"},
    "desk": {"blinding"},
    "pharmacovigilance": {"safety"},
}

# Address blocks an ipBlock peer may share with pods. An ipBlock that
# overlaps them counts as reaching every pod on its ports (conservative).
# Set K8S_CHECK_POD_CIDRS (comma-separated) to your cluster's pod network.
POD_CIDRS = [
    ipaddress.ip_network(cidr.strip())
    for cidr in os.environ.get(
        "K8S_CHECK_POD_CIDRS", "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fd00::/8"
    ).split(",")
    if cidr.strip()
]
# EQUIPOISE_* variables the binary does not read as settings.
NOT_SETTINGS = {"config", "token", "endpoint", "bin", "pg_bin", "extra_trials_dir"}

HEALTH_PROBE = "/usr/local/bin/grpc_health_probe"


# --------------------------------------------------------------------------
# Rendering and the model
# --------------------------------------------------------------------------


def render(overlay: str) -> list[dict]:
    """The overlay's documents, from K8S_RENDERED_DIR or `kubectl kustomize`."""
    rendered_dir = os.environ.get("K8S_RENDERED_DIR")
    if rendered_dir:
        text = (Path(rendered_dir) / f"{overlay}.yaml").read_text()
    else:
        text = subprocess.run(
            ["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


@dataclass(frozen=True)
class Pod:
    """A workload's pods, as NetworkPolicies see them."""

    name: str
    namespace: str
    labels: dict = field(hash=False)
    namespace_labels: dict = field(hash=False)
    # (port name or "", number, protocol) of each container port
    ports: tuple = ()

    def named_port(self, name: str):
        for port_name, number, protocol in self.ports:
            if port_name == name:
                return number, protocol
        return None


def namespace_labels(name: str, extra: dict | None = None) -> dict:
    return {"kubernetes.io/metadata.name": name, **(extra or {})}


WORKLOAD_KINDS = ("Deployment", "StatefulSet")


def workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d.get("kind") in WORKLOAD_KINDS]


def pods_of(docs: list[dict]) -> dict[str, Pod]:
    """One Pod per workload of the namespace, named by its component label."""
    ns_docs = [d for d in docs if d.get("kind") == "Namespace" and d["metadata"]["name"] == NAMESPACE]
    ns_extra = ns_docs[0]["metadata"].get("labels", {}) if ns_docs else {}
    pods = {}
    for workload in workloads(docs):
        template = workload["spec"]["template"]
        labels = template["metadata"].get("labels", {})
        name = labels.get("app.kubernetes.io/component", workload["metadata"]["name"])
        ports = tuple(
            (port.get("name", ""), port["containerPort"], port.get("protocol", "TCP"))
            for container in template["spec"]["containers"]
            for port in container.get("ports", [])
        )
        pods[name] = Pod(
            name=name,
            namespace=workload["metadata"].get("namespace", NAMESPACE),
            labels=labels,
            namespace_labels=namespace_labels(NAMESPACE, ns_extra),
            ports=ports,
        )
    return pods


def policies_of(docs: list[dict]) -> list[dict]:
    return [
        d
        for d in docs
        if d.get("kind") == "NetworkPolicy" and d["metadata"].get("namespace", NAMESPACE) == NAMESPACE
    ]


# --------------------------------------------------------------------------
# NetworkPolicy semantics
# --------------------------------------------------------------------------


def selector_matches(selector: dict, labels: dict) -> bool:
    """A LabelSelector: `{}` selects everything."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unknown selector operator {operator}")
    return True


def ip_block_may_cover_pods(block: dict) -> bool:
    network = ipaddress.ip_network(block["cidr"], strict=False)
    excepted = [ipaddress.ip_network(c, strict=False) for c in block.get("except") or []]
    for pod_net in POD_CIDRS:
        if network.version != pod_net.version or not network.overlaps(pod_net):
            continue
        # Covered only if an `except` removes the whole overlap.
        overlap = network if network.subnet_of(pod_net) else pod_net if pod_net.subnet_of(network) else None
        if overlap is None or not any(
            e.version == overlap.version and overlap.subnet_of(e) for e in excepted
        ):
            return True
    return False


def peer_matches(peer: dict, policy_namespace: str, pod: Pod) -> bool:
    if "ipBlock" in peer:
        return ip_block_may_cover_pods(peer["ipBlock"])
    ns_selector = peer.get("namespaceSelector")
    pod_selector = peer.get("podSelector")
    if ns_selector is None:
        in_namespace = pod.namespace == policy_namespace
    else:
        in_namespace = selector_matches(ns_selector, pod.namespace_labels)
    return in_namespace and (pod_selector is None or selector_matches(pod_selector, pod.labels))


def port_matches(rule_ports, destination: Pod, port: int, protocol: str) -> bool:
    """Whether a rule's `ports` admit `port`/`protocol` on `destination`
    (named ports are the destination's, for ingress and egress alike)."""
    if not rule_ports:
        return True
    for entry in rule_ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        wanted = entry.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):
            named = destination.named_port(wanted)
            if named == (port, protocol):
                return True
            continue
        if wanted <= port <= entry.get("endPort", wanted):
            return True
    return False


def policy_types(policy: dict) -> list[str]:
    spec = policy["spec"]
    return spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))


def selecting(policies: list[dict], pod: Pod, direction: str) -> list[dict]:
    return [
        p
        for p in policies
        if p["metadata"].get("namespace", NAMESPACE) == pod.namespace
        and direction in policy_types(p)
        and selector_matches(p["spec"].get("podSelector") or {}, pod.labels)
    ]


def ingress_allows(policies, destination: Pod, source: Pod, port: int, protocol: str) -> bool:
    applying = selecting(policies, destination, "Ingress")
    if not applying:
        return True  # not isolated for ingress
    for policy in applying:
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from")
            if (not peers or any(peer_matches(p, policy["metadata"].get("namespace", NAMESPACE), source) for p in peers)) and port_matches(
                rule.get("ports"), destination, port, protocol
            ):
                return True
    return False


def egress_allows(policies, source: Pod, destination: Pod, port: int, protocol: str) -> bool:
    applying = selecting(policies, source, "Egress")
    if not applying:
        return True  # not isolated for egress
    for policy in applying:
        for rule in policy["spec"].get("egress") or []:
            peers = rule.get("to")
            if (not peers or any(peer_matches(p, policy["metadata"].get("namespace", NAMESPACE), destination) for p in peers)) and port_matches(
                rule.get("ports"), destination, port, protocol
            ):
                return True
    return False


def connection_allowed(policies, source: Pod, destination: Pod, port: int, protocol: str = "TCP") -> bool:
    return egress_allows(policies, source, destination, port, protocol) and ingress_allows(
        policies, destination, source, port, protocol
    )


def allowed_edges(docs: list[dict], among: set[str] | None = None) -> set[tuple[str, str]]:
    """(caller, callee) pairs of the namespace's workloads for which some
    port the callee listens on is open in both directions. Self-edges
    (replica to replica) count too."""
    pods = pods_of(docs)
    policies = policies_of(docs)
    names = [n for n in pods if among is None or n in among]
    edges = set()
    for source in names:
        for destination in names:
            callee = pods[destination]
            if any(
                connection_allowed(policies, pods[source], callee, number, protocol)
                for _, number, protocol in callee.ports
            ):
                edges.add((source, destination))
    return edges


def edge_mismatch(actual: set, expected: set) -> str | None:
    extra, missing = sorted(actual - expected), sorted(expected - actual)
    if not extra and not missing:
        return None
    return f"extra edges {extra}, missing edges {missing}"


def default_deny_problems(docs: list[dict]) -> list[str]:
    for policy in policies_of(docs):
        spec = policy["spec"]
        if (
            spec.get("podSelector") in ({}, None)
            and {"Ingress", "Egress"} <= set(spec.get("policyTypes") or [])
            and not spec.get("ingress")
            and not spec.get("egress")
        ):
            return []
    return [f"no default-deny NetworkPolicy (podSelector {{}}, Ingress and Egress, no rules) in {NAMESPACE}"]


# --------------------------------------------------------------------------
# Workload checklist
# --------------------------------------------------------------------------


def known_settings() -> set[str]:
    """Every key in config/equipoise.toml, set or shown commented out."""
    text = (ROOT / "config" / "equipoise.toml").read_text()
    keys: set[str] = set()

    def walk(table: dict, prefix: str):
        for key, value in table.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                keys.add(f"{prefix}{key}")

    walk(tomllib.loads(text), "")
    section = ""
    for line in text.splitlines():
        header = re.match(r"^#?\s*\[([a-z_.]+)\]\s*$", line)
        if header:
            section = header.group(1) + "."
            continue
        commented = re.match(r"^#\s*([a-z_]+)\s*=", line)
        if commented:
            keys.add(f"{section}{commented.group(1)}")
    return keys


def setting_key(variable: str) -> str | None:
    if not variable.upper().startswith("EQUIPOISE_"):
        return None
    name = variable[len("EQUIPOISE_") :].lower()
    if name in NOT_SETTINGS:
        return None
    return name.replace("__", ".")


def container_environment(docs: list[dict], container: dict) -> dict[str, str | None]:
    """The container's variables: envFrom ConfigMaps, then env (values of
    secretKeyRef/fieldRef variables are None)."""
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d.get("kind") == "ConfigMap"}
    environment: dict[str, str | None] = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            environment.update(config_maps.get(source["configMapRef"]["name"], {}))
        if "secretRef" in source:
            environment["<secretRef " + source["secretRef"]["name"] + ">"] = None
    for variable in container.get("env") or []:
        environment[variable["name"]] = variable.get("value")
    return environment


def probe_problems(docs, workload: dict, container: dict, tls_client_cert: bool) -> list[str]:
    """Equipoise containers: startup, readiness and liveness probes of
    grpc.health.v1 on the gRPC port: the kubelet's gRPC probe in plaintext,
    or grpc_health_probe over mTLS when client certificates are required
    (the kubelet's probe has none)."""
    problems = []
    workload_name = f"{workload['kind']} {workload['metadata']['name']}"
    grpc_port = next((p["containerPort"] for p in container.get("ports", []) if p.get("name") == "grpc"), None)
    if grpc_port is None:
        return [f"{workload_name}: container {container['name']} has no port named grpc"]
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container.get(kind)
        if not probe:
            problems.append(f"{workload_name}: {kind} missing")
            continue
        if "grpc" in probe:
            if probe["grpc"].get("port") != grpc_port:
                problems.append(f"{workload_name}: {kind} is not on the grpc port {grpc_port}")
            if tls_client_cert:
                problems.append(
                    f"{workload_name}: {kind} is a kubelet gRPC probe, which cannot present the client "
                    "certificate tls.require_client_cert demands"
                )
        elif "exec" in probe:
            command = probe["exec"].get("command") or []
            if not command or command[0] != HEALTH_PROBE:
                problems.append(f"{workload_name}: {kind} exec probe does not run {HEALTH_PROBE}")
            if f"-addr=127.0.0.1:{grpc_port}" not in command:
                problems.append(f"{workload_name}: {kind} does not probe 127.0.0.1:{grpc_port}")
            if tls_client_cert and not {"-tls", "-tls-client-cert=/etc/equipoise/tls/tls.crt"} <= set(command):
                problems.append(f"{workload_name}: {kind} does not present the pod's client certificate")
            if not tls_client_cert and "-tls" in command:
                problems.append(f"{workload_name}: {kind} speaks TLS to a plaintext server")
        else:
            problems.append(f"{workload_name}: {kind} is neither a gRPC probe nor grpc_health_probe")
    readiness = container.get("readinessProbe") or {}
    if readiness:
        # NOT_SERVING must be seen before the drain delay ends.
        env = container_environment(docs, container)
        drain_ms = int(env.get("EQUIPOISE_DRAIN_DELAY_MS") or 2000)
        worst_ms = 1000 * (
            readiness.get("periodSeconds", 10) * readiness.get("failureThreshold", 3)
            + readiness.get("timeoutSeconds", 1)
        )
        if worst_ms >= drain_ms:
            problems.append(
                f"{workload_name}: readinessProbe sees NOT_SERVING only after {worst_ms} ms, "
                f"not within the {drain_ms} ms drain delay"
            )
        grace_ms = 1000 * workload["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        if grace_ms <= drain_ms:
            problems.append(f"{workload_name}: terminationGracePeriodSeconds does not exceed the drain delay")
    return problems


def numeric_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def workload_problems(docs: list[dict]) -> list[str]:
    problems = []
    settings = known_settings()
    for workload in workloads(docs):
        name = f"{workload['kind']} {workload['metadata']['name']}"
        spec = workload["spec"]["template"]["spec"]
        labels = workload["spec"]["template"]["metadata"].get("labels", {})
        pod_context = spec.get("securityContext") or {}
        if pod_context.get("runAsNonRoot") is not True:
            problems.append(f"{name}: pod securityContext.runAsNonRoot is not true")
        for key in ("runAsUser", "runAsGroup"):
            if not numeric_id(pod_context.get(key)):
                problems.append(f"{name}: pod securityContext.{key} is not a numeric non-root id")
        if (pod_context.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{name}: pod securityContext.seccompProfile is not RuntimeDefault")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: automountServiceAccountToken is not false")
        if spec.get("serviceAccountName") in (None, "default"):
            problems.append(f"{name}: runs as the default ServiceAccount")
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{name}: container {container['name']}"
            context = container.get("securityContext") or {}
            if context.get("runAsNonRoot") is not True:
                problems.append(f"{where}: securityContext.runAsNonRoot is not true")
            for key in ("runAsUser", "runAsGroup"):
                if not numeric_id(context.get(key)):
                    problems.append(f"{where}: securityContext.{key} is not a numeric non-root id")
            if context.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: securityContext.readOnlyRootFilesystem is not true")
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: securityContext.allowPrivilegeEscalation is not false")
            if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
                problems.append(f"{where}: securityContext.capabilities.drop lacks ALL")
            if (context.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
                problems.append(f"{where}: securityContext.seccompProfile is not RuntimeDefault")
            resources = container.get("resources") or {}
            for bound in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in (resources.get(bound) or {}):
                        problems.append(f"{where}: resources.{bound}.{resource} missing")
            for probe in ("readinessProbe", "livenessProbe"):
                if container in spec.get("initContainers", []):
                    continue
                if not container.get(probe):
                    problems.append(f"{where}: {probe} missing")
        if labels.get("app.kubernetes.io/name") != "equipoise":
            continue
        # The Equipoise services themselves.
        component = labels.get("app.kubernetes.io/component")
        container = spec["containers"][0]
        if spec.get("enableServiceLinks") is not False:
            problems.append(
                f"{name}: enableServiceLinks is not false (a Service named equipoise* would inject "
                "EQUIPOISE_* variables the binary refuses)"
            )
        if container.get("args") != ["serve", "--target", component]:
            problems.append(f"{name}: args are not serve --target {component}")
        environment = container_environment(docs, container)
        for variable in environment:
            key = setting_key(variable)
            if key is not None and key not in settings:
                problems.append(f"{name}: {variable} is not a setting (the binary refuses unknown keys)")
        tls_client_cert = str(environment.get("EQUIPOISE_TLS__REQUIRE_CLIENT_CERT", "false")).lower() == "true"
        problems += probe_problems(docs, workload, container, tls_client_cert)
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        data_dir = environment.get("EQUIPOISE_DATA_DIR")
        for path in (data_dir, "/tmp"):
            if path not in mounts:
                problems.append(f"{name}: no writable volume at {path} (the root filesystem is read-only)")
    return problems


# --------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------


class RenderedOverlays(unittest.TestCase):
    docs: dict[str, list[dict]] = {}

    def assert_edges(self, overlay: str, actual: set, expected: set, what: str):
        mismatch = edge_mismatch(actual, expected)
        if mismatch:
            self.fail(f"{overlay}: the NetworkPolicies allow {what} other than declared: {mismatch}")

    @classmethod
    def setUpClass(cls):
        cls.docs = {overlay: render(overlay) for overlay in OVERLAYS}

    def test_service_edges_are_exactly_the_declared_calls(self):
        for overlay, docs in self.docs.items():
            with self.subTest(overlay=overlay):
                self.assert_edges(overlay, allowed_edges(docs, set(SERVICES)), set(SERVICE_EDGES), "calls between services")

    def test_workload_edges_are_exactly_the_declared_paths(self):
        for overlay, docs in self.docs.items():
            with self.subTest(overlay=overlay):
                self.assert_edges(overlay, allowed_edges(docs), set(WORKLOAD_EDGES[overlay]), "paths between workloads")

    def test_the_namespace_is_denied_by_default(self):
        for overlay, docs in self.docs.items():
            with self.subTest(overlay=overlay):
                self.assertEqual(default_deny_problems(docs), [])

    def test_outside_callers_reach_only_their_service(self):
        for overlay, docs in self.docs.items():
            pods, policies = pods_of(docs), policies_of(docs)
            callers = {
                client: Pod(client, f"ns-{client}", {CLIENT_LABEL: client}, namespace_labels(f"ns-{client}", {CLIENT_LABEL: client}))
                for client in EXTERNAL_CLIENTS
            }
            # Half-labelled and unlabelled callers reach nothing.
            callers["labelled-pod-only"] = Pod("x", "ns-x", {CLIENT_LABEL: "edc-gateway"}, namespace_labels("ns-x"))
            callers["labelled-namespace-only"] = Pod("y", "ns-y", {}, namespace_labels("ns-y", {CLIENT_LABEL: "desk"}))
            callers["stranger"] = Pod("z", "ns-z", {}, namespace_labels("ns-z"))
            for caller, pod in callers.items():
                reached = {
                    name
                    for name, target in pods.items()
                    for _, number, protocol in target.ports
                    if ingress_allows(policies, target, pod, number, protocol)
                }
                with self.subTest(overlay=overlay, caller=caller):
                    self.assertEqual(reached, EXTERNAL_CLIENTS.get(caller, set()))

    def test_every_service_resolves_names(self):
        kube_dns = Pod(
            "kube-dns", "kube-system", {"k8s-app": "kube-dns"}, namespace_labels("kube-system"), (("dns", 53, "UDP"),)
        )
        for overlay, docs in self.docs.items():
            pods, policies = pods_of(docs), policies_of(docs)
            for service in SERVICES + (COLLECTOR,):
                with self.subTest(overlay=overlay, service=service):
                    self.assertTrue(egress_allows(policies, pods[service], kube_dns, 53, "UDP"))

    def test_every_workload_meets_the_checklist(self):
        for overlay, docs in self.docs.items():
            with self.subTest(overlay=overlay):
                problems = workload_problems(docs)
                if problems:
                    self.fail(f"{overlay}:\n  " + "\n  ".join(problems))

    def test_every_service_has_its_deployment(self):
        for overlay, docs in self.docs.items():
            with self.subTest(overlay=overlay):
                self.assertLessEqual(set(SERVICES) | {COLLECTOR}, set(pods_of(docs)))

    def test_production_commits_no_secret_and_documents_each_one(self):
        docs = self.docs["production"]
        self.assertEqual([d["metadata"]["name"] for d in docs if d.get("kind") == "Secret"], [])
        referenced = set()
        for workload in workloads(docs):
            spec = workload["spec"]["template"]["spec"]
            referenced |= {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
            for container in spec["containers"]:
                for variable in container.get("env") or []:
                    ref = (variable.get("valueFrom") or {}).get("secretKeyRef")
                    if ref:
                        referenced.add(ref["name"])
        readme = (ROOT / "k8s" / "README.md").read_text()
        self.assertEqual(sorted(name for name in referenced if name not in readme), [])


class TheChecksCanFail(unittest.TestCase):
    """Each mutation must be caught, or the checks above prove nothing."""

    @classmethod
    def setUpClass(cls):
        cls.dev = render("dev")

    def policy(self, docs, name):
        return next(p for p in policies_of(docs) if p["metadata"]["name"] == name)

    @staticmethod
    def peer(component):
        return {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "equipoise", "app.kubernetes.io/component": component}}}

    def test_an_extra_edge_is_caught(self):
        docs = copy.deepcopy(self.dev)
        self.policy(docs, "randomisation")["spec"]["egress"].append({"to": [self.peer("safety")], "ports": [{"port": "grpc"}]})
        self.policy(docs, "safety")["spec"]["ingress"].append({"from": [self.peer("randomisation")], "ports": [{"port": "grpc"}]})
        actual = allowed_edges(docs, set(SERVICES))
        self.assertIn(("randomisation", "safety"), actual)
        self.assertIsNotNone(edge_mismatch(actual, set(SERVICE_EDGES)))

    def test_a_one_sided_rule_makes_no_edge(self):
        docs = copy.deepcopy(self.dev)
        self.policy(docs, "randomisation")["spec"]["egress"].append({"to": [self.peer("safety")]})
        self.assertIsNone(edge_mismatch(allowed_edges(docs, set(SERVICES)), set(SERVICE_EDGES)))

    def test_a_missing_edge_is_caught(self):
        docs = copy.deepcopy(self.dev)
        blinding = self.policy(docs, "blinding")["spec"]
        blinding["ingress"] = [r for r in blinding["ingress"] if r["from"] != [self.peer("safety")]]
        actual = allowed_edges(docs, set(SERVICES))
        self.assertNotIn(("safety", "blinding"), actual)
        self.assertIsNotNone(edge_mismatch(actual, set(SERVICE_EDGES)))

    def test_a_wrong_port_is_caught(self):
        docs = copy.deepcopy(self.dev)
        for rule in self.policy(docs, "blinding")["spec"]["ingress"]:
            rule["ports"] = [{"protocol": "TCP", "port": 8080}]
        self.assertIsNotNone(edge_mismatch(allowed_edges(docs, set(SERVICES)), set(SERVICE_EDGES)))

    def test_an_allow_all_policy_is_caught(self):
        docs = copy.deepcopy(self.dev)
        docs.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "allow-all", "namespace": NAMESPACE},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}], "egress": [{}]},
            }
        )
        self.assertIsNotNone(edge_mismatch(allowed_edges(docs), set(WORKLOAD_EDGES["dev"])))

    def test_a_broad_ip_block_counts_as_reaching_pods(self):
        docs = copy.deepcopy(self.dev)
        self.policy(docs, "randomisation")["spec"]["egress"].append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})
        self.policy(docs, "safety")["spec"]["ingress"].append({"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]})
        self.assertIn(("randomisation", "safety"), allowed_edges(docs, set(SERVICES)))

    def test_a_missing_default_deny_is_caught(self):
        docs = [d for d in self.dev if not (d.get("kind") == "NetworkPolicy" and d["metadata"]["name"] == "default-deny")]
        self.assertNotEqual(default_deny_problems(docs), [])

    def test_a_weakened_workload_is_named(self):
        docs = copy.deepcopy(self.dev)
        deployment = next(w for w in workloads(docs) if w["metadata"]["name"] == "blinding")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        container["securityContext"]["readOnlyRootFilesystem"] = False
        del container["startupProbe"]
        container["env"].append({"name": "EQUIPOISE_BLINDING__DATABASE_URLS", "value": "x"})
        problems = workload_problems(docs)
        self.assertIn("Deployment blinding: container equipoise: securityContext.readOnlyRootFilesystem is not true", problems)
        self.assertIn("Deployment blinding: startupProbe missing", problems)
        self.assertIn(
            "Deployment blinding: EQUIPOISE_BLINDING__DATABASE_URLS is not a setting (the binary refuses unknown keys)",
            problems,
        )

    def test_a_kubelet_grpc_probe_under_required_client_certificates_is_caught(self):
        docs = copy.deepcopy(self.dev)
        environment = next(d for d in docs if d.get("kind") == "ConfigMap" and d["metadata"]["name"].startswith("equipoise-environment"))
        environment["data"]["EQUIPOISE_TLS__REQUIRE_CLIENT_CERT"] = "true"
        self.assertTrue(any("cannot present the client certificate" in p for p in workload_problems(docs)))

    def test_a_slow_readiness_probe_is_caught(self):
        docs = copy.deepcopy(self.dev)
        deployment = next(w for w in workloads(docs) if w["metadata"]["name"] == "safety")
        deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSeconds"] = 10
        self.assertTrue(any(p.startswith("Deployment safety: readinessProbe sees NOT_SERVING only after") for p in workload_problems(docs)))


if __name__ == "__main__":
    unittest.main()
