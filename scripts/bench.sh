#!/usr/bin/env bash
# Measures zun-wsproxy against its ceiling on this machine: builds the proxy
# and wsbench, starts wsbench's Docker-attach-compatible backend, runs the
# proxy in Zun mode on the test MariaDB (scripts/test-env.sh, in its network
# namespace) with one container row pointing at the backend, and runs
# `wsbench run`, which alternates direct and proxied rounds. Extra arguments go to wsbench run
# (e.g. -json, -idle 20000, -rounds 5). Loopback only.
#
# BENCH_BACKENDS=N (default 1) adds N more backend addresses (127.0.1.1..N)
# and container rows, and has idle sessions come from N client addresses
# (127.0.0.2..N+1): each address pair has its own ~28,000 ephemeral ports,
# which 100,000 sessions need (make bench-100k).
#
# nginx (Debian's package, installed if missing) runs in the same rounds as
# a plain WebSocket reverse proxy in front of the same backend, as the
# reference to beat; BENCH_NGINX=0 leaves it out.
#
# BENCH_ENGINE=goroutines runs the proxy's sessions on the goroutine engine
# ([websocket_proxy] engine; default loop). BENCH_PPROF=127.0.0.1:PORT
# serves the Zun-mode proxy's profiles there ([metrics] profiling), e.g.
# for `go tool pprof http://127.0.0.1:PORT/debug/pprof/profile?seconds=2`
# during a round. BENCH_REF_ENGINE=goroutines (with BENCH_NGINX=0) runs a second
# proxy on that engine as the reference, in the same rounds: the engines
# side by side on one machine load.
#
# TLS rows follow (BENCH_TLS=0 leaves them out): a second proxy with
# ssl_only and a certificate the script makes (loopback names only), nginx
# terminating TLS with the same certificate and key and the same
# resumption (session tickets and a shared session cache), and a TLS
# backend for the direct column, in alternating rounds as above. For each
# key type of BENCH_TLS_KEYS (default "ecdsa rsa": P-256 and RSA-2048;
# ed25519 too if named) sessions are opened with full handshakes; the
# first key type also gets resumed TLS sessions and the latency and
# throughput rows. BENCH_TLS_PPROF=127.0.0.1:PORT serves that proxy's
# profiles. BENCH_PLAIN=0 runs the TLS rows only.
#
# BENCH_PROXY_ENV and BENCH_REF_ENV are environment assignments for the
# Zun-mode proxy and the reference proxy (e.g. BENCH_PROXY_ENV=GOMAXPROCS=1):
# runtime settings compared in the same rounds. BENCH_REF_BIN is the
# reference proxy's binary (default the one just built): two builds A/B.
# BENCH_PROXY_CONF is text appended to the configuration of the proxies
# measured (the Zun-mode one and the TLS ones), BENCH_REF_CONF to the
# reference proxy's instead; the last section is [database] (e.g.
# BENCH_REF_CONF='max_pool_size = 16').
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
NGINX=${BENCH_NGINX:-1}
ENGINE=${BENCH_ENGINE:-loop}
TLS=${BENCH_TLS:-1}
TLS_KEYS=${BENCH_TLS_KEYS:-ecdsa rsa}
PLAIN=${BENCH_PLAIN:-1}
declare -A NGINX_TLS_PORT=()
# Installs first, then the rest in the tests' network namespace, where the
# test MariaDB listens (and from where nothing can be fetched).
if [ "${ZUN_WSPROXY_TEST_NS:-}" != "$TEST_NS" ]; then
	bash scripts/test-env.sh >/dev/null
	[ "$NGINX" = 0 ] || apt_install nginx
	exec bash scripts/in-test-env.sh bash scripts/bench.sh "$@"
fi
go build -o bin/zun-wsproxy ./cmd/zun-wsproxy
go build -o bin/wsbench ./cmd/wsbench

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BACKEND_PORT=$(free_port)
PROXY_PORT=$(free_port)

BACKENDS=${BENCH_BACKENDS:-1}
# Every session holds descriptors in the proxy and in wsbench.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
listen="127.0.0.1:$BACKEND_PORT"
for i in $(seq 1 "$BACKENDS"); do listen="$listen,127.0.1.$i:$BACKEND_PORT"; done
bin/wsbench backend -listen "$listen" >"$work/backend.log" 2>&1 &
pids+=($!)

