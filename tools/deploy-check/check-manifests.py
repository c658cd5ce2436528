#!/usr/bin/env python3
"""Offline checks of everything under deploy/ (run by tests/deploy_manifests.rs).

1. Every YAML file under deploy/ must be a resource or patch of some kustomization.yaml.
   Resource files are validated as they stand; every kustomization is rendered with
   `kubectl kustomize` and its output validated again (patches only exist rendered).
2. Kubernetes kinds: the strict JSON schemas of PyPI's kubernetes-validate (unknown fields
   refused, as `kubectl apply`'s server-side field validation does), for each version in
   K8S_VERSIONS. KServe kinds: schemas derived from KServe's CRDs (kserve/*.schema.json,
   see gen-kserve-schemas.py), their metadata as a Kubernetes ObjectMeta.
3. What the deployment promises (docs: README "Deploying on Kubernetes / KServe"): health
   probes on the Open Inference Protocol endpoints, non-root, read-only root filesystem, no
   capabilities, registry and key mounted read-only, ports, scrape annotations, resources,
   Service/HPA/PDB aimed at the Deployment, GPU overlay = one GPU + GPU providers + GPU image,
   InferenceService matching its ServingRuntime, only `vqad serve` flags.
4. The Dockerfile: hadolint, the ONNX Runtime version of tools/setup-native.sh, non-root
   user matching the manifests, `vqad serve` entrypoint, the runtime-only build, and the
   `train` image (vqad-train) of the Jobs.
5. The Jobs of deploy/train/ and deploy/release/ (README "Training and releasing on
   Kubernetes"): an Indexed Job with one category per index from its ConfigMap list,
   backoffLimitPerIndex, a GPU per pod, run folders on a PVC, resume on restart; a release
   Job with the signing key from a read-only Secret, publishing into the registry PVC and
   promoting to staging; both pinned by image digest and naming themselves in the provenance
   (namespace, job, pod UID, image) through the downward API.

    python check-manifests.py --root REPO [--vqad PATH_TO_VQAD]

kubectl and hadolint are taken from beside this python (tools/setup-deploy-check.sh puts them
there). Prints one line per problem naming the file; exits 1 if there is any.
"""
import argparse
import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml
from jsonschema.exceptions import best_match
from referencing import Registry, Resource

# The oldest Kubernetes the manifests claim (PDB unhealthyPodEvictionPolicy is GA in 1.31) and
# the newest kubernetes-validate bundles.
K8S_VERSIONS = ["1.31.0", "1.37.0"]
KSERVE_SCHEMAS = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "servingruntime.v1alpha1.schema.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice.v1beta1.schema.json",
}
KUSTOMIZE_KINDS = {"Kustomization", "Component"}
# `vqad serve`'s whole interface (issue 12); a flag outside it is a typo or an invention.
SERVE_FLAGS = {"--registry", "--pubkey", "--http", "--grpc", "--providers", "--max-batch",
               "--max-queue-delay-us", "--max-body-mb", "--poll-secs", "--trt-cache", "--ort-lib",
               "--threads", "--instances", "--channel", "--model-providers",
               "--versions",
               # issue 25: limits on what clients control
               "--max-image-pixels", "--max-inflight-mb", "--max-connections", "--idle-timeout-secs",
               "--header-timeout-secs", "--body-timeout-secs", "--write-timeout-secs",
               "--grpc-keepalive-secs", "--grpc-keepalive-timeout-secs"}
LIVE, READY = "/v2/health/live", "/v2/health/ready"
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


class Report:
    def __init__(self):
        self.errors = []

    def error(self, where, msg):
        self.errors.append(f"ERROR {where}: {msg}")
        print(self.errors[-1])

    def check(self, cond, where, msg):
        if not cond:
            self.error(where, msg)
        return cond


def rel(path, root):
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


def load_yaml_docs(path, report, where):
    try:
        return [d for d in yaml.safe_load_all(Path(path).read_text()) if d is not None]
    except (yaml.YAMLError, OSError) as e:
        report.error(where, f"not valid YAML: {e}")
        return []


# ---------------------------------------------------------------- schemas

@functools.lru_cache(maxsize=None)
def k8s_registry(version):
    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{version}-local-strict"
    defs = json.loads((base / "_definitions.json").read_text())
    return base, Resource.from_contents(defs) @ Registry()


