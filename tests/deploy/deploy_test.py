#!/usr/bin/env python3
"""Checks of deploy/: the Dockerfile (hadolint), the Kubernetes manifests
(kubernetes-validate against the Kubernetes schemas; the ServiceMonitor
selects exactly one Service; the PrometheusRule is the rules file), the
Prometheus config and rules (promtool),
the Grafana dashboard and the rules (every metric, label and label value
they query exists in a live server's /metrics; p50 and p99 for every stage),
and a real Prometheus server running the shipped config and rules against a
live normserve, queried over its HTTP API.

Usage: deploy_test.py SERVER_BINARY   (run by run_deploy_test.sh)
"""
import glob
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "integration"))
import live_server  # noqa: E402

SERVER = None
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(REPO, "deploy")
BIN = os.path.dirname(sys.executable)
METRIC_RE = re.compile(r"\b((?:normserve|grpc_server|process)_[a-z_]+)")
# A series selector `metric{matchers}` and one matcher `label op "value"`.
SELECTOR_RE = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")
MATCHER_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
BY_RE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
QUANTILE_RE = re.compile(r"histogram_quantile\(\s*([0-9.]+)\s*,.*?\b(normserve_[a-z_]+)_bucket\b")
SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
# The server exports a grpc_code only once it has answered with it, so a
# query's grpc_code must be one of gRPC's code names, not a seen value.
GRPC_CODES = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
              "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
              "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
              "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}
# Histograms the dashboard shows as p50 and p99: the three latency stages
# and the batch size in rows and in requests.
QUANTILE_STAGES = ("normserve_request_latency_seconds", "normserve_queue_wait_seconds",
                   "normserve_compute_seconds", "normserve_batch_rows", "normserve_batch_requests")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def load_json(path):
    with open(path) as f:
        return json.load(f)


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


class LiveServer(live_server.LiveServer):
    def __init__(self):
        super().__init__(SERVER)

    def normctl(self, *args):
        normctl = os.path.join(os.path.dirname(os.path.dirname(SERVER)), "client", "normctl")
        return subprocess.run([normctl, f"--server=127.0.0.1:{self.grpc_port}", *args],
                              capture_output=True, text=True, timeout=30)


def exported_families(metrics_text):
    names = set()
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            if kind == "histogram":
                names.update({name + "_bucket", name + "_sum", name + "_count"})
    return names


def exported_labels(metrics_text):
    """{series name: {label: set of values}} over the samples in /metrics."""
    labels = {}
    for line in metrics_text.splitlines():
        m = SAMPLE_RE.match(line)
        if not m or line.startswith("#"):
            continue
        series = labels.setdefault(m.group(1), {})
        for k, v in LABEL_RE.findall(m.group(2) or ""):
            series.setdefault(k, set()).add(v)
    return labels


def label_problems(expr, labels):
    """What in `expr` names a label or label value that the live server's
    series (`labels`, from exported_labels) do not have."""
    problems = []
    used = set()
    for metric, matchers in SELECTOR_RE.findall(expr):
        if metric not in labels:
            continue  # a recorded series, or checked by the metric name test
        used.add(metric)
        for label, op, value in MATCHER_RE.findall(matchers):
            values = labels[metric].get(label)
            if values is None:
                problems.append(f"{metric} has no label {label}")
            elif op in ("=~", "!~"):
                if not any(re.fullmatch(value, v) for v in values):
                    problems.append(f"{metric}{{{label}{op}\"{value}\"}} matches no exported value "
                                    f"{sorted(values)}")
            elif label == "grpc_code" and value not in GRPC_CODES:
                problems.append(f"{metric}{{{label}{op}\"{value}\"}}: not a gRPC code")
            elif label != "grpc_code" and value not in values:
                problems.append(f"{metric}{{{label}{op}\"{value}\"}}: exported values are {sorted(values)}")
    used.update(m for m in METRIC_RE.findall(expr) if m in labels)
    available = {k for m in used for k in labels[m]}
    for group in BY_RE.findall(expr):
        for label in filter(None, (x.strip() for x in group.split(","))):
            if used and label not in available:
                problems.append(f"aggregation by {label}: no label of {sorted(used)}")
    return problems