# Its own database: other runs of this script may be under way.
DB=zun_bench_$$
TOKEN=$(cat /proc/sys/kernel/random/uuid)
attach() { echo "ws://127.0.0.1:$BACKEND_PORT/v1.26/containers/$1/attach/ws?logs=0&stream=1&stdin=1&stdout=1&stderr=1"; }
mysql="mariadb -h 127.0.0.1 -u zuntest -pzuntest"
$mysql -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB CHARACTER SET utf8"
$mysql "$DB" <testdata/zun-schema.sql
# One container row per backend mode (named bench-{mode}). The proxy URLs
# name them by uuid, as Zun's websocket_url does: wsbench puts each mode's
# uuid for {uuid}.
uuids=""
for mode in echo sink source; do
	id=$(cat /proc/sys/kernel/random/uuid)
	uuids="$uuids${uuids:+,}$mode=$id"
	$mysql "$DB" -e "INSERT INTO container (uuid, name, container_id, websocket_url, websocket_token, container_type, updated_at) VALUES ('$id', 'bench-$mode', '$mode', '$(attach $mode)', '$TOKEN', 0, UTC_TIMESTAMP())"
done
idle_urls="" sources=""
if [ "$BACKENDS" -gt 1 ]; then
	for i in $(seq 1 "$BACKENDS"); do
		url=$(attach sink | sed "s/127.0.0.1/127.0.1.$i/")
		id=$(cat /proc/sys/kernel/random/uuid)
		$mysql "$DB" -e "INSERT INTO container (uuid, name, container_id, websocket_url, websocket_token, container_type, updated_at) VALUES ('$id', 'bench-sink-$i', 'sink', '$url', '$TOKEN', 0, UTC_TIMESTAMP())"
		idle_urls="$idle_urls${idle_urls:+,}ws://127.0.0.1:$PROXY_PORT/?token=$TOKEN&uuid=$id"
		sources="$sources${sources:+,}127.0.0.$((i + 1))"
	done
fi

cat >"$work/zun.conf" <<CONF
[DEFAULT]
my_ip = 127.0.0.1
[websocket_proxy]
wsproxy_host = 127.0.0.1
wsproxy_port = $PROXY_PORT
engine = $ENGINE
max_sessions = 0
max_sessions_per_container = 0
# Every session of the load comes from 127.0.0.1, where a deployment's
# come from many clients: the failed-authorization limit counts a client's
# handshakes in flight, and would hold the 100 opened at once in turns.
auth_failure_limit = 0
[database]
connection = mysql+pymysql://zuntest:zuntest@127.0.0.1/$DB
CONF
# The reference proxy's configuration starts from this one, without
# BENCH_PROXY_CONF.
cp "$work/zun.conf" "$work/base.conf"
[ -n "${BENCH_PROXY_CONF:-}" ] && printf '%s\n' "$BENCH_PROXY_CONF" >>"$work/zun.conf"
if [ -n "${BENCH_PPROF:-}" ]; then
	printf '[metrics]\nlisten = %s\nprofiling = true\n' "$BENCH_PPROF" >>"$work/zun.conf"
fi
env ${BENCH_PROXY_ENV:-} bin/zun-wsproxy --config-file "$work/zun.conf" >"$work/proxy.log" 2>&1 &
proxy_pid=$!
pids+=($proxy_pid)
wait_port "$PROXY_PORT" || true

if [ "$TLS" != 0 ]; then
	for k in $TLS_KEYS; do
		bin/wsbench cert -key-type "$k" -cert "$work/$k.crt" -key "$work/$k.key"
	done
	# Session ticket keys from a file on both, as replicas behind a load
	# balancer share them: the proxy's ticket_key_file, nginx's
	# ssl_session_ticket_key (48 bytes: AES-128 tickets, as Go makes).
	(umask 077 && head -c 32 /dev/urandom | base64 >"$work/tickets" && head -c 48 /dev/urandom >"$work/nginx-tickets")
fi

echo "machine: $(nproc) cores, $(grep MemTotal /proc/meminfo | awk '{print int($2/1024/1024)}') GiB; $(go version | cut -d' ' -f3)"
extra=()
[ -n "$idle_urls" ] && extra+=(-idle-urls "$idle_urls" -source-ips "$sources")
if [ -n "${BENCH_REF_ENGINE:-}" ] && [ "$NGINX" = 0 ]; then
	REF_PORT=$(free_port)
	sed -e "s/^wsproxy_port = .*/wsproxy_port = $REF_PORT/" -e "s/^engine = .*/engine = $BENCH_REF_ENGINE/" "$work/base.conf" >"$work/ref.conf"
	[ -n "${BENCH_REF_CONF:-}" ] && printf '%s\n' "$BENCH_REF_CONF" >>"$work/ref.conf"
	env ${BENCH_REF_ENV:-} "${BENCH_REF_BIN:-bin/zun-wsproxy}" --config-file "$work/ref.conf" >"$work/ref.log" 2>&1 &
	ref_pid=$!
	pids+=($ref_pid)
	wait_port "$REF_PORT" || true
	extra+=(-ref "ws://127.0.0.1:$REF_PORT/?token=$TOKEN&uuid={uuid}" -ref-name "engine=$BENCH_REF_ENGINE" -ref-pids "$ref_pid")
	echo "reference: zun-wsproxy, engine = $BENCH_REF_ENGINE"
