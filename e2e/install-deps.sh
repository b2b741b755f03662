#!/usr/bin/env bash
# Installs what the build and the local cluster need and a new machine may
# lack; with SRE_SPACE_NODE=real, also what the real node needs. Toolchains
# (Go, Rust) come with the machine; this checks for them.
set -euo pipefail
missing=()
tools=(openssl curl setsid)
# The Kafka broker of the harness (SIGNALS=0 leaves it out) runs on Java 17+
# from jars Maven fetches.
[[ ${SIGNALS:-1} == 1 ]] && tools+=(java mvn)
# The dashboard's browser test (e2e/tests/dashboard.rs) drives a headless
# Chromium through chromedriver.
tools+=(chromium chromedriver)
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
# The real node (SRE_SPACE_NODE=real) runs containers: containerd, runc, the
# CNI plugins and iptables (for the bridge plugin's masquerading).
if [[ ${SRE_SPACE_NODE:-kwok} == real ]]; then
    for tool in containerd runc iptables cni; do
        case $tool in
            cni) [[ -x /usr/lib/cni/bridge || -x /opt/cni/bin/bridge ]] || missing+=(cni) ;;
            *) command -v "$tool" >/dev/null || missing+=("$tool") ;;
        esac
    done
fi
if ((${#missing[@]})); then
    echo "[deps] installing ${missing[*]}" >&2
    packages=()
    for tool in "${missing[@]}"; do
        case $tool in
            setsid) packages+=(util-linux) ;;
            cni) packages+=(containernetworking-plugins) ;;
            java) packages+=(openjdk-17-jre-headless) ;;
            mvn) packages+=(maven) ;;
            chromedriver) packages+=(chromium-driver) ;;
            *) packages+=("$tool") ;;
        esac
    done
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi
for tool in go cargo; do
    command -v "$tool" >/dev/null || { echo "[deps] error: $tool is not installed" >&2; exit 1; }
done