@functools.lru_cache(maxsize=None)
def k8s_validator(version, api_version, kind):
    base, registry = k8s_registry(version)
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)  # apps/v1 -> apps-v1
    f = base / f"{kind.lower()}-{group}.json"
    if not f.exists():
        return None
    schema = json.loads(f.read_text())
    return jsonschema.Draft202012Validator(schema, registry=Resource.from_contents(schema) @ registry)


@functools.lru_cache(maxsize=None)
def kserve_validator(name):
    schema = json.loads((HERE / "kserve" / name).read_text())
    return jsonschema.Draft202012Validator(schema)


def schema_errors(validator, doc, where, report, prefix=""):
    for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        e = best_match([e])
        path = ".".join(str(p) for p in e.absolute_path)
        report.error(where, f"{prefix}{path or '(top)'}: {e.message}")


def validate_doc(doc, where, report):
    """Schema-validates one resource; `where` names its file (and render)."""
    if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
        report.error(where, "not a Kubernetes resource (apiVersion and kind required)")
        return
    api, kind = doc["apiVersion"], doc["kind"]
    name = (doc.get("metadata") or {}).get("name", "?")
    here = f"{where}: {kind.lower()}/{name}"
    if (api, kind) in KSERVE_SCHEMAS:
        schema_errors(kserve_validator(KSERVE_SCHEMAS[(api, kind)]), doc, here, report,
                      prefix="[KServe CRD schema] ")
        meta = k8s_validator(K8S_VERSIONS[-1], "meta/v1", "ObjectMeta")
        schema_errors(meta, doc.get("metadata") or {}, here, report, prefix="[ObjectMeta] metadata.")
        return
    for version in K8S_VERSIONS:
        v = k8s_validator(version, api, kind)
        if v is None:
            report.error(here, f"no schema for {api} {kind} in Kubernetes {version} "
                               "(unknown kind, or a CRD this check does not know)")
            continue
        schema_errors(v, doc, here, report, prefix=f"[Kubernetes {version[:-2]}] ")


# ---------------------------------------------------------------- kustomize

def kustomizations(deploy):
    return sorted(p for p in deploy.rglob("*") if p.name in ("kustomization.yaml", "kustomization.yml", "Kustomization"))


def referenced_files(kfile, report, root):
    """(resource files, patch files) that a kustomization names, as resolved paths."""
    docs = load_yaml_docs(kfile, report, rel(kfile, root))
    if not docs:
        return set(), set()
    k = docs[0]
    d = kfile.parent
    res, patches = set(), set()
    for r in k.get("resources", []) or []:
        p = (d / r).resolve()
        if p.is_file():
            res.add(p)
    for p in k.get("patches", []) or []:
        if isinstance(p, dict) and "path" in p:
            patches.add((d / p["path"]).resolve())
    for p in k.get("patchesStrategicMerge", []) or []:
        patches.add((d / p).resolve())
    return res, patches


def render(kdir, name, report):
    out = subprocess.run([str(BIN / "kubectl"), "kustomize", str(kdir)], capture_output=True, text=True)
    where = f"{name} (kubectl kustomize)"
    if out.returncode != 0:
        report.error(where, out.stderr.strip() or f"kubectl kustomize exited {out.returncode}")
        return None
    docs = [d for d in yaml.safe_load_all(out.stdout) if d is not None]
    report.check(docs, where, "renders to nothing")
    return docs


# ---------------------------------------------------------------- policy

def args_map(args):
    """`--flag=value` / `--flag value` → {flag: value}."""
    out, i = {}, 0
    args = [str(a) for a in args or []]
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            if "=" in a:
                k, v = a.split("=", 1)
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                k, v = a, args[i + 1]
                i += 1
            else:
                k, v = a, ""
            out[k] = v
        i += 1
    return out


def quantity_bytes(q):
    """A Kubernetes memory quantity ("2Gi", "512Mi", "1G", "1000000") in bytes, or None."""
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(q or "").strip())
    if not m:
        return None
    mult = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}[m.group(2)]
    return int(m.group(1)) * mult


def port_of(addr):
    m = re.search(r":(\d+)$", addr or "")
    return int(m.group(1)) if m else None


def probe_path(probe):
    return ((probe or {}).get("httpGet") or {}).get("path")