def service_matches(selector, service):
    """Whether a ServiceMonitor's label selector selects `service`."""
    have = service["metadata"].get("labels", {})
    if any(have.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        if ((op == "In" and have.get(key) not in values) or (op == "NotIn" and have.get(key) in values)
                or (op == "Exists" and key not in have) or (op == "DoesNotExist" and key in have)):
            return False
    return True


class DeployTest(unittest.TestCase):
    def test_dockerfile_passes_hadolint(self):
        r = subprocess.run([os.path.join(BIN, "hadolint"), os.path.join(REPO, "Dockerfile")],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_kubernetes_manifests_validate(self):
        core, crds = [], []
        for path in sorted(glob.glob(os.path.join(DEPLOY, "k8s", "*.yaml"))):
            doc = load_yaml(path)
            (crds if doc["apiVersion"].startswith("monitoring.coreos.com") else core).append(path)
        r = subprocess.run([os.path.join(BIN, "kubernetes-validate"), "--strict", *core],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertGreaterEqual(len(core), 6)
        # kubernetes-validate has no schema for the Prometheus Operator's CRD:
        # check that the ServiceMonitor scrapes every Deployment's pods
        # through exactly one Service (the ClusterIP and the headless one
        # front the same pods: selecting both scrapes every pod twice), on a
        # port that Service has.
        docs = list(map(load_yaml, core))
        services = [d for d in docs if d["kind"] == "Service"]
        deployments = [d for d in docs if d["kind"] == "Deployment"]
        self.assertGreaterEqual(len(services), 2)
        self.assertGreaterEqual(len(deployments), 2)
        self.assertTrue(crds)
        kinds = sorted(load_yaml(path)["kind"] for path in crds)
        self.assertEqual(kinds, ["PrometheusRule", "ServiceMonitor"])
        for path in crds:
            mon = load_yaml(path)
            if mon["kind"] != "ServiceMonitor":
                continue  # the PrometheusRule: its own test
            selected = [s for s in services if service_matches(mon["spec"]["selector"], s)]
            for dep in deployments:
                pod_labels = dep["spec"]["template"]["metadata"]["labels"]
                fronting = [s["metadata"]["name"] for s in selected
                            if all(pod_labels.get(k) == v for k, v in s["spec"]["selector"].items())]
                self.assertEqual(len(fronting), 1,
                                 f"{path}: Services scraping {dep['metadata']['name']}'s pods: {fronting}")
            for service in selected:
                ports = {p["name"] for p in service["spec"]["ports"]}
                for ep in mon["spec"]["endpoints"]:
                    self.assertIn(ep["port"], ports, service["metadata"]["name"])

    def test_deployments_drain_gracefully_fit_their_limits_and_run_unprivileged(self):
        hpa_targets = {load_yaml(p)["spec"]["scaleTargetRef"]["name"]
                       for p in glob.glob(os.path.join(DEPLOY, "k8s", "hpa*.yaml"))}
        self.assertTrue(hpa_targets)
        for path in sorted(glob.glob(os.path.join(DEPLOY, "k8s", "deployment*.yaml"))):
            with self.subTest(path=os.path.basename(path)):
                dep = load_yaml(path)
                pod = dep["spec"]["template"]["spec"]
                (c,) = pod["containers"]
                flags = dict(a[2:].split("=", 1) for a in c["args"] if "=" in a)
                # preStop pause + drain + a margin within the termination grace.
                pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
                self.assertEqual(pre_stop[0], "sleep")
                drain_s = int(pre_stop[1]) + int(flags["shutdown_grace_ms"]) / 1000
                self.assertGreaterEqual(pod["terminationGracePeriodSeconds"], drain_s + 2)
                # Compute threads = the CPU limit (the server would count the
                # node's cores), queued bytes well inside the memory limit.
                limits = c["resources"]["limits"]
                self.assertEqual(int(flags["cpu_threads"]), int(limits["cpu"]))
                memory = int(limits["memory"].removesuffix("Gi")) << 30
                self.assertLessEqual(int(flags["max_queued_bytes"]) * 4, memory)
                # A saturated pod must not be restarted for a slow health answer.
                self.assertGreaterEqual(c["livenessProbe"]["timeoutSeconds"], 5)
                self.assertGreaterEqual(c["livenessProbe"]["failureThreshold"], 6)
                self.assertEqual(c["readinessProbe"]["grpc"]["port"], 8001)
                # The HPA owns the replica count of what it scales, whose
                # replicas spread over nodes.
                if dep["metadata"]["name"] in hpa_targets:
                    self.assertNotIn("replicas", dep["spec"])
                    (spread,) = pod["topologySpreadConstraints"]
                    self.assertEqual(spread["topologyKey"], "kubernetes.io/hostname")
                # Scraped through the ServiceMonitor only: annotations would
                # have annotation-based discovery scrape the pods again.
                annotations = dep["spec"]["template"]["metadata"].get("annotations", {})
                self.assertFalse([k for k in annotations if k.startswith("prometheus.io/")])
                # GPU pods fail visibly without a usable GPU.
                if "nvidia.com/gpu" in limits:
                    self.assertIn("--device=cuda", c["args"])
                self.assertTrue(pod["securityContext"]["runAsNonRoot"])
                self.assertTrue(c["securityContext"]["readOnlyRootFilesystem"])
        headless = load_yaml(os.path.join(DEPLOY, "k8s", "service-headless.yaml"))
        self.assertEqual(headless["spec"]["clusterIP"], "None")
        # Evictions take one pod at a time however many the HPA runs.
        pdb = load_yaml(os.path.join(DEPLOY, "k8s", "pdb.yaml"))
        self.assertEqual(pdb["spec"]["maxUnavailable"], 1)
        self.assertNotIn("minAvailable", pdb["spec"])

    def test_each_deployment_s_flags_start_the_real_server(self):
        """The flags the manifests pass exist and are in range: the server
        starts with them (a bad one would exit 2 and the pod crash-loop).
        --device=cuda is started as --device=auto where there is no GPU
        (it would refuse to start, as it should on a GPU node whose GPU is
        unusable)."""
        for path in sorted(glob.glob(os.path.join(DEPLOY, "k8s", "deployment*.yaml"))):
            (c,) = load_yaml(path)["spec"]["template"]["spec"]["containers"]
            self.assertIn("--max_connection_age_ms=300000", c["args"], path)
            args = ["--device=auto" if a == "--device=cuda" else a for a in c["args"]]
            with live_server.LiveServer(SERVER, *args) as server:
                self.assertGreater(server.grpc_port, 0, path)

    def test_prometheus_config_and_rules_pass_promtool(self):
        for args in (["check", "config", os.path.join(DEPLOY, "prometheus", "prometheus.yml")],
                     ["check", "rules", os.path.join(DEPLOY, "prometheus", "normserve-rules.yml")]):
            r = subprocess.run(["promtool", *args], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_prometheusrule_carries_the_shipped_rules(self):
        # The Operator's copy of the rules is the plain-Prometheus file's,
        # group for group, and passes promtool as a rule file; the label
        # that names it is the ServiceMonitor's.
        rule = load_yaml(os.path.join(DEPLOY, "k8s", "prometheusrule.yaml"))
        shipped = load_yaml(os.path.join(DEPLOY, "prometheus", "normserve-rules.yml"))
        self.assertEqual(rule["kind"], "PrometheusRule")
        self.assertEqual(rule["spec"]["groups"], shipped["groups"])
        monitor = load_yaml(os.path.join(DEPLOY, "k8s", "servicemonitor.yaml"))
        self.assertEqual(rule["metadata"]["labels"], monitor["metadata"]["labels"])
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "rules.yml")
            with open(path, "w") as f:
                yaml.safe_dump({"groups": rule["spec"]["groups"]}, f)
            r = subprocess.run(["promtool", "check", "rules", path], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_dashboard_shows_p50_p99_and_the_batch_size_distribution(self):
        dash = load_json(os.path.join(DEPLOY, "grafana", "normserve.json"))
        exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
        titles = " ".join(p["title"] for p in dash["panels"]).lower()
        for needed in ("throughput", "latency", "queue wait", "compute", "batch size",
                       "queue depth", "errors"):
            self.assertIn(needed, titles)
        quantiles = {(m, float(q)) for e in exprs for q, m in QUANTILE_RE.findall(e)}
        for stage in QUANTILE_STAGES:
            for q in (0.5, 0.99):
                self.assertIn((stage, q), quantiles, f"no p{q * 100:g} of {stage}")
        # The distribution itself: a heatmap of the bucket rates by le.
        for metric in ("normserve_batch_rows", "normserve_batch_requests"):
            heatmaps = [t for p in dash["panels"] if p["type"] == "heatmap" for t in p["targets"]
                        if t.get("format") == "heatmap" and f"{metric}_bucket[" in t["expr"]
                        and re.search(r"\bby\s*\(\s*le\s*\)", t["expr"])]
            self.assertTrue(heatmaps, f"no heatmap of {metric}_bucket by le")
        ids = [p["id"] for p in dash["panels"]]
        self.assertEqual(len(ids), len(set(ids)), "panel ids are unique")

    def test_dashboard_and_rules_query_real_metrics_labels_and_values(self):
        dash = load_json(os.path.join(DEPLOY, "grafana", "normserve.json"))
        exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
        rules = load_yaml(os.path.join(DEPLOY, "prometheus", "normserve-rules.yml"))
        exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
        with LiveServer() as server:
            r = server.normctl("--shape=2,64")  # so every family has samples
            self.assertEqual(r.returncode, 0, r.stderr)
            bad = server.normctl("--shape=2,64", "--epsilon=-1")
            self.assertNotEqual(bad.returncode, 0)
            text = http_get(f"http://127.0.0.1:{server.metrics_port}/metrics")
        families = exported_families(text)
        used = {m for e in exprs for m in METRIC_RE.findall(e)}
        self.assertTrue(used)
        self.assertEqual(sorted(used - families), [], "queried but not exported")
        labels = exported_labels(text)
        self.assertIn("normserve.v1.NormalizationService",
                      labels["grpc_server_handled_total"]["grpc_service"])
        problems = [f"{e}: {p}" for e in exprs for p in label_problems(e, labels)]
        self.assertEqual(problems, [])

    def test_dashboard_and_rules_count_both_inference_apis(self):
        """Throughput and error queries that filter by gRPC service count the
        Open Inference Protocol's calls as well as the native API's."""
        dash = load_json(os.path.join(DEPLOY, "grafana", "normserve.json"))
        exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
        rules = load_yaml(os.path.join(DEPLOY, "prometheus", "normserve-rules.yml"))
        exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
        filtered = 0
        for expr in exprs:
            for label, op, value in MATCHER_RE.findall(expr):
                if label != "grpc_service":
                    continue
                filtered += 1
                for service in ("normserve.v1.NormalizationService",
                                "inference.GRPCInferenceService"):
                    self.assertTrue(op == "=~" and re.fullmatch(value, service),
                                    f"{expr}: grpc_service{op}\"{value}\": expected =~ matching {service}")
                self.assertFalse(re.fullmatch(value, "grpc.health.v1.Health"), expr)
        self.assertGreaterEqual(filtered, 4)

    def test_label_check_catches_a_wrong_service_name(self):
        labels = {"grpc_server_handled_total": {"grpc_service": {"normserve.v1.NormalizationService"},
                                                "grpc_code": {"OK"}, "grpc_method": {"Normalize"}}}
        good = ('sum by (grpc_method) (rate(grpc_server_handled_total'
                '{grpc_service="normserve.v1.NormalizationService",grpc_code!="OK"}[1m]))')
        self.assertEqual(label_problems(good, labels), [])
        for bad in ('grpc_server_handled_total{grpc_service="normserve.NormalizationService"}',
                    'grpc_server_handled_total{grpc_code="RESOURCE_EXHAUSTD"}',
                    'grpc_server_handled_total{model="default"}',
                    'sum by (model) (grpc_server_handled_total)'):
            self.assertTrue(label_problems(bad, labels), bad)

    def test_real_prometheus_runs_the_shipped_config_and_rules(self):
        prometheus = shutil.which("prometheus")
        self.assertIsNotNone(prometheus, "the prometheus package is installed by deploy/install-deps.sh")
        shipped = os.path.join(DEPLOY, "prometheus")
        rules = load_yaml(os.path.join(shipped, "normserve-rules.yml"))
        recorded = [r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r]
        self.assertTrue(recorded)
        with LiveServer() as server, tempfile.TemporaryDirectory() as tmp:
            # One good and one failed call before the first scrape, so that
            # every series exists from it on: rate() sees no increase in a
            # series' first sample, only in later ones.
            self.assertEqual(server.normctl("--shape=4,256").returncode, 0)
            self.assertNotEqual(server.normctl("--shape=2,64", "--epsilon=-1").returncode, 0)
            # deploy/prometheus/prometheus.yml and its rule files as shipped,
            # but for the target (the live server) and the intervals (1 s
            # instead of 15 s, so the test takes seconds).
            config = load_yaml(os.path.join(shipped, "prometheus.yml"))
            config["global"].update(scrape_interval="1s", evaluation_interval="1s")
            (job,) = config["scrape_configs"]
            job["static_configs"] = [{"targets": [f"127.0.0.1:{server.metrics_port}"]}]
            self.assertTrue(config["rule_files"])
            for name in config["rule_files"]:
                shutil.copy(os.path.join(shipped, name), tmp)
            with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
                yaml.safe_dump(config, f)
            port = free_port()
            prom = subprocess.Popen([prometheus, f"--config.file={tmp}/prometheus.yml",
                                     f"--storage.tsdb.path={tmp}/data",
                                     f"--web.listen-address=127.0.0.1:{port}"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            def api(path, **params):
                url = f"http://127.0.0.1:{port}/api/v1/{path}?" + urllib.parse.urlencode(params)
                return json.loads(http_get(url))["data"]

            def query(q):
                return api("query", query=q)["result"]

            def wait_for(what, get, timeout_s=60):
                deadline = time.time() + timeout_s
                while time.time() < deadline:
                    try:
                        value = get()
                        if value is not None:
                            return value
                    except OSError:
                        pass
                    time.sleep(0.5)
                self.fail(f"timed out waiting for {what() if callable(what) else what}")

            try:
                # Requests after the first scrape, so that rates see them.
                wait_for("the first scrape", lambda: query(f'up{{job="{job["job_name"]}"}} == 1') or None)
                sent, failed = 12, 2
                for _ in range(sent):
                    self.assertEqual(server.normctl("--shape=4,256").returncode, 0)
                for _ in range(failed):
                    self.assertNotEqual(server.normctl("--shape=2,64", "--epsilon=-1").returncode, 0)

                def count():
                    res = query('sum(grpc_server_handled_total{grpc_method="Normalize",grpc_code="OK"})')
                    value = float(res[0]["value"][1]) if res else None
                    return value if value == sent + 1 else None

                self.assertEqual(wait_for("the request count", count), sent + 1)
                # p99 over every request so far (cumulative buckets).
                p99 = query("histogram_quantile(0.99, sum by (le) "
                            "(normserve_request_latency_seconds_bucket))")
                self.assertTrue(p99)
                value = float(p99[0]["value"][1])
                self.assertGreater(value, 0)
                self.assertLess(value, 10)

                # Every rule of the shipped file loaded and evaluated cleanly.
                def evaluated_rules():
                    groups = api("rules")["groups"]
                    got = {g["name"]: [(r["name"], r["health"], r.get("lastError", "")) for r in g["rules"]]
                           for g in groups}
                    if any(h == "unknown" for g in got.values() for _, h, _ in g):
                        return None
                    return got

                # The dashboard's per-pod process panels find the server
                # (rate() once two scrapes hold its CPU time).
                dash = load_json(os.path.join(DEPLOY, "grafana", "normserve.json"))
                for title in ("Server CPU per pod (cores)", "Server resident memory per pod"):
                    (panel,) = [p for p in dash["panels"] if p["title"] == title]
                    (target,) = panel["targets"]
                    res = wait_for(title, lambda: query(target["expr"]) or None)
                    self.assertEqual(len(res), 1, res)
                    self.assertEqual(res[0]["metric"]["instance"], f"127.0.0.1:{server.metrics_port}")
                    self.assertGreaterEqual(float(res[0]["value"][1]), 0)
                    if "memory" in title:
                        self.assertGreater(float(res[0]["value"][1]), 1 << 20)

                got = wait_for("the rules' first evaluation", evaluated_rules)
                want = {g["name"]: [(r.get("record") or r["alert"], "ok", "") for r in g["rules"]]
                        for g in rules["groups"]}
                self.assertEqual(got, want)

                # Every recorded series exists with a finite value once the
                # rules have seen the requests.
                seen = {}

                def recorded_values():
                    for name in recorded:
                        seen[name] = [float(r["value"][1]) for r in query(name)]
                    if not all(any(map(math.isfinite, v)) for v in seen.values()):
                        return None
                    values = {k: max(filter(math.isfinite, v)) for k, v in seen.items()}
                    return values if values["normserve:errors:ratio5m"] > 0 else None

                values = wait_for(lambda: f"every recorded series (last seen: {seen})", recorded_values)
                self.assertGreater(values["normserve:request_latency_seconds:p99_5m"], 0)
                self.assertLess(values["normserve:request_latency_seconds:p99_5m"], 10)
                self.assertGreater(values["normserve:requests:rate5m"], 0)
                # Failed over all calls since the first scrape (roughly: rate()
                # extrapolates each series to the window on its own).
                self.assertAlmostEqual(values["normserve:errors:ratio5m"], failed / (sent + failed),
                                       delta=0.05)
                rate = query('normserve:requests:rate5m{grpc_method="Normalize"}')
                self.assertTrue(rate, "recorded per grpc_method")
            finally:
                prom.terminate()
                prom.wait(timeout=30)


if __name__ == "__main__":
    SERVER = sys.argv[1]
    unittest.main(argv=sys.argv[:1], verbosity=2)
