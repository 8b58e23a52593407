#!/usr/bin/env bash
# scripts/govulncheck.sh: govulncheck over every package, with a
# vulnerability database built on this machine, for machines that reach
# the Go module proxy but not vuln.go.dev (this project's).
#
# The database is golang.org/x/vulndb's own OSV files (data/osv, one JSON
# report per vulnerability), fetched as that Go module through the module
# proxy and indexed with the vulndb module's cmd/indexdb into the layout
# `govulncheck -db file://DIR` reads. It is as current as the vulndb
# version pinned below: bump FERRY_VULNDB (the newest pseudo-version `go
# list -m -versions golang.org/x/vulndb` cannot list; take it from `go
# list -m golang.org/x/vulndb@master`) to see newer reports.
#
# Exit status: govulncheck's (0 nothing called, 3 vulnerable code called).
# When the tools or the database cannot be fetched it says so and exits 0:
# the check is skipped, not passed. FERRY_VULNDB_DIR=DIR uses (and keeps)
# an existing database instead.
set -euo pipefail
cd "$(dirname "$0")/.."

VULN_VERSION=${FERRY_GOVULNCHECK:-v1.9.0}
VULNDB_VERSION=${FERRY_VULNDB:-v0.0.0-20261105234957-e22db6528018}
bin=$(go env GOPATH)/bin

skip() { echo "govulncheck: skipped: $*" >&2; exit 0; }

go install "golang.org/x/vuln/cmd/govulncheck@${VULN_VERSION}" ||
	skip "cannot install govulncheck ${VULN_VERSION} (no module proxy?)"

db=${FERRY_VULNDB_DIR:-}
if [ -z "$db" ] || [ ! -f "$db/index/db.json" ]; then
	go install "golang.org/x/vulndb/cmd/indexdb@${VULNDB_VERSION}" ||
		skip "cannot install golang.org/x/vulndb/cmd/indexdb@${VULNDB_VERSION}"
	src=$(go mod download -json "golang.org/x/vulndb@${VULNDB_VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -d "$src/data/osv" ] || skip "golang.org/x/vulndb@${VULNDB_VERSION} has no data/osv"
	if [ -z "$db" ]; then
		db=$(mktemp -d)
		trap 'rm -rf "$db"' EXIT
	fi
	"$bin/indexdb" -vulns "$src/data/osv" -out "$db"
	echo "govulncheck: database of golang.org/x/vulndb@${VULNDB_VERSION} ($(ls "$src/data/osv" | wc -l) reports)" >&2
fi
"$bin/govulncheck" -db "file://$db" "$@" ./...
