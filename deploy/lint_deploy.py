#!/usr/bin/env python3
"""Checks the deployment files that no engine runs here (deploy/lint.sh calls
this after systemd-analyze has checked the units).

- compose.yaml and k8s/*.yaml parse (PyYAML) and hold what they promise:
  both services, the seccomp profile, nofile/memlock limits, the data volume;
  a Namespace, a StatefulSet with a volume claim, a Deployment in Guaranteed
  QoS (whole CPUs, requests == limits), Services that select pods that
  exist, probes on /ready and /health.
- seccomp-io-uring.json parses and allows io_uring_setup/enter/register.
- The Dockerfile has the builder and runtime stages, a numeric non-root
  user, both binaries, EXPOSE 8080 8081.
- The units' SystemCallFilter= allows every syscall each process was seen
  to make (strace -f, both data plane drivers), io_uring included.
- Every VEZA_* variable set anywhere is a key the binaries know, when fresh
  binaries are given.

Prints one line per check (ok / FAIL / skip) and exits 1 if any failed.
"""

import argparse
import json
import os
import re
import subprocess
import sys

import yaml

IO_URING_SYSCALLS = {"io_uring_setup", "io_uring_enter", "io_uring_register"}

# Observed with `strace -f` on veza-dataplane serving HTTP and WebSocket
# echo on both drivers (io_uring and MONOIO_FORCE_LEGACY_DRIVER=1), from
# start to SIGTERM drain. With io_uring most I/O bypasses syscalls entirely.
DATAPLANE_SYSCALLS = set("""
accept4 access arch_prctl bind brk clock_nanosleep clone3 close epoll_create1
epoll_ctl epoll_wait execve exit exit_group fcntl futex getrandom getsockname
gettid io_uring_enter io_uring_register io_uring_setup ioctl listen madvise
mmap mprotect munmap newfstatat open openat poll prctl pread64 prlimit64 read
recvfrom restart_syscall rseq rt_sigaction rt_sigprocmask rt_sigreturn
sched_getaffinity sched_setaffinity sendto set_robust_list set_tid_address
setsockopt shutdown sigaltstack socket socketpair sysinfo write writev
connect
""".split())

# Observed with `strace -f` on veza-controlplane (SQLite, REST, control
# socket) from start to SIGTERM.
CONTROLPLANE_SYSCALLS = set("""
accept4 access arch_prctl bind brk chmod clone3 close epoll_create1 epoll_ctl
epoll_wait eventfd2 execve exit exit_group fcntl fsync ftruncate futex geteuid
getpid getrandom gettid ioctl listen lseek madvise mkdir mmap mprotect munmap
newfstatat open openat poll prctl pread64 prlimit64 pwrite64 read recvfrom
rename rseq rt_sigaction rt_sigprocmask rt_sigreturn sched_getaffinity
sched_yield sendto set_robust_list set_tid_address setsockopt shutdown
sigaltstack socket socketpair statx sysinfo unlink write writev connect
""".split())


class Report:
    """Collects check outcomes and prints them as they come."""

    def __init__(self):
        self.failures = 0
        self.passes = 0

    def check(self, name, condition, reason=""):
        if condition:
            self.passes += 1
            print(f"ok   {name}")
        else:
            self.failures += 1
            print(f"FAIL {name}: {reason}")
        return condition

    def skip(self, name, reason):
        print(f"skip {name}: {reason}")


def load_yaml_documents(path):
    with open(path, encoding="utf-8") as file:
        return [document for document in yaml.safe_load_all(file) if document is not None]


