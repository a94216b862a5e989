#!/usr/bin/env bash
# Builds a pinned, real Kubernetes control plane from source via the Go
# module proxy: kube-apiserver, kube-controller-manager, kube-scheduler and
# kubectl from k8s.io/kubernetes, etcd from go.etcd.io/etcd/server/v3, and
# kwok (fake nodes that run pods) from sigs.k8s.io/kwok, with kwok's default
# stages next to it in kwok-stages.yaml.
#
# The pins live in the helper modules next to this script:
#   test/controlplane/kubernetes/go.mod       (k8s.io/kubernetes + staging replaces)
#   test/controlplane/kubernetes-1.NN/go.mod  (older releases, for --kubernetes;
#                                              made by pin-kubernetes.sh)
#   test/controlplane/etcd/go.mod             (go.etcd.io/etcd/server/v3 + replaces)
#   test/controlplane/kwok/go.mod             (sigs.k8s.io/kwok)
#
# Usage: test/controlplane/build.sh [OUTDIR]     (default: <repo>/bin/k8s)
#        test/controlplane/build.sh --kubernetes v1.32 [OUTDIR]
#                                                (default: <repo>/bin/k8s-1.32)
#        FORCE=1 test/controlplane/build.sh       (rebuild regardless of stamp)
#
# --kubernetes builds the Kubernetes binaries from kubernetes-<major>.<minor>
# instead; etcd and kwok are the same pins for every version.
#
# OUTDIR is then usable as KUBEBUILDER_ASSETS / envtest's
# BinaryAssetsDirectory. A binary is rebuilt only when it is missing or was
# built from different pins (go.mod/go.sum, flags, Go version); see
# OUTDIR/.stamp. Needs nothing but Go; uses the default GOMODCACHE and
# GOCACHE, so a cold first run takes several minutes on 2 cores, later runs
# take seconds.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../.." && pwd)"

usage() { echo "usage: $0 [--kubernetes v<major>.<minor>] [OUTDIR]" >&2; exit 2; }
kdir="${here}/kubernetes"
kwant=""
while [[ $# -gt 0 ]]; do
	case "$1" in
	--kubernetes) [[ $# -ge 2 ]] || usage; kwant="$2"; shift 2 ;;
	--kubernetes=*) kwant="${1#*=}"; shift ;;
	-h | --help) usage ;;
	-*) echo "build.sh: unknown flag $1" >&2; usage ;;
	*) break ;;
	esac
done
[[ $# -le 1 ]] || usage
default_out="${root}/bin/k8s"
if [[ -n "${kwant}" ]]; then
	[[ "${kwant}" =~ ^v([0-9]+)\.([0-9]+)$ ]] || { echo "build.sh: --kubernetes wants v<major>.<minor>, e.g. v1.32; got '${kwant}'" >&2; exit 2; }
	kdir="${here}/kubernetes-${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
	default_out="${root}/bin/k8s-${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
	if [[ ! -f "${kdir}/go.mod" ]]; then
		echo "build.sh: no helper module ${kdir}; pin the release first: ${here}/pin-kubernetes.sh ${kwant}" >&2
		exit 1
	fi
fi
out="${1:-${default_out}}"
mkdir -p "${out}"
out="$(cd "${out}" && pwd)"
stamp="${out}/.stamp"

command -v go >/dev/null 2>&1 || { echo "build.sh: go not found in PATH" >&2; exit 1; }

# Build in the helper modules only, whatever the caller's environment says.
export GOWORK=off
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

gover="$(go env GOVERSION)"
goos="$(go env GOOS)"
goarch="$(go env GOARCH)"

# Same tags and strip flags as kubernetes' hack/lib/golang.sh release builds.
common_flags=(-mod=readonly -trimpath -tags=selinux,notest,grpcnotrace)

digest() {
	if command -v sha256sum >/dev/null 2>&1; then
		sha256sum | cut -d' ' -f1
	elif command -v shasum >/dev/null 2>&1; then
		shasum -a 256 | cut -d' ' -f1
	else
		cksum | tr ' ' '-'
	fi
}

now() { date +%s; }

# stamp_line NAME MODDIR LDFLAGS -> "NAME <digest>" over everything that
# determines the binary.
stamp_line() {
	local name="$1" moddir="$2" ldflags="$3"
	local d
	d="$({
		echo "${name} ${gover} ${goos}/${goarch} CGO_ENABLED=${CGO_ENABLED}"
		echo "${common_flags[*]}"
		echo "${ldflags}"
		cat "${moddir}/go.mod" "${moddir}/go.sum"
	} | digest)"
	echo "${name} ${d}"
}

up_to_date() {
	local name="$1" line="$2"
	[[ "${FORCE:-}" != 1 && -x "${out}/${name}" && -f "${stamp}" ]] && grep -qxF "${line}" "${stamp}"
}

record() {
	local name="$1" line="$2" tmp
	tmp="$(mktemp "${out}/.stamp.XXXXXX")"
	{ [[ -f "${stamp}" ]] && grep -v "^${name} " "${stamp}" || true; echo "${line}"; } >"${tmp}"
	chmod 0644 "${tmp}"
	mv -f "${tmp}" "${stamp}"
}