fi
if [ "$NGINX" != 0 ]; then
	NGINX_PORT=$(free_port)
	mkdir -p "$work/nginx"
	cat >"$work/nginx-location.conf" <<NGINXCONF
location / {
	proxy_pass http://127.0.0.1:$BACKEND_PORT;
	proxy_http_version 1.1;
	proxy_set_header Upgrade \$http_upgrade;
	proxy_set_header Connection "upgrade";
	proxy_read_timeout 1h;
	proxy_buffering off;
	# Upgraded connections are relayed through buffers of this
	# size (default 4 KiB): as large as our chunks, for fairness.
	proxy_buffer_size 64k;
	proxy_buffers 4 64k;
	proxy_busy_buffers_size 64k;
}
NGINXCONF
	# A TLS server per key type, with the proxy's protocol versions and
	# curve preference, and resumption on both ways browsers use it:
	# session tickets (stateless, as the proxy's) and a session cache.
	nginx_tls_servers() {
		[ "$TLS" != 0 ] || return 0
		for k in $TLS_KEYS; do
			cat <<SERVER
	server {
		listen 127.0.0.1:${NGINX_TLS_PORT[$k]} ssl deferred;
		ssl_certificate $work/$k.crt;
		ssl_certificate_key $work/$k.key;
		ssl_protocols TLSv1.2 TLSv1.3;
		ssl_ecdh_curve X25519:prime256v1:secp384r1;
		ssl_session_tickets on;
		ssl_session_ticket_key $work/nginx-tickets;
		ssl_session_cache shared:TLS_$k:10m;
		ssl_session_timeout 1h;
		include $work/nginx-location.conf;
	}
SERVER
		done
	}
	if [ "$TLS" != 0 ]; then
		for k in $TLS_KEYS; do NGINX_TLS_PORT[$k]=$(free_port); done
	fi
	cat >"$work/nginx.conf" <<NGINXCONF
# A plain WebSocket reverse proxy, as commonly deployed.
worker_processes auto;
worker_rlimit_nofile 65536;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 32768; }
http {
	access_log off;
	client_body_temp_path $work/nginx/body;
	proxy_temp_path $work/nginx/proxy;
	fastcgi_temp_path $work/nginx/fastcgi;
	uwsgi_temp_path $work/nginx/uwsgi;
	scgi_temp_path $work/nginx/scgi;
	# deferred: TCP_DEFER_ACCEPT, as the proxy's console port has.
	server {
		listen 127.0.0.1:$NGINX_PORT deferred;
		include $work/nginx-location.conf;
	}
$(nginx_tls_servers)
}
NGINXCONF
	nginx -c "$work/nginx.conf" -p "$work/nginx" -g 'daemon off;' >"$work/nginx/stdout.log" 2>&1 &
	nginx_pid=$!
	pids+=($nginx_pid)
	wait_port "$NGINX_PORT" || true
	workers=$(pgrep -P "$nginx_pid" | paste -sd, -) || { cat "$work/nginx/stdout.log" "$work/nginx/error.log" >&2; exit 1; }
	extra+=(-ref "$(attach '{mode}' | sed "s/:$BACKEND_PORT/:$NGINX_PORT/")" -ref-name nginx -ref-pids "$workers")
	echo "reference: $(nginx -v 2>&1 | sed 's/.*: //'), $(echo "$workers" | tr ',' '\n' | wc -l) workers"
fi
if [ "$PLAIN" != 0 ]; then
	bin/wsbench run -uuids "$uuids" -direct "$(attach '{mode}')" -through "ws://127.0.0.1:$PROXY_PORT/?token=$TOKEN&uuid={uuid}" -pid "$proxy_pid" "${extra[@]}" "$@"
fi
# Session setup against the embedded store (standalone mode: SQLite, a
# token use consumed atomically and the container inspected per session),
# with the backend standing in for Docker's Engine API.
if [ "$PLAIN" != 0 ] && [ "${BENCH_EMBEDDED:-1}" != 0 ] && [[ " $* " != *" -only "* ]]; then
	SA_PORT=$(free_port)
	cat >"$work/standalone.conf" <<CONF
[websocket_proxy]
wsproxy_host = 127.0.0.1
wsproxy_port = $SA_PORT
engine = $ENGINE
max_sessions = 0
max_sessions_per_container = 0
[docker]
api_url = tcp://127.0.0.1:$BACKEND_PORT
CONF
	sa=(--config-file "$work/standalone.conf" --data-dir "$work/data")
	# Tokens of 1000 uses each, enough for every round.
	: >"$work/tokens"
	for _ in $(seq 1 60); do
		bin/zun-wsproxy token create --container sink --uses 1000 --ttl 1h "${sa[@]}" | awk '/^websocket:/ {print $2}' >>"$work/tokens"
	done
	bin/zun-wsproxy "${sa[@]}" >"$work/standalone.log" 2>&1 &
	sa_pid=$!
	pids+=($sa_pid)
	wait_port "$SA_PORT" || true
	echo
	echo "embedded store (standalone mode, SQLite in $work/data):"
	bin/wsbench run -direct "$(attach '{mode}')" -through "$(head -1 "$work/tokens")" -through-urls "$work/tokens" -pid "$sa_pid" -only handshakes "$@"