def check_compose(report, deploy_dir):
    path = os.path.join(deploy_dir, "compose.yaml")
    try:
        (compose,) = load_yaml_documents(path)
    except (yaml.YAMLError, ValueError) as error:
        report.check("compose.yaml parses", False, str(error))
        return {}
    report.check("compose.yaml parses", True)
    services = compose.get("services", {})
    report.check("compose: services controlplane and dataplane",
                 {"controlplane", "dataplane"} <= set(services), f"has {sorted(services)}")
    dataplane = services.get("dataplane", {})
    controlplane = services.get("controlplane", {})
    seccomp = [option for option in dataplane.get("security_opt", []) if option.startswith("seccomp")]
    profile = seccomp[0].split("=", 1)[-1] if seccomp else ""
    report.check("compose: data plane runs with the io_uring seccomp profile",
                 profile and os.path.isfile(os.path.join(deploy_dir, profile)),
                 f"security_opt seccomp={profile!r} must name a file next to compose.yaml")
    ulimits = dataplane.get("ulimits", {})
    report.check("compose: data plane ulimits nofile and memlock",
                 "nofile" in ulimits and "memlock" in ulimits, f"ulimits {ulimits}")
    volumes = controlplane.get("volumes", [])
    report.check("compose: control plane data directory on a named volume",
                 any(str(volume).split(":")[0] in compose.get("volumes", {}) for volume in volumes),
                 f"volumes {volumes}")
    report.check("compose: data plane publishes 8080, control plane 8081",
                 any("8080" in str(port) for port in dataplane.get("ports", []))
                 and any("8081" in str(port) for port in controlplane.get("ports", [])), "ports")
    return {
        "dataplane": dict(dataplane.get("environment", {})),
        "controlplane": dict(controlplane.get("environment", {})),
    }


def containers_of(resource):
    spec = resource.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", []) + spec.get("initContainers", [])


def check_guaranteed_qos(report, deployment):
    """Guaranteed QoS: every container has CPU and memory limits, requests
    equal to them, and (for exclusive cores under the static CPU manager
    policy) a whole number of CPUs."""
    name = deployment["metadata"]["name"]
    for container in containers_of(deployment):
        resources = container.get("resources", {})
        requests, limits = resources.get("requests", {}), resources.get("limits", {})
        cpu = str(limits.get("cpu", ""))
        report.check(f"k8s {name}/{container['name']}: Guaranteed QoS (requests == limits for cpu and memory)",
                     "cpu" in limits and "memory" in limits
                     and str(requests.get("cpu", limits["cpu"])) == str(limits["cpu"])
                     and str(requests.get("memory", limits["memory"])) == str(limits["memory"]),
                     f"requests {requests}, limits {limits}")
        report.check(f"k8s {name}/{container['name']}: whole CPUs (exclusive cores with the static CPU manager)",
                     re.fullmatch(r"[1-9][0-9]*", cpu) is not None, f"limits.cpu {cpu!r}")


def check_probes(report, workload, port_number):
    name = workload["metadata"]["name"]
    for container in containers_of(workload):
        ports = {port.get("name"): port["containerPort"] for port in container.get("ports", [])}

        def probe_ok(probe, path):
            get = container.get(probe, {}).get("httpGet", {})
            port = ports.get(get.get("port"), get.get("port"))
            return get.get("path") == path and port == port_number

        report.check(f"k8s {name}: readinessProbe GET /ready on {port_number}",
                     probe_ok("readinessProbe", "/ready"), str(container.get("readinessProbe")))
        report.check(f"k8s {name}: livenessProbe GET /health on {port_number}",
                     probe_ok("livenessProbe", "/health"), str(container.get("livenessProbe")))