# build NAME MODDIR PKG VERSION LDFLAGS
build() {
	local name="$1" moddir="$2" pkg="$3" version="$4" ldflags="$5"
	local line t0 tmp
	line="$(stamp_line "${name}" "${moddir}" "${ldflags}")"
	if up_to_date "${name}" "${line}"; then
		echo "==> ${name} ${version} up to date (${out}/${name})"
		return
	fi
	echo "==> building ${name} ${version} (first run takes several minutes)..."
	t0="$(now)"
	tmp="${out}/.${name}.tmp"
	(cd "${moddir}" && go build "${common_flags[@]}" -ldflags="${ldflags}" -o "${tmp}" "${pkg}")
	mv -f "${tmp}" "${out}/${name}"
	record "${name}" "${line}"
	echo "    built ${name} in $(($(now) - t0))s"
}

start="$(now)"
echo "==> control plane binaries -> ${out} (${gover} ${goos}/${goarch})"

# ---- Kubernetes --------------------------------------------------------
# Version and release date of the pinned module (go.mod-only lookup: cheap,
# needs the module cache or the proxy on the first run).
read -r kver ktime < <(cd "${kdir}" && go list -mod=readonly -m \
	-f '{{.Version}} {{with .Time}}{{.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes)
if [[ ! "${kver}" =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+ ]]; then
	echo "build.sh: unexpected k8s.io/kubernetes version '${kver}'" >&2
	exit 1
fi
kmajor="${BASH_REMATCH[1]}"
kminor="${BASH_REMATCH[2]}"
if [[ -n "${kwant}" && "${kwant}" != "v${kmajor}.${kminor}" ]]; then
	echo "build.sh: ${kdir} pins k8s.io/kubernetes ${kver}, not ${kwant}.x" >&2
	exit 1
fi
# buildDate is the module's release time, so rebuilds are reproducible.
# gitCommit is unknown for a module-proxy build and left empty.
kldflags="-s -w"
for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
	kldflags+=" -X ${p}.gitVersion=${kver}"
	kldflags+=" -X ${p}.gitMajor=${kmajor}"
	kldflags+=" -X ${p}.gitMinor=${kminor}"
	kldflags+=" -X ${p}.gitCommit="
	kldflags+=" -X ${p}.gitTreeState=clean"
	kldflags+=" -X ${p}.buildDate=${ktime:-1970-01-01T00:00:00Z}"
done

build kube-apiserver "${kdir}" k8s.io/kubernetes/cmd/kube-apiserver "${kver}" "${kldflags}"
build kube-controller-manager "${kdir}" k8s.io/kubernetes/cmd/kube-controller-manager "${kver}" "${kldflags}"
build kube-scheduler "${kdir}" k8s.io/kubernetes/cmd/kube-scheduler "${kver}" "${kldflags}"
build kubectl "${kdir}" k8s.io/kubernetes/cmd/kubectl "${kver}" "${kldflags}"

# ---- etcd --------------------------------------------------------------
edir="${here}/etcd"
ever="$(cd "${edir}" && go list -mod=readonly -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
# The etcd main package is the root package of go.etcd.io/etcd/server/v3.
eldflags="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${ever}"
build etcd "${edir}" go.etcd.io/etcd/server/v3 "${ever}" "${eldflags}"

# ---- kwok --------------------------------------------------------------
wdir="${here}/kwok"
read -r wver wsrc < <(cd "${wdir}" && go list -mod=readonly -m -f '{{.Version}} {{.Dir}}' sigs.k8s.io/kwok)
# kwok's version is a constant in its source (pkg/consts.Version).
build kwok "${wdir}" sigs.k8s.io/kwok/cmd/kwok "${wver}" "-s -w"

# Without its Stage CRD, kwok plays only the stages in its --config files:
# take the defaults kwokctl gives a cluster (kustomize/stage/... of this
# same kwok version): nodes become Ready and renew their leases, pods become
# Running and Ready, Job pods complete, deleted pods go away.
if [[ -z "${wsrc}" || ! -d "${wsrc}" ]]; then
	(cd "${wdir}" && go mod download sigs.k8s.io/kwok)
	wsrc="$(cd "${wdir}" && go list -mod=readonly -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
fi
stages=(
	node/fast/node-initialize.yaml
	node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
	pod/fast/pod-ready.yaml
	pod/fast/pod-complete.yaml
	pod/fast/pod-delete.yaml
)
tmp="$(mktemp "${out}/.kwok-stages.XXXXXX")"
{
	echo "# kwok ${wver}'s default stages (kustomize/stage/...), written by test/controlplane/build.sh."
	for f in "${stages[@]}"; do
		echo "---"
		cat "${wsrc}/kustomize/stage/${f}"
	done
} >"${tmp}"
chmod 0644 "${tmp}"
if cmp -s "${tmp}" "${out}/kwok-stages.yaml"; then
	rm -f "${tmp}"
	echo "==> kwok-stages.yaml ${wver} up to date"
else
	mv -f "${tmp}" "${out}/kwok-stages.yaml"
	echo "==> wrote kwok-stages.yaml (${wver}: ${#stages[@]} stages)"
fi

echo "==> control plane ready in $(($(now) - start))s: ${out}"
echo "    export KUBEBUILDER_ASSETS=${out}"
