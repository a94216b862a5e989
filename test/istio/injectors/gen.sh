#!/usr/bin/env bash
# gen.sh [name...]: (re)generate test/istio/injectors/<name>/, one module per
# Istio version in versions.txt (all of them when no name is given), each
# holding the go.mod and go.sum of the injector server in _template/ (the one
# source, put beside them at build time by test/istio/injector) that require
# that istio.io/istio version with Istio's own dependency versions and
# replace directives, so that every version builds against what it was
# released with rather than against meshrole's Kubernetes libraries.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# Released Istio versions depend on pseudo-versions of envoyproxy and istio.io
# modules that the checksum database does not know.
export GONOSUMDB=${GONOSUMDB:+$GONOSUMDB,}github.com/envoyproxy,istio.io
export GOFLAGS=-mod=mod GOWORK=off GOTOOLCHAIN=local

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
	mapfile -t names < <(awk '!/^#/ && NF {print $1}' "$here/versions.txt")
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# replaces prints the replace directives of the go.mod at $1 as
# go mod edit -replace arguments, skipping (with a note) those to local
# directories, which cannot work outside Istio's repository.
replaces() {
	awk '
		{ sub(/\/\/.*/, "") }
		/^replace[ \t]*\([ \t]*$/ { block = 1; next }
		block && /^\)/ { block = 0; next }
		block || /^replace[ \t]/ {
			sub(/^replace[ \t]+/, "")
			split($0, side, "=>")
			n = split(side[1], l, " "); m = split(side[2], r, " ")
			if (m < 2) { print "gen.sh: skipping replace " $0 > "/dev/stderr"; next }
			print l[1] (n > 1 ? "@" l[2] : "") "=" r[1] "@" r[2]
		}
	' "$1"
}

gen() {
	local name=$1 ref module version dir modfile
	ref=$(awk -v n="$name" '!/^#/ && $1 == n {print $2}' "$here/versions.txt")
	if [ -z "$ref" ]; then
		echo "gen.sh: $name is not in versions.txt" >&2
		return 1
	fi
	# Resolve the tag (or check the version) outside any module.
	if ! version=$(cd "$scratch" && go list -m -f '{{.Version}}' "istio.io/istio@$ref" 2>&1); then
		echo "gen.sh: $name: istio.io/istio@$ref does not resolve: $version" >&2
		return 1
	fi
	modfile=$(cd "$scratch" && go mod download -json "istio.io/istio@$version" | sed -n 's/^\t"GoMod": "\(.*\)",\{0,1\}$/\1/p')
	echo "gen.sh: $name: istio.io/istio $version"

	dir="$here/$name"
	module="github.com/meshrole/meshrole/test/istio/injectors/$name"
	# The module is tidied and vetted beside the shared source; only its
	# go.mod and go.sum are kept: the source stays one, in _template/.
	work="$scratch/$name"
	rm -rf "$work"
	mkdir -p "$work"
	cp "$here"/_template/*.go "$work/"
	(
		cd "$work"
		go mod init "$module" 2>/dev/null
		# Istio's own Go version, so that the language it was written for applies.
		go mod edit -go="$(go mod edit -json "$modfile" | sed -n 's/^\t"Go": "\(.*\)",\{0,1\}$/\1/p')"
		go mod edit -require="istio.io/istio@$version"
		# Istio's replace directives do not apply to a module that requires it:
		# copy them, except the ones to local directories, which cannot work here.
		replaces "$modfile" | while read -r rep; do go mod edit -replace="$rep"; done
		go mod tidy
		go vet .
	)
	rm -rf "$dir"
	mkdir -p "$dir"
	cp "$work/go.mod" "$work/go.sum" "$dir/"
}

failed=()
for name in "${names[@]}"; do
	gen "$name" || failed+=("$name")
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "gen.sh: failed: ${failed[*]}" >&2
	exit 1
fi