def check_kubernetes(report, deploy_dir):
    k8s_dir = os.path.join(deploy_dir, "k8s")
    resources = []
    for file_name in sorted(os.listdir(k8s_dir)):
        if not file_name.endswith((".yaml", ".yml")):
            continue
        try:
            documents = load_yaml_documents(os.path.join(k8s_dir, file_name))
        except yaml.YAMLError as error:
            report.check(f"k8s/{file_name} parses", False, str(error))
            continue
        report.check(f"k8s/{file_name} parses", True)
        for document in documents:
            if document.get("kind") == "Kustomization":
                listed = set(document.get("resources", []))
                present = {name for name in os.listdir(k8s_dir)
                           if name.endswith(".yaml") and name != "kustomization.yaml"}
                report.check("k8s kustomization lists every manifest", listed == present,
                             f"lists {sorted(listed)}, directory has {sorted(present)}")
                continue
            report.check(f"k8s/{file_name} {document.get('kind')}: apiVersion, kind, metadata.name",
                         all(document.get(key) for key in ("apiVersion", "kind"))
                         and document.get("metadata", {}).get("name"), str(document)[:200])
            resources.append(document)
    by_kind = {}
    for resource in resources:
        by_kind.setdefault(resource["kind"], []).append(resource)
    report.check("k8s: a Namespace", "Namespace" in by_kind, f"kinds {sorted(by_kind)}")
    report.check("k8s: a ConfigMap", "ConfigMap" in by_kind, f"kinds {sorted(by_kind)}")
    statefulsets = by_kind.get("StatefulSet", [])
    deployments = by_kind.get("Deployment", [])
    report.check("k8s: a StatefulSet with a volume claim (control plane)",
                 any(statefulset["spec"].get("volumeClaimTemplates") for statefulset in statefulsets), "")
    report.check("k8s: a Deployment (data plane)", bool(deployments), "")
    for deployment in deployments:
        check_guaranteed_qos(report, deployment)
        check_probes(report, deployment, 8080)
    for statefulset in statefulsets:
        check_probes(report, statefulset, 8081)
    check_services_select_pods(report, by_kind.get("Service", []), statefulsets + deployments)
    return {
        configmap["metadata"]["name"]: dict(configmap.get("data", {}))
        for configmap in by_kind.get("ConfigMap", [])
    } | {
        f"env:{workload['metadata']['name']}": {
            variable["name"]: variable.get("value", "2")
            for container in containers_of(workload)
            for variable in container.get("env", [])
        }
        for workload in deployments + statefulsets
    }


def check_services_select_pods(report, services, workloads):
    labels = [workload["spec"]["template"]["metadata"].get("labels", {}) for workload in workloads]
    for service in services:
        selector = service["spec"].get("selector", {})
        report.check(f"k8s Service {service['metadata']['name']} selects pods of a workload",
                     any(selector.items() <= pod_labels.items() for pod_labels in labels),
                     f"selector {selector}")


def check_seccomp(report, deploy_dir):
    path = os.path.join(deploy_dir, "seccomp-io-uring.json")
    try:
        with open(path, encoding="utf-8") as file:
            profile = json.load(file)
    except (OSError, json.JSONDecodeError) as error:
        report.check("seccomp-io-uring.json parses", False, str(error))
        return
    report.check("seccomp-io-uring.json parses", True)
    allowed = {
        name
        for rule in profile.get("syscalls", [])
        if rule.get("action") == "SCMP_ACT_ALLOW" and not rule.get("includes") and not rule.get("args")
        for name in rule.get("names", [])
    }
    report.check("seccomp: io_uring_setup, io_uring_enter, io_uring_register allowed unconditionally",
                 IO_URING_SYSCALLS <= allowed, f"missing {sorted(IO_URING_SYSCALLS - allowed)}")
    report.check("seccomp: denies by default (Docker's default profile shape)",
                 profile.get("defaultAction") == "SCMP_ACT_ERRNO" and len(allowed) > 300,
                 f"defaultAction {profile.get('defaultAction')}, {len(allowed)} allowed")
    # Docker's profile allows some calls under conditions (socket families,
    # architectures) and answers clone3 with ENOSYS on purpose, so that the C
    # library falls back to clone, which it allows.
    allowed_somehow = {
        name
        for rule in profile.get("syscalls", [])
        if rule.get("action") == "SCMP_ACT_ALLOW"
        for name in rule.get("names", [])
    } | {"clone3"}
    report.check("seccomp: allows what the data plane was seen to call",
                 DATAPLANE_SYSCALLS <= allowed_somehow,
                 f"missing {sorted(DATAPLANE_SYSCALLS - allowed_somehow)}")