fi
# TLS rows: wss:// at the proxy (ssl_only) and at nginx, the direct
# column a TLS backend with the same certificate. -strict makes a row with
# errors, or resumed handshakes that did not resume, fail the run.
first_key=1
for k in $TLS_KEYS; do
	[ "$TLS" != 0 ] || break
	TLS_PORT=$(free_port) TLS_BACKEND_PORT=$(free_port)
	bin/wsbench backend -listen "127.0.0.1:$TLS_BACKEND_PORT" -cert "$work/$k.crt" -key "$work/$k.key" >"$work/backend-$k.log" 2>&1 &
	tls_backend_pid=$!
	pids+=($tls_backend_pid)
	sed -e "s/^wsproxy_port = .*/wsproxy_port = $TLS_PORT/" -e '/^\[metrics\]/,$d' "$work/zun.conf" >"$work/tls-$k.conf"
	sed -i "/^\[websocket_proxy\]/a cert = $work/$k.crt\nkey = $work/$k.key\nticket_key_file = $work/tickets\nssl_only = true\nbase_url = wss://127.0.0.1:$TLS_PORT/" "$work/tls-$k.conf"
	if [ -n "${BENCH_TLS_PPROF:-}" ]; then
		printf '[metrics]\nlisten = %s\nprofiling = true\n' "$BENCH_TLS_PPROF" >>"$work/tls-$k.conf"
	fi
	bin/zun-wsproxy --config-file "$work/tls-$k.conf" >"$work/tls-$k.log" 2>&1 &
	tls_pid=$!
	pids+=($tls_pid)
	wait_port "$TLS_PORT" || { cat "$work/tls-$k.log" >&2; exit 1; }
	wait_port "$TLS_BACKEND_PORT" || { cat "$work/backend-$k.log" >&2; exit 1; }
	tls_extra=()
	if [ "$NGINX" != 0 ]; then
		tls_extra+=(-ref "$(attach '{mode}' | sed "s|ws://127.0.0.1:$BACKEND_PORT|wss://127.0.0.1:${NGINX_TLS_PORT[$k]}|")" -ref-name nginx -ref-pids "$workers")
	fi
	# Resumption does not depend on the key type: the other key types get
	# full handshakes only. The client offers Go's default key exchanges
	# (X25519MLKEM768 first, as current browsers), then X25519 only (what
	# nginx with OpenSSL 3.0 negotiates either way).
	only=(-tls-handshakes full,resumed,full-x25519,resumed-x25519)
	[ -n "$first_key" ] || only=(-only handshakes -tls-handshakes full,full-x25519)
	echo
	case $k in ecdsa) name="ECDSA P-256" ;; rsa) name="RSA-2048" ;; ed25519) name=Ed25519 ;; *) name=$k ;; esac
	echo "TLS, $name certificate: wss:// at the proxy (ssl_only)${NGINX_TLS_PORT[$k]:+ and at nginx}, direct to a TLS backend"
	bin/wsbench run -uuids "$uuids" -strict -ca "$work/$k.crt" -direct "$(attach '{mode}' | sed "s|ws://127.0.0.1:$BACKEND_PORT|wss://127.0.0.1:$TLS_BACKEND_PORT|")" \
		-through "wss://127.0.0.1:$TLS_PORT/?token=$TOKEN&uuid={uuid}" -pid "$tls_pid" "${tls_extra[@]}" "$@" -idle 0 "${only[@]}"
	kill "$tls_pid" "$tls_backend_pid"
	wait "$tls_pid" "$tls_backend_pid" 2>/dev/null || true
	if grep -qE 'level=(WARN|ERROR)' "$work/tls-$k.log"; then
		echo "TLS proxy warnings and errors: $(grep -cE 'level=(WARN|ERROR)' "$work/tls-$k.log") (first 5):"
		grep -E 'level=(WARN|ERROR)' "$work/tls-$k.log" | head -5
	fi
	first_key=
done
if grep -qE 'level=(WARN|ERROR)' "$work/proxy.log"; then
	echo "proxy warnings and errors: $(grep -cE 'level=(WARN|ERROR)' "$work/proxy.log") (first 5):"
	grep -E 'level=(WARN|ERROR)' "$work/proxy.log" | head -5
fi
$mysql -e "DROP DATABASE IF EXISTS $DB"