def mount_for(container, volumes, file_path):
    """The volumeMount (and its volume) under which `file_path` lives, longest match."""
    best = None
    for m in container.get("volumeMounts", []) or []:
        mp = m["mountPath"].rstrip("/")
        if file_path == mp or file_path.startswith(mp + "/"):
            if best is None or len(mp) > len(best["mountPath"]):
                best = m
    if best is None:
        return None, None
    return best, volumes.get(best["name"])


def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_serve_container(c, pod, where, report, kserve):
    """The promises every container running `vqad serve` keeps (Deployment or ServingRuntime)."""
    here = f"{where}: container {c.get('name')}"
    psc = pod.get("securityContext") or {}
    sc = c.get("securityContext") or {}
    report.check(sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, here, "runAsNonRoot must be true")
    uid = sc.get("runAsUser", psc.get("runAsUser"))
    report.check(isinstance(uid, int) and uid > 0, here, "runAsUser must be a non-zero uid")
    report.check(sc.get("readOnlyRootFilesystem") is True, here, "readOnlyRootFilesystem must be true")
    report.check(sc.get("allowPrivilegeEscalation") is False, here, "allowPrivilegeEscalation must be false")
    report.check(sc.get("privileged") in (None, False), here, "must not be privileged")
    report.check("ALL" in ((sc.get("capabilities") or {}).get("drop") or []), here, "capabilities.drop must contain ALL")
    report.check(not (sc.get("capabilities") or {}).get("add"), here, "must add no capabilities")
    seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    report.check(seccomp in ("RuntimeDefault", "Localhost"), here, "seccompProfile must be RuntimeDefault")
    res = c.get("resources") or {}
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            report.check(r in (res.get(part) or {}), here, f"resources.{part}.{r} must be set")

    report.check(probe_path(c.get("livenessProbe")) == LIVE, here, f"livenessProbe must GET {LIVE}")
    report.check(probe_path(c.get("readinessProbe")) == READY, here, f"readinessProbe must GET {READY}")
    if not kserve:  # Knative (KServe serverless) has no startup probes of its own
        report.check(probe_path(c.get("startupProbe")) in (LIVE, READY), here, "startupProbe must GET a health endpoint")

    a = args_map(c.get("args"))
    for flag in a:
        report.check(flag in SERVE_FLAGS, here, f"`vqad serve` has no flag {flag}")
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", []) or []}
    numbers = set(ports.values())
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        p = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
        if p is not None:
            report.check(p in ports or p in numbers, here, f"{probe} port {p} is no container port")
    http = port_of(a.get("--http"))
    report.check(http in numbers, here, f"--http {a.get('--http')} listens on no declared container port")
    if kserve:
        report.check(c.get("name") == "kserve-container", here, "KServe's main container must be named kserve-container")
        report.check(a.get("--registry") == "/mnt/models", here, "--registry must be /mnt/models (KServe's storageUri mount)")
        report.check(http == 8080, here, "--http must listen on 8080 (KServe's port convention)")
    else:
        report.check(ports.get("http") == 8000, here, "container port `http` must be 8000")
        report.check(ports.get("grpc") == 8001, here, "container port `grpc` must be 8001")
        report.check(http == 8000, here, "--http must listen on 8000")
        report.check(port_of(a.get("--grpc")) == 8001, here, "--grpc must listen on 8001")

    volumes = {v["name"]: v for v in pod.get("volumes", []) or []}
    for flag in ("--registry", "--pubkey"):
        if not report.check(a.get(flag), here, f"{flag} must be given"):
            continue
        if kserve and flag == "--registry":
            continue  # KServe mounts /mnt/models itself, read-only
        m, vol = mount_for(c, volumes, a[flag])
        if not report.check(m is not None and vol is not None, here, f"{flag} {a[flag]} is on no mounted volume"):
            continue
        report.check(m.get("readOnly") is True, here, f"volumeMount {m['name']} ({flag}) must be readOnly")
        if flag == "--pubkey":
            report.check("secret" in vol or "configMap" in vol, here,
                         f"volume {vol['name']} (--pubkey) must come from a Secret or ConfigMap")
        if "persistentVolumeClaim" in vol:
            report.check(vol["persistentVolumeClaim"].get("readOnly") is True, here,
                         f"volume {vol['name']} ({flag}) must claim its PVC readOnly")
    # The in-flight memory budget (issue 25) must be explicit and leave the loaded models room
    # in the pod's memory limit, and must hold one request of --max-body-mb (3 x its size).
    limit = quantity_bytes((res.get("limits") or {}).get("memory"))
    budget = a.get("--max-inflight-mb")
    if report.check(budget is not None, here, "--max-inflight-mb must be given (the in-flight memory budget, at most half the memory limit)"):
        if report.check(str(budget).isdigit(), here, f"--max-inflight-mb {budget} is not a number of MiB"):
            b = int(budget) << 20
            if limit is not None:
                report.check(b <= limit // 2, here,
                             f"--max-inflight-mb {budget} is more than half the memory limit {(res.get('limits') or {}).get('memory')}: the loaded models need the rest")
            body = int(a.get("--max-body-mb", 64)) << 20
            report.check(b >= 3 * body + (256 << 10), here,
                         f"--max-inflight-mb {budget} cannot hold one request of --max-body-mb {body >> 20} (3 x its size)")
    providers = (a.get("--providers") or "cpu").split(",")
    gpu = ((res.get("limits") or {}).get("nvidia.com/gpu"))
    accel = any(p in ("cuda", "tensorrt") for p in providers)
    report.check(bool(gpu) == accel, here,
                 f"--providers {','.join(providers)} and nvidia.com/gpu limit {gpu} disagree")
    return a


