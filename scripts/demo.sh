#!/usr/bin/env bash
# make demo: a rendezvous and two scripted headless nodes on loopback.
# alice and bob register, see each other, exchange messages with delivery
# receipts, and leave. Everything runs from ./bin and a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-./bin}
PORT=${PORT:-34780}
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

# wait_for FILE PATTERN: wait up to 10 s for a line matching PATTERN.
wait_for() {
  for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "demo: timed out waiting for $2 in $1" >&2; cat "$1" >&2; return 1
}

echo "== rendezvous on 127.0.0.1:$PORT"
"$BIN/rendezvous" -addr "127.0.0.1:$PORT" -data "$tmp/rv" -log-level warn &
pids+=($!)

for who in alice bob; do
  mkfifo "$tmp/$who.in"
  "$BIN/node" -name "$who" -rv "127.0.0.1:$PORT" -identity "$tmp/$who.key" -state "$tmp/$who.state" -headless -log-level warn \
    <"$tmp/$who.in" >"$tmp/$who.out" &
  pids+=($!)
done
exec 3>"$tmp/alice.in" 4>"$tmp/bob.in"

wait_for "$tmp/alice.out" '"peer_joined".*"bob"'
echo "/msg bob hi bob, this is alice" >&3
wait_for "$tmp/bob.out" '"type":"message"'
echo "/msg alice hello alice! bob here" >&4
wait_for "$tmp/alice.out" '"type":"message"'
wait_for "$tmp/bob.out" '"type":"delivered"'
echo "/who" >&3
wait_for "$tmp/alice.out" '"type":"peers"'
echo "/quit" >&4
wait_for "$tmp/alice.out" '"peer_left"'
echo "/quit" >&3
exec 3>&- 4>&-
wait "${pids[1]}" "${pids[2]}" 2>/dev/null || true

for who in alice bob; do
  echo "== $who's events (headless JSON)"
  cat "$tmp/$who.out"
done
# How each message came, from the receiver's own message event.
path_of() { grep '"type":"message"' "$1" | head -1 | sed -E 's/.*"path":"([a-z]+)".*/\1/'; }
echo "== demo ok: messages went both ways, end-to-end encrypted, with receipts:" \
  "alice→bob over the $(path_of "$tmp/bob.out") path, bob→alice over the $(path_of "$tmp/alice.out") path"
