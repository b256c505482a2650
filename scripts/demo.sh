#!/usr/bin/env bash
# One command from a fresh Debian/Ubuntu machine to a working web console:
#   - uses the running Docker engine, starts an installed one, or installs
#     Debian's docker.io (saying so);
#   - builds a small offline image from busybox-static and runs the demo
#     container "zun-wsproxy-demo" (the only container it touches);
#   - builds zun-wsproxy and runs it on 127.0.0.1 in standalone mode with
#     its embedded store in ./demo/data;
#   - mints a token and prints the console URL and the ws:// URL.
# The proxy runs as the user who runs this when that user can reach the
# Docker socket (root, or the docker group), else as root through sudo,
# saying so. It opens no Docker TCP socket: it uses the engine's unix socket.
# Stop it with: make demo-stop (scripts/demo.sh stop).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${DEMO_PORT:-6784}
NAME=zun-wsproxy-demo
IMAGE=zun-wsproxy-demo/busybox:latest
DIR=demo

say() { printf '==> %s\n' "$*"; }
die() { printf 'demo: ERROR: %s\n' "$*" >&2; exit 1; }

. scripts/lib.sh
apt_install() {
	say "installing $* from the distribution's packages"
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
DOCKER="$SUDO docker"

# stop_proxy ends the demo's proxy, as the user it runs as.
stop_proxy() {
	local pidfile=$DIR/zun-wsproxy.pid pid owner run=""
	[ -f "$pidfile" ] || return 0
	pid=$(cat "$pidfile")
	if [ -d "/proc/$pid" ]; then
		owner=$(ps -o user= -p "$pid" | tr -d ' ')
		[ "$owner" = "$(id -un)" ] || run=$SUDO
		$run kill "$pid" || die "could not stop zun-wsproxy (pid $pid, run by $owner); $pidfile is kept"
		for _ in $(seq 1 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
		say "stopped zun-wsproxy (pid $pid)"
	fi
	rm -f "$pidfile"
}

# stop: the proxy and the demo container.
if [ "${1:-}" = stop ]; then
	stop_proxy
	if $DOCKER inspect "$NAME" >/dev/null 2>&1; then
		$DOCKER rm -f "$NAME" >/dev/null || die "could not remove the container $NAME"
		say "removed the container $NAME"
	fi
	exit 0
fi

# 1. A Docker engine.
if ! $DOCKER info >/dev/null 2>&1; then
	if ! command -v dockerd >/dev/null; then
		apt_install docker.io
	fi
	if ! $DOCKER info >/dev/null 2>&1; then
		say "starting Docker"
		if command -v systemctl >/dev/null && systemctl list-units >/dev/null 2>&1; then
			$SUDO systemctl start docker
		else
			$SUDO sh -c 'setsid nohup dockerd >/var/log/dockerd.log 2>&1 </dev/null &'
		fi
		for _ in $(seq 1 60); do $DOCKER info >/dev/null 2>&1 && break; sleep 1; done
		$DOCKER info >/dev/null 2>&1 || die "Docker did not start (see /var/log/dockerd.log)"
	fi
else
	say "using the running Docker engine"
fi

# 2. The demo container, from an image built offline.
if ! $DOCKER image inspect "$IMAGE" >/dev/null 2>&1; then
	[ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 || apt_install busybox-static
	say "building $IMAGE from busybox"
	build_busybox_image "$IMAGE" -c 'ENV PS1=demo\$\ '
fi
if [ "$($DOCKER inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null)" != true ]; then
	$DOCKER rm -f "$NAME" >/dev/null 2>&1 || true
	say "starting the demo container $NAME"
	$DOCKER run -dit --name "$NAME" --network none --hostname demo "$IMAGE" sh >/dev/null
fi

# 3. The proxy, standalone, on loopback.
command -v go >/dev/null || die "Go is needed to build zun-wsproxy (https://go.dev/doc/install)"
say "building zun-wsproxy"
go build -o bin/zun-wsproxy ./cmd/zun-wsproxy
mkdir -p "$DIR"
cat >"$DIR/zun.conf" <<EOF
[DEFAULT]
my_ip = 127.0.0.1

[websocket_proxy]
wsproxy_host = 127.0.0.1
wsproxy_port = $PORT

[docker]
api_url = unix:///var/run/docker.sock
EOF
stop_proxy
# As this user when it can reach the Docker socket; root otherwise.
AS=""
if ! docker info >/dev/null 2>&1; then
	AS=$SUDO
	[ -z "$AS" ] || say "running zun-wsproxy as root: $(id -un) cannot reach /var/run/docker.sock (join the docker group to run it as yourself)"
fi
$AS sh -c "setsid nohup bin/zun-wsproxy --config-file $DIR/zun.conf --data-dir $DIR/data >$DIR/zun-wsproxy.log 2>&1 </dev/null & echo \$! >$DIR/zun-wsproxy.pid"
wait_port "$PORT" 100 || { tail -5 "$DIR/zun-wsproxy.log"; die "zun-wsproxy did not start"; }

# 4. A token.
out=$($AS bin/zun-wsproxy token create --config-file "$DIR/zun.conf" --data-dir "$DIR/data" --container "$NAME" --ttl 30m)
console=$(printf '%s\n' "$out" | sed -n 's/^web console: *//p')
ws=$(printf '%s\n' "$out" | sed -n 's/^websocket: *//p')
cat <<EOF

zun-wsproxy is running on 127.0.0.1:$PORT (log: $DIR/zun-wsproxy.log).

Open the console in a browser (single use, valid 30 minutes):
  $console

Or from a CLI WebSocket client (python-zunclient style):
  $ws

More tokens:  bin/zun-wsproxy token create --config-file $DIR/zun.conf --data-dir $DIR/data --container $NAME
Stop it all:  make demo-stop
EOF