def check_dockerfile(report, deploy_dir, repo_root):
    with open(os.path.join(deploy_dir, "Dockerfile"), encoding="utf-8") as file:
        lines = [line.strip() for line in file if line.strip() and not line.lstrip().startswith("#")]
    stages = [re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.IGNORECASE) for line in lines
              if line.upper().startswith("FROM ")]
    stage_names = [match.group(2) for match in stages if match]
    report.check("Dockerfile: stages builder then runtime", stage_names == ["builder", "runtime"],
                 f"stages {stage_names}")
    images = [match.group(1) for match in stages if match]
    report.check("Dockerfile: rust slim builder, debian slim runtime",
                 len(images) == 2 and images[0].startswith("rust:") and "slim" in images[0]
                 and images[1].startswith("debian:") and images[1].endswith("-slim"), f"images {images}")
    users = [line.split()[1] for line in lines if line.upper().startswith("USER ")]
    report.check("Dockerfile: runs as a numeric non-root user",
                 bool(users) and re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", users[-1]) is not None, f"USER {users}")
    exposed = {port for line in lines if line.upper().startswith("EXPOSE ") for port in line.split()[1:]}
    report.check("Dockerfile: EXPOSE 8080 8081", {"8080", "8081"} <= exposed, f"EXPOSE {sorted(exposed)}")
    copies = " ".join(line for line in lines if line.upper().startswith("COPY --FROM=BUILDER"))
    report.check("Dockerfile: both binaries copied from the builder",
                 "veza-dataplane" in copies and "veza-controlplane" in copies, copies)
    sources = [word for line in lines if line.upper().startswith("COPY ") and "--from" not in line
               for word in line.split()[1:-1] if word.startswith("deploy/")]
    report.check("Dockerfile: copied repository files exist",
                 all(os.path.exists(os.path.join(repo_root, source)) for source in sources), f"{sources}")


def filter_allows(unit_path, groups):
    """The syscalls a unit's SystemCallFilter= lines allow (an allow list
    first, then deny lists, as systemd applies them)."""
    allowed = None
    with open(unit_path, encoding="utf-8") as file:
        for line in file:
            if not line.startswith("SystemCallFilter="):
                continue
            value = line.split("=", 1)[1].strip()
            deny = value.startswith("~")
            names = set()
            for word in value.lstrip("~").split():
                names |= expand_group(word, groups) if word.startswith("@") else {word}
            if deny:
                allowed = (allowed if allowed is not None else set(groups.get("@known", []))) - names
            else:
                allowed = (allowed or set()) | names
    return allowed


def expand_group(name, groups):
    names = set()
    for member in groups.get(name, []):
        names |= expand_group(member, groups) if member.startswith("@") else {member}
    return names


def parse_syscall_groups(path):
    """Parses `systemd-analyze syscall-filter` output into {group: members}."""
    groups, current = {}, None
    with open(path, encoding="utf-8") as file:
        for line in file:
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            if not line.startswith(" ") and text.startswith("@"):
                current = text
                groups[current] = []
            elif current:
                groups[current].append(text)
    return groups


def check_unit_syscalls(report, deploy_dir, groups_path):
    if not groups_path:
        report.skip("units: SystemCallFilter allows the syscalls used", "no systemd-analyze here")
        return
    groups = parse_syscall_groups(groups_path)
    for unit, needed in (("veza-dataplane.service", DATAPLANE_SYSCALLS | IO_URING_SYSCALLS),
                         ("veza-controlplane.service", CONTROLPLANE_SYSCALLS)):
        allowed = filter_allows(os.path.join(deploy_dir, "systemd", unit), groups)
        missing = sorted(needed - (allowed or set())) if allowed is not None else ["(no filter)"]
        report.check(f"{unit}: SystemCallFilter= allows every syscall it was seen to use",
                     not missing, f"blocked: {missing}")


def unit_environment(deploy_dir, unit):
    environment = {}
    with open(os.path.join(deploy_dir, "systemd", unit), encoding="utf-8") as file:
        for line in file:
            if line.startswith("Environment="):
                key, _, value = line.split("=", 1)[1].strip().partition("=")
                environment[key] = value
    return environment


def check_environment_names(report, binary, label, environments):
    """Runs BINARY --print-config with each set of VEZA_* variables: it must
    accept them without an 'unknown environment variable' warning."""
    for origin, environment in environments.items():
        variables = {key: str(value) for key, value in environment.items() if key.startswith("VEZA_")}
        if not variables:
            continue
        if not binary:
            report.skip(f"{origin}: VEZA_* names known to {label}", f"no fresh {label} binary")
            continue
        result = subprocess.run([binary, "--print-config"], capture_output=True, text=True,
                                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **variables},
                                timeout=30, check=False)
        report.check(f"{origin}: VEZA_* names and values accepted by {label}",
                     result.returncode == 0 and "unknown environment variable" not in result.stderr,
                     result.stderr.strip() or f"exit {result.returncode}")


