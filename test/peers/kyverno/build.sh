#!/usr/bin/env bash
# Builds Kyverno's admission controller (cmd/kyverno) at the version pinned in
# this directory's go.mod, from the Go module proxy, into bin/peers/kyverno,
# and copies that version's CRDs (config/crds/**) into bin/peers/kyverno-crds.
# `make bench-peers` runs it before measuring Kyverno next to meshrole.
#
# Usage: test/peers/kyverno/build.sh [OUTDIR]     (default: <repo>/bin/peers)
#        FORCE=1 test/peers/kyverno/build.sh      (rebuild regardless of stamp)
#
# The binary is rebuilt only when it is missing or was built from a different
# pin (go.mod/go.sum, flags, Go version); see OUTDIR/.stamp. A cold build
# takes a long time on 2 cores (Kyverno is large); later runs take seconds.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../../.." && pwd)"
[[ $# -le 1 ]] || { echo "usage: $0 [OUTDIR]" >&2; exit 2; }
out="${1:-${root}/bin/peers}"
mkdir -p "${out}"
out="$(cd "${out}" && pwd)"
stamp="${out}/.stamp"

command -v go >/dev/null 2>&1 || { echo "build.sh: go not found in PATH" >&2; exit 1; }

# Build in this module only, whatever the caller's environment says.
export GOWORK=off
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

read -r version src < <(cd "${here}" && go list -mod=readonly -m -f '{{.Version}} {{.Dir}}' github.com/kyverno/kyverno)
# Same strip flags and version stamp as Kyverno's Makefile release builds.
ldflags="-s -w -X github.com/kyverno/kyverno/pkg/version.BuildVersion=${version}"
flags=(-mod=readonly -trimpath)

digest() {
	if command -v sha256sum >/dev/null 2>&1; then
		sha256sum | cut -d' ' -f1
	else
		cksum | tr ' ' '-'
	fi
}

line="kyverno $({
	echo "$(go env GOVERSION) $(go env GOOS)/$(go env GOARCH) CGO_ENABLED=${CGO_ENABLED}"
	echo "${flags[*]}"
	echo "${ldflags}"
	cat "${here}/go.mod" "${here}/go.sum"
} | digest)"

if [[ "${FORCE:-}" != 1 && -x "${out}/kyverno" && -f "${stamp}" ]] && grep -qxF "${line}" "${stamp}"; then
	echo "==> kyverno ${version} up to date (${out}/kyverno)"
else
	echo "==> building kyverno ${version} -> ${out}/kyverno (a cold build takes many minutes)..."
	t0="$(date +%s)"
	tmp="${out}/.kyverno.tmp"
	(cd "${here}" && go build "${flags[@]}" -ldflags="${ldflags}" -o "${tmp}" github.com/kyverno/kyverno/cmd/kyverno)
	mv -f "${tmp}" "${out}/kyverno"
	tmp="$(mktemp "${out}/.stamp.XXXXXX")"
	{ [[ -f "${stamp}" ]] && grep -v '^kyverno ' "${stamp}" || true; echo "${line}"; } >"${tmp}"
	chmod 0644 "${tmp}"
	mv -f "${tmp}" "${stamp}"
	echo "    built kyverno in $(($(date +%s) - t0))s"
fi

# The CRDs Kyverno's informers wait for, from the same module version, in
# one flat directory (envtest installs a directory's files, not its subdirectories).
if [[ -z "${src}" || ! -d "${src}" ]]; then
	(cd "${here}" && go mod download github.com/kyverno/kyverno)
	src="$(cd "${here}" && go list -mod=readonly -m -f '{{.Dir}}' github.com/kyverno/kyverno)"
fi
crds="${out}/kyverno-crds"
tmp="$(mktemp -d "${out}/.kyverno-crds.XXXXXX")"
cp "${src}"/config/crds/*/*.yaml "${tmp}/"
chmod 0755 "${tmp}"
chmod 0644 "${tmp}"/*.yaml
if [[ -d "${crds}" ]] && diff -rq "${tmp}" "${crds}" >/dev/null; then
	rm -rf "${tmp}"
	echo "==> kyverno-crds ${version} up to date"
else
	rm -rf "${crds}"
	mv "${tmp}" "${crds}"
	echo "==> wrote kyverno-crds (${version}: $(ls "${crds}" | wc -l) CRDs)"
fi
