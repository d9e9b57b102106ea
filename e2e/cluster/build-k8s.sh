#!/usr/bin/env bash
# Builds the control plane of the cluster suite (e2e/cluster): etcd, kube-apiserver,
# kube-controller-manager and kubectl, from the pinned Go module in e2e/cluster/k8s (go.mod +
# go.sum committed) into the git-ignored e2e/cluster/.k8s/bin. Skipped when the stamp there
# matches the pinned versions (go.mod, go.sum, Go version, this script's flags). The Go build
# cache (~/.cache/go-build) makes a rebuild in a fresh clone quick; the cold build is the slow one
# (README, "In a cluster", gives both timings).
#
# GOTOOLCHAIN=local: the machine's Go, never a downloaded toolchain. CGO_ENABLED=0: static
# binaries, no C compiler needed. The version is stamped with -ldflags -X, or /version says
# v0.0.0-master and Helm's kubeVersion checks fail.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

K8S_VERSION=v1.37.2
MAJOR=1
MINOR=37
OUT=.k8s/bin
STAMP=.k8s/stamp

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly

if ! command -v go >/dev/null; then
    echo "build-k8s.sh: no Go toolchain on PATH (Go >= 1.26 is needed to build the control plane)" >&2
    exit 1
fi

ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$MAJOR -X $pkg.gitMinor=$MINOR"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

want="$(
    go version
    echo "$ldflags"
    sha256sum k8s/go.mod k8s/go.sum
)"
bins=(etcd kube-apiserver kube-controller-manager kubectl)
have_all=1
for b in "${bins[@]}"; do [[ -x $OUT/$b ]] || have_all=0; done
if [[ $have_all == 1 && -f $STAMP && "$(cat "$STAMP")" == "$want" ]]; then
    echo "control plane $K8S_VERSION up to date in e2e/cluster/$OUT"
    exit 0
fi

mkdir -p "$OUT"
rm -f "$STAMP"
start=$SECONDS
echo "building control plane $K8S_VERSION into e2e/cluster/$OUT ($(go version), $(nproc) cores)"
cd k8s
go build -trimpath -ldflags "$ldflags" -o "../$OUT/etcd" go.etcd.io/etcd/server/v3
go build -trimpath -ldflags "$ldflags" -o "../$OUT/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl
cd ..
"$OUT/kube-apiserver" --version
"$OUT/kubectl" version --client
printf '%s\n' "$want" > "$STAMP"
echo "control plane built in $((SECONDS - start))s"