def check_controlplane_example(report, binary, deploy_dir):
    if not binary:
        report.skip("veza-controlplane.toml: parses and holds the defaults", "no fresh veza-controlplane binary")
        return
    path = os.path.join(deploy_dir, "veza-controlplane.toml")
    plain_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    with_file = subprocess.run([binary, "--config", path, "--print-config"], capture_output=True,
                               text=True, env=plain_env, timeout=30, check=False)
    defaults = subprocess.run([binary, "--print-config"], capture_output=True, text=True,
                              env=plain_env, timeout=30, check=False)
    report.check("veza-controlplane.toml: parses and holds the defaults",
                 with_file.returncode == 0 and with_file.stdout == defaults.stdout,
                 with_file.stderr.strip() or "differs from the built-in defaults")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploy-dir", required=True)
    parser.add_argument("--syscall-groups", help="output of `systemd-analyze syscall-filter`")
    parser.add_argument("--dataplane-bin")
    parser.add_argument("--controlplane-bin")
    arguments = parser.parse_args()
    deploy_dir = os.path.abspath(arguments.deploy_dir)
    report = Report()
    compose_environments = check_compose(report, deploy_dir)
    kubernetes_environments = check_kubernetes(report, deploy_dir)
    check_seccomp(report, deploy_dir)
    check_dockerfile(report, deploy_dir, os.path.dirname(deploy_dir))
    check_unit_syscalls(report, deploy_dir, arguments.syscall_groups)
    check_environment_names(report, arguments.dataplane_bin, "veza-dataplane", {
        "compose dataplane": compose_environments.get("dataplane", {}),
        "k8s ConfigMap veza-dataplane": kubernetes_environments.get("veza-dataplane", {}),
        "k8s Deployment veza-dataplane env": kubernetes_environments.get("env:veza-dataplane", {}),
        "veza-dataplane.service": unit_environment(deploy_dir, "veza-dataplane.service"),
    })
    check_environment_names(report, arguments.controlplane_bin, "veza-controlplane", {
        "compose controlplane": compose_environments.get("controlplane", {}),
        "k8s ConfigMap veza-controlplane": kubernetes_environments.get("veza-controlplane", {}),
        "veza-controlplane.service": unit_environment(deploy_dir, "veza-controlplane.service"),
    })
    check_controlplane_example(report, arguments.controlplane_bin, deploy_dir)
    if report.failures:
        print(f"lint_deploy: {report.failures} of {report.passes + report.failures} checks failed")
    else:
        print(f"lint_deploy: all {report.passes} checks passed")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
