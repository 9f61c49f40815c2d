#!/bin/sh
# coturn for natbench (cmd/natbench), by hand: the tool does the same by
# itself. Loopback only, no TLS, long-term credentials user/pass in realm
# natbench, no CLI, loopback peers allowed.
#
#   scripts/coturn.sh install          # apt-get install coturn (root) if missing
#   scripts/coturn.sh start DIR [PORT] # start turnserver, log and pid in DIR
#   scripts/coturn.sh stop DIR         # stop the one started in DIR
set -eu

case "${1:-}" in
install)
	if command -v turnserver >/dev/null 2>&1; then
		echo "coturn: already installed: $(turnserver --version 2>/dev/null | head -n1)"
		exit 0
	fi
	if [ "$(id -u)" != 0 ]; then
		echo "coturn: skipped: not root (run: sudo apt-get install coturn)" >&2
		exit 1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends coturn
	;;
start)
	dir=${2:?usage: coturn.sh start DIR [PORT]}
	port=${3:-34790}
	mkdir -p "$dir"
	turnserver -n --listening-ip=127.0.0.1 --listening-port="$port" \
		--relay-ip=127.0.0.1 --no-tls --no-dtls --no-tcp-relay \
		--lt-cred-mech --user=user:pass --realm=natbench \
		--no-cli --allow-loopback-peers --simple-log \
		--log-file="$dir/turnserver.log" --pidfile="$dir/turnserver.pid" \
		--userdb="$dir/turndb" >"$dir/turnserver.out" 2>&1 &
	echo $! >"$dir/coturn.pid"
	echo "coturn: started on 127.0.0.1:$port (pid $(cat "$dir/coturn.pid")), log in $dir"
	;;
stop)
	dir=${2:?usage: coturn.sh stop DIR}
	kill "$(cat "$dir/coturn.pid")" && rm -f "$dir/coturn.pid"
	;;
*)
	sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