def check_render(name, docs, report, deploy_is_gpu):
    where = f"{name} (rendered)"
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    deployments = by_kind.get("Deployment", [])
    pods = {}
    for dep in deployments:
        dn = dep["metadata"]["name"]
        here = f"{where}: deployment/{dn}"
        tmpl = dep["spec"]["template"]
        pod = tmpl.get("spec") or {}
        labels = (tmpl.get("metadata") or {}).get("labels") or {}
        pods[dn] = labels
        report.check(labels_match(dep["spec"]["selector"].get("matchLabels"), labels), here,
                     "selector.matchLabels must match the pod template's labels")
        ann = (tmpl.get("metadata") or {}).get("annotations") or {}
        report.check(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == "8000"
                     and ann.get("prometheus.io/path") == "/metrics", here,
                     "pod template needs prometheus.io/scrape=\"true\", port \"8000\", path /metrics")
        report.check(pod.get("automountServiceAccountToken") is False, here, "automountServiceAccountToken must be false")
        for c in pod.get("containers", []):
            a = check_serve_container(c, pod, here, report, kserve=False)
            if deploy_is_gpu:
                lim = (c.get("resources") or {}).get("limits") or {}
                report.check(str(lim.get("nvidia.com/gpu")) == "1", here, "GPU overlay must limit nvidia.com/gpu to 1")
                report.check(a.get("--providers") == "tensorrt,cuda,cpu", here, "GPU overlay must run --providers tensorrt,cuda,cpu")
                report.check(str(c.get("image", "")).endswith("-gpu"), here, "GPU overlay must use the -gpu image")
    for svc in by_kind.get("Service", []):
        here = f"{where}: service/{svc['metadata']['name']}"
        sel = svc["spec"].get("selector") or {}
        target = [dn for dn, labels in pods.items() if labels_match(sel, labels)]
        if not report.check(target, here, "selector matches no Deployment's pods"):
            continue
        dep = next(d for d in deployments if d["metadata"]["name"] == target[0])
        cports = {p["name"]: p["containerPort"] for c in dep["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        ports = {p.get("name"): p for p in svc["spec"].get("ports", [])}
        for pname, number in (("http", 8000), ("grpc", 8001)):
            p = ports.get(pname)
            if report.check(p is not None and p.get("port") == number, here, f"port {pname} must be {number}"):
                t = p.get("targetPort", p.get("port"))
                report.check(t in cports or t in cports.values(), here, f"port {pname} targets {t}, no container port")
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        here = f"{where}: horizontalpodautoscaler/{hpa['metadata']['name']}"
        ref = hpa["spec"]["scaleTargetRef"]
        report.check(ref.get("kind") == "Deployment" and ref.get("name") in pods, here,
                     f"scaleTargetRef {ref.get('kind')}/{ref.get('name')} is no Deployment here")
        report.check(hpa["spec"].get("minReplicas", 1) <= hpa["spec"]["maxReplicas"], here, "minReplicas > maxReplicas")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        here = f"{where}: poddisruptionbudget/{pdb['metadata']['name']}"
        sel = (pdb["spec"].get("selector") or {}).get("matchLabels") or {}
        report.check(any(labels_match(sel, l) for l in pods.values()), here, "selector matches no Deployment's pods")
    runtimes = {r["metadata"]["name"]: r for r in by_kind.get("ServingRuntime", [])}
    for rt in runtimes.values():
        here = f"{where}: servingruntime/{rt['metadata']['name']}"
        spec = rt["spec"]
        report.check("vqad" in [f.get("name") for f in spec.get("supportedModelFormats", [])], here,
                     "supportedModelFormats must name vqad")
        report.check("v2" in (spec.get("protocolVersions") or []), here, "protocolVersions must include v2")
        mains = [c for c in spec.get("containers", []) if c.get("name") == "kserve-container"]
        if report.check(len(mains) == 1, here, "needs exactly one container named kserve-container"):
            check_serve_container(mains[0], spec, here, report, kserve=True)
    for isvc in by_kind.get("InferenceService", []):
        here = f"{where}: inferenceservice/{isvc['metadata']['name']}"
        model = ((isvc.get("spec") or {}).get("predictor") or {}).get("model") or {}
        rt = runtimes.get(model.get("runtime"))
        if not report.check(rt is not None, here, f"runtime {model.get('runtime')!r} is no ServingRuntime here"):
            continue
        fmt = (model.get("modelFormat") or {}).get("name")
        report.check(fmt in [f.get("name") for f in rt["spec"].get("supportedModelFormats", [])], here,
                     f"modelFormat {fmt!r} is not supported by runtime {rt['metadata']['name']}")
        report.check(model.get("protocolVersion") == "v2", here, "protocolVersion must be v2")
        report.check(model.get("protocolVersion") in (rt["spec"].get("protocolVersions") or []), here,
                     f"protocolVersion {model.get('protocolVersion')!r} is not one the runtime speaks")
        report.check(bool(model.get("storageUri")), here, "storageUri must name the registry")


# ---------------------------------------------------------------- Jobs

BUILDER_ENV = {
    "VQAD_K8S_NAMESPACE": "metadata.namespace",
    "VQAD_K8S_JOB": "metadata.labels['batch.kubernetes.io/job-name']",
    "VQAD_K8S_POD_UID": "metadata.uid",
}
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def list_lines(text):
    return [l.strip() for l in (text or "").splitlines() if l.strip() and not l.strip().startswith("#")]


def env_of(c):
    return {e["name"]: e for e in c.get("env", []) or []}


def script_of(c, pod, configmaps, here, report):
    """The script a Job container runs (`bash <file>` from a mounted ConfigMap), and its ConfigMap."""
    cmd = [str(x) for x in (c.get("command") or []) + (c.get("args") or [])]
    path = next((x for x in cmd if x.endswith(".sh")), None)
    if not report.check(path, here, "must run its script (bash <file>.sh) from the Job's ConfigMap"):
        return "", {}
    volumes = {v["name"]: v for v in pod.get("volumes", []) or []}
    m, vol = mount_for(c, volumes, path)
    if not report.check(m is not None and vol is not None and "configMap" in vol, here, f"{path} is on no mounted ConfigMap"):
        return "", {}
    report.check(m.get("readOnly") is True, here, f"volumeMount {m['name']} (the script) must be readOnly")
    cm = configmaps.get(vol["configMap"]["name"])
    if not report.check(cm is not None, here, f"ConfigMap {vol['configMap']['name']} is not in this kustomization"):
        return "", {}
    data = cm.get("data") or {}
    # Only the code counts: a flag named in a comment runs nothing.
    code = "\n".join(l for l in data.get(Path(path).name, "").splitlines() if not l.strip().startswith("#"))
    return code, data


def check_job_common(job, c, pod, here, report):
    psc = pod.get("securityContext") or {}
    sc = c.get("securityContext") or {}
    report.check(sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, here, "runAsNonRoot must be true")
    report.check(sc.get("readOnlyRootFilesystem") is True, here, "readOnlyRootFilesystem must be true")
    report.check(sc.get("allowPrivilegeEscalation") is False, here, "allowPrivilegeEscalation must be false")
    report.check("ALL" in ((sc.get("capabilities") or {}).get("drop") or []), here, "capabilities.drop must contain ALL")
    report.check(pod.get("automountServiceAccountToken") is False, here, "automountServiceAccountToken must be false")
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            report.check(r in ((c.get("resources") or {}).get(part) or {}), here, f"resources.{part}.{r} must be set")
    image = str(c.get("image", ""))
    report.check(DIGEST.search(image), here, f"image {image} must be pinned by digest (@sha256:…): the provenance's builder id names it")
    env = env_of(c)
    for k, field in BUILDER_ENV.items():
        got = (((env.get(k) or {}).get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        report.check(got == field, here, f"{k} must come from the downward API fieldRef {field} (got {got})")
    report.check((env.get("VQAD_IMAGE") or {}).get("value") == image, here,
                 f"VQAD_IMAGE must equal the container image {image} (kustomize replacements)")
    return env


def check_jobs(name, docs, report, root):
    where = f"{name} (rendered)"
    configmaps = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ConfigMap"}
    for job in (d for d in docs if d.get("kind") == "Job"):
        jn = job["metadata"]["name"]
        spec = job["spec"]
        pod = spec["template"]["spec"]
        here = f"{where}: job/{jn}"
        if not report.check(len(pod.get("containers", [])) == 1, here, "needs exactly one container"):
            continue
        c = pod["containers"][0]
        env = check_job_common(job, c, pod, here, report)
        val = lambda k: (env.get(k) or {}).get("value")
        script, data = script_of(c, pod, configmaps, here, report)
        volumes = {v["name"]: v for v in pod.get("volumes", []) or []}
        if spec.get("completionMode") == "Indexed":
            # The training Job: one category per index.
            cats = list_lines(data.get(Path(val("CATEGORIES_FILE") or "categories.txt").name))
            report.check(cats, here, "its ConfigMap lists no categories (CATEGORIES_FILE)")
            report.check(spec.get("completions") == len(cats), here,
                         f"completions {spec.get('completions')} but categories.txt lists {len(cats)} categories")
            report.check(isinstance(spec.get("backoffLimitPerIndex"), int) and spec["backoffLimitPerIndex"] >= 1, here,
                         "backoffLimitPerIndex must be set (≥ 1): a failing category is retried alone and never stops the others")
            mfi = spec.get("maxFailedIndexes")
            report.check(mfi is None or mfi >= spec.get("completions", 0), here,
                         f"maxFailedIndexes {mfi} would stop the other categories when some fail")
            report.check(pod.get("restartPolicy") == "Never", here, "restartPolicy must be Never (backoffLimitPerIndex requires it)")
            lim = (c.get("resources") or {}).get("limits") or {}
            report.check(str(lim.get("nvidia.com/gpu")) == "1", here, "each training pod needs nvidia.com/gpu: 1")
            m, vol = mount_for(c, volumes, val("RUNS_DIR") or "/nonexistent")
            report.check(m is not None and vol is not None and "persistentVolumeClaim" in vol and not m.get("readOnly"), here,
                         "RUNS_DIR must be a read-write PVC mount (run folders outlive pods)")
            m, vol = mount_for(c, volumes, val("DATA_DIR") or "/nonexistent")
            report.check(m is not None and m.get("readOnly") is True, here, "DATA_DIR must be mounted readOnly")
            report.check("JOB_COMPLETION_INDEX" in script, here, "the script must pick its category by JOB_COMPLETION_INDEX")
            report.check("--resume" in script, here, "the script must resume (--resume) a run a restarted pod finds")
        else:
            # The release Job.
            key = val("SIGNING_KEY") or ""
            m, vol = mount_for(c, volumes, key)
            if report.check(m is not None and vol is not None, here, f"SIGNING_KEY {key} is on no mounted volume"):
                report.check("secret" in vol, here, f"volume {vol['name']} (SIGNING_KEY) must be a Secret, never part of an image or ConfigMap")
                report.check(m.get("readOnly") is True, here, f"volumeMount {m['name']} (SIGNING_KEY) must be mounted readOnly")
            m, vol = mount_for(c, volumes, val("PUBKEY") or "")
            report.check(m is not None and m.get("readOnly") is True, here, "PUBKEY must be mounted readOnly")
            m, vol = mount_for(c, volumes, val("REGISTRY_DIR") or "/nonexistent")
            report.check(m is not None and vol is not None and (vol.get("persistentVolumeClaim") or {}).get("claimName") == "vqad-registry"
                         and not m.get("readOnly"), here, "REGISTRY_DIR must mount the vqad-registry PVC read-write")
            report.check(val("CHANNEL") == "staging", here, f"the release must promote to staging (CHANNEL is {val('CHANNEL')})")
            for step in ("vqad package", "vqad publish", "vqad promote", '--channel "$channel"'):
                report.check(step in script, here, f"the release script must run `{step}`")
            trained = set(list_lines((root / "deploy/train/categories.txt").read_text() if (root / "deploy/train/categories.txt").is_file() else ""))
            for cat in list_lines(data.get(Path(val("CATEGORIES_FILE") or "categories.txt").name)):
                report.check(cat in trained, here, f"category {cat} is released but not trained by deploy/train")


# ---------------------------------------------------------------- Dockerfile

def dockerfile_stages(text):
    """[(stage name, [(instruction, rest)])] of a Dockerfile, continuation lines joined."""
    lines = re.sub(r"\\\n", " ", text).splitlines()
    stages = []
    for line in lines:
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        ins, _, rest = s.partition(" ")
        ins = ins.upper()
        if ins == "FROM":
            m = re.search(r"\bAS\s+(\S+)", rest, re.I)
            stages.append((m.group(1) if m else str(len(stages)), []))
        elif stages:
            stages[-1][1].append((ins, rest.strip()))
    return stages


def check_dockerfile(root, report, uids):
    df = root / "deploy/docker/Dockerfile"
    where = rel(df, root)
    if not report.check(df.is_file(), where, "missing"):
        return
    text = df.read_text()
    out = subprocess.run([str(BIN / "hadolint"), "--no-color", str(df)], capture_output=True, text=True)
    report.check(out.returncode == 0, where, "hadolint:\n" + (out.stdout + out.stderr).strip())
    native = (root / "tools/setup-native.sh").read_text()
    m = re.search(r"^ORT_VERSION=(\S+)", native, re.M)
    if not report.check(m, "tools/setup-native.sh", "sets no ORT_VERSION"):
        return
    want = m.group(1)
    got = re.search(r"^ARG ORT_VERSION=(\S+)", text, re.M)
    report.check(got and got.group(1) == want, where,
                 f"ARG ORT_VERSION={got and got.group(1)} but tools/setup-native.sh pins {want}")
    for req, pkg in (("onnxruntime-cpu.txt", "onnxruntime"), ("onnxruntime-gpu.txt", "onnxruntime-gpu")):
        f = root / "deploy/docker" / req
        body = f.read_text() if f.is_file() else ""
        report.check(re.search(rf"^{re.escape(pkg)}=={re.escape(want)} .*--hash=sha256:[0-9a-f]{{64}}", body, re.M),
                     rel(f, root), f"must pin {pkg}=={want} with its sha256")
    report.check(re.search(r"cargo build[^\n]*--no-default-features", text), where,
                 "the builder must build the runtime only (--no-default-features, no libtorch)")
    stages = dict(dockerfile_stages(text))
    for final in ("gpu", "cpu"):
        if not report.check(final in stages, where, f"needs a final stage `{final}`"):
            continue
        body = stages[final]
        get = lambda ins: [r for i, r in body if i == ins]
        report.check(get("ENTRYPOINT")[-1:] == ['["vqad", "serve"]'], where,
                     f"stage {final}: ENTRYPOINT must be [\"vqad\", \"serve\"]")
        report.check(sorted(" ".join(get("EXPOSE")).split()) == ["8000", "8001"], where,
                     f"stage {final}: must EXPOSE 8000 8001")
        user = (get("USER") or [""])[-1]
        uid = user.split(":")[0]
        report.check(uid.isdigit() and int(uid) != 0, where, f"stage {final}: USER must be a numeric non-root uid")
        for u in uids:
            report.check(uid == str(u), where, f"stage {final}: USER {uid} but the manifests run as {u}")
        report.check(any(r.startswith("VQAD_ORT_LIB=") for r in get("ENV")), where,
                     f"stage {final}: must set VQAD_ORT_LIB")
    report.check(list(stages)[-1] == "cpu", where, "the last stage (the default target) must be `cpu`")
    if report.check("train" in stages, where, "needs a stage `train` (the image of deploy/train and deploy/release)"):
        body = stages["train"]
        get = lambda ins: [r for i, r in body if i == ins]
        user = (get("USER") or [""])[-1].split(":")[0]
        report.check(user.isdigit() and int(user) != 0, where, "stage train: USER must be a numeric non-root uid")
        report.check(any(r.startswith("VQAD_ORT_LIB=") for r in get("ENV")), where, "stage train: must set VQAD_ORT_LIB")
        report.check(re.search(r"cargo build[^\n]*--bin vqad-train", text), where, "the train image must build vqad-train")
    report.check((root / ".dockerignore").is_file(), ".dockerignore", "missing")


# ---------------------------------------------------------------- main

def serve_help(vqad, flags, report):
    out = subprocess.run([vqad, "serve", "--help"], capture_output=True, text=True)
    text = out.stdout + out.stderr
    if out.returncode != 0:
        if "unrecognized subcommand" in text:
            print(f"SKIP {vqad} has no `serve` subcommand yet: flags checked against issue 12's list only")
            return
        report.error(vqad, f"`vqad serve --help` failed: {text.strip()}")
        return
    for f in sorted(flags):
        report.check(re.search(rf"(^|[\s,]){re.escape(f)}\b", text, re.M), f"{vqad} serve --help",
                     f"no flag {f}, which the manifests pass")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--vqad", help="a built vqad: check the manifests' flags against `vqad serve --help`")
    opts = ap.parse_args()
    root = opts.root.resolve()
    deploy = root / "deploy"
    report = Report()

    kfiles = kustomizations(deploy)
    referenced, patches = set(), set()
    for k in kfiles:
        r, p = referenced_files(k, report, root)
        referenced |= r
        patches |= p
    yamls = sorted(p.resolve() for p in deploy.rglob("*.y*ml") if p.name not in ("kustomization.yaml", "kustomization.yml"))
    n_res = 0
    for f in yamls:
        where = rel(f, root)
        if f in patches:
            continue  # a partial resource: validated once rendered
        if not report.check(f in referenced, where, "is neither a resource nor a patch of any kustomization.yaml, so nothing would apply or check it"):
            continue
        for doc in load_yaml_docs(f, report, where):
            validate_doc(doc, where, report)
            n_res += 1
    for p in sorted(patches):
        report.check(p.is_file(), rel(p, root), "patch file named by a kustomization.yaml does not exist")

    flags, uids, n_rendered = set(), set(), 0
    for k in kfiles:
        kdir = k.parent
        name = rel(kdir, root) + "/"
        own_patches = referenced_files(k, Report(), root)[1]
        if own_patches:  # a problem only in the render may come from these
            name += f" [patched by {', '.join(sorted(rel(p, root) for p in own_patches))}]"
        docs = render(kdir, name, report)
        if not docs:
            continue
        n_rendered += len(docs)
        for doc in docs:
            validate_doc(doc, f"{name} (rendered)", report)
        try:
            check_render(name, docs, report, deploy_is_gpu="gpu" in kdir.relative_to(deploy).parts)
            check_jobs(name, docs, report, root)
        except (KeyError, TypeError, AttributeError, IndexError, StopIteration) as e:
            # the schemas have said what is wrong; the promises cannot be checked on it
            report.error(f"{name} (rendered)", f"too malformed to check the deployment's promises ({e!r})")
        for d in docs:
            spec = d.get("spec") or {}
            pod = ((spec.get("template") or {}).get("spec")) or (spec if d.get("kind") == "ServingRuntime" else {})
            for c in pod.get("containers", []) or []:
                flags |= set(args_map(c.get("args")))
                uid = (c.get("securityContext") or {}).get("runAsUser", (pod.get("securityContext") or {}).get("runAsUser"))
                if uid is not None:
                    uids.add(uid)
    for needed in ("deploy/kustomization.yaml", "deploy/overlays/gpu/kustomization.yaml", "deploy/kserve/kustomization.yaml",
                   "deploy/train/kustomization.yaml", "deploy/release/kustomization.yaml"):
        report.check((root / needed).is_file(), needed, "missing")

    check_dockerfile(root, report, uids)
    if opts.vqad:
        serve_help(opts.vqad, flags, report)

    print(f"deploy-check: {len(yamls)} YAML files ({n_res} resources validated as written), "
          f"{len(kfiles)} kustomizations rendered ({n_rendered} resources), "
          f"Kubernetes {', '.join(v[:-2] for v in K8S_VERSIONS)}: {len(report.errors)} problems")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
