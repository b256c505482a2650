#!/usr/bin/env bash
# Installs and starts, idempotently, what the integration tests need. The
# servers live in a network namespace of their own ($TEST_NS), so nothing
# the tests start listens on this machine's network: Docker's plain API has
# no authentication, and no local user or web page can reach it there.
#   - the network namespace $TEST_NS (loopback only);
#   - in it, the tests' own MariaDB on 127.0.0.1:3306 (its own data
#     directory: an installed MariaDB is left as it is) with a `zuntest`
#     user limited to the tests' databases (zun_*), and a second MariaDB on
#     127.0.0.1:3307 (and 127.0.0.2:3307) whose test users must use TLS
#     (REQUIRE SSL, REQUIRE X509), with certificates made here;
#   - in it, the tests' own Docker engine on 127.0.0.1:2375 and a second
#     one that only speaks TLS with client certificates on 127.0.0.1:2376
#     (own data roots and sockets under $RUN_DIR: a Docker engine already
#     running here is left as it is);
#   - the image zun-wsproxy-test/busybox:latest in both, built offline from
#     Debian's busybox-static (no registry is needed);
#   - python3-zunclient, PyMySQL and SQLAlchemy, Horizon's console page, chromium, playwright-core,
#     HAProxy, systemd-analyze (Debian's systemd, for the unit's checks;
#     systemd need not run), make, and the Go modules (the namespace has no
#     route out).
# Run the tests inside the namespace with scripts/in-test-env.sh (make test
# does). Safe to run again: it only starts what is not running and builds
# what is missing.
set -euo pipefail

log() { printf 'test-env: %s\n' "$*"; }
die() { printf 'test-env: ERROR: %s\n' "$*" >&2; exit 1; }

. "$(dirname "$0")/lib.sh"

MYSQL_USER=zuntest
MYSQL_PASS=zuntest
IMAGE=zun-wsproxy-test/busybox:latest
STATE_DIR=/var/lib/zun-wsproxy-test
LOG_DIR=/var/log/zun-wsproxy-test
SECONDS=0

# 1. Packages from Debian's archive.
packages=(mariadb-server mariadb-client docker.io busybox-static python3-zunclient python3-websocket curl ca-certificates openssl iproute2 chromium fonts-dejavu-core haproxy
	python3-django-horizon python3-xstatic-term.js python3-xstatic-angular python3-xstatic-jquery fonts-wqy-microhei make systemd
	python3-pymysql python3-sqlalchemy nginx)
apt_install "${packages[@]}"

# 2. The network namespace.
if [ ! -e "/run/netns/$TEST_NS" ]; then
	log "making the network namespace $TEST_NS"
	$SUDO ip netns add "$TEST_NS"
fi
$SUDO ip -n "$TEST_NS" link set lo up
$SUDO mkdir -p "$RUN_DIR" "$STATE_DIR" "$LOG_DIR"
# Traversable (MariaDB runs as mysql in subdirectories of its own), not listable.
$SUDO chmod 0711 "$RUN_DIR" "$STATE_DIR"
$SUDO chmod 0700 "$LOG_DIR"
# in_ns_daemon LOG CMD... starts CMD in the namespace, detached, logging to LOG.
in_ns_daemon() {
	local out=$1
	shift
	$SUDO setsid nohup nsenter --net="/run/netns/$TEST_NS" sh -c 'exec "$@" >"$0" 2>&1 </dev/null' "$out" "$@" >/dev/null 2>&1 </dev/null &
}
# An unauthenticated Docker API on this machine's own loopback (an older
# version of this script started one): say so, it is not ours to stop.
if curl -sf --max-time 1 http://127.0.0.1:2375/_ping >/dev/null 2>&1; then
	log "WARNING: a Docker engine answers without authentication on 127.0.0.1:2375 of this machine (not the tests' one): any local user can become root through it"
fi

# 3. MariaDB in the namespace, with its own data directory and socket.
# start_mariadb WHAT DATADIR RUNDIR LOG [MARIADBD-OPTION...] starts a
# mariadbd in the namespace with its own data directory (made on first
# use), socket and pid file (in RUNDIR), unless one already answers on that
# socket; it fails if the server does not come up.
mariadb_up() { $SUDO mariadb-admin --no-defaults --protocol=socket --socket="$1" -uroot ping >/dev/null 2>&1; }
start_mariadb() {
	local what=$1 data=$2 run=$3 logf=$4
	shift 4
	mariadb_up "$run/mysqld.sock" && return 0
	log "starting $what in $TEST_NS (log $logf)"
	$SUDO mkdir -p "$run" "$data"
	$SUDO chown mysql:mysql "$run" "$data"
	$SUDO chmod 0700 "$data"
	if [ ! -d "$data/mysql" ]; then
		$SUDO mariadb-install-db --no-defaults --user=mysql --datadir="$data" >/dev/null ||
			{ $SUDO rm -rf "$data"; die "mariadb-install-db failed for $data"; }
	fi
	in_ns_daemon "$logf" mariadbd --no-defaults --user=mysql --datadir="$data" \
		--socket="$run/mysqld.sock" --pid-file="$run/mysqld.pid" --skip-name-resolve --skip-log-bin "$@"
	for _ in $(seq 1 60); do mariadb_up "$run/mysqld.sock" && break; sleep 1; done
	mariadb_up "$run/mysqld.sock" || { $SUDO tail -20 "$logf" || true; die "$what did not start (log: $logf)"; }
}
MYSQL_DATA=$STATE_DIR/mariadb
MYSQL_RUN=$RUN_DIR/mysql
MYSQL_SOCK=$MYSQL_RUN/mysqld.sock
mysql_root() { $SUDO mariadb --no-defaults --protocol=socket --socket="$MYSQL_SOCK" -uroot "$@"; }
start_mariadb "the tests' MariaDB" "$MYSQL_DATA" "$MYSQL_RUN" "$LOG_DIR/mariadb.log" \
	--bind-address=127.0.0.1 --port=3306 --innodb-flush-log-at-trx-commit=2
# The tests' user may do anything to the tests' databases (zun_*), nothing else.
mysql_root <<SQL
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'127.0.0.1' IDENTIFIED BY '$MYSQL_PASS';
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'localhost' IDENTIFIED BY '$MYSQL_PASS';
GRANT ALL PRIVILEGES ON \`zun\\_%\`.* TO '$MYSQL_USER'@'127.0.0.1';
GRANT ALL PRIVILEGES ON \`zun\\_%\`.* TO '$MYSQL_USER'@'localhost';
FLUSH PRIVILEGES;
SQL
in_ns mariadb --no-defaults -h 127.0.0.1 -P 3306 -u"$MYSQL_USER" -p"$MYSQL_PASS" -e 'SELECT 1' >/dev/null ||
	die "cannot log in to the tests' MariaDB at 127.0.0.1:3306 in $TEST_NS as $MYSQL_USER"
log "MariaDB ready on 127.0.0.1:3306 in $TEST_NS"

# 3b. A second MariaDB in the namespace, for TLS to the database: its test
# users must use TLS (zuntls: REQUIRE SSL; zuntlsx509: REQUIRE X509, a
# client certificate from the CA made here) and may use only databases
# named zuntls_*. It listens on 127.0.0.1 and 127.0.0.2, an address its
# certificate does not name.
TLSDB_DIR=$STATE_DIR/mariadb-tls
TLSDB_CERTS=$TLSDB_DIR/certs
TLSDB_RUN=$RUN_DIR/mysql-tls
TLSDB_LOG=$LOG_DIR/mariadb-tls.log
TLSDB_PORT=3307
if [ ! -f "$TLSDB_CERTS/client.pem" ]; then
	log "making the database test CA and certificates in $TLSDB_CERTS"
	$SUDO rm -rf "$TLSDB_CERTS"
	$SUDO mkdir -p "$TLSDB_CERTS"
	$SUDO sh -c "cd '$TLSDB_CERTS' && umask 077 &&
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca-key.pem -out ca.pem -days 3650 -subj '/CN=zun-wsproxy test database CA' &&
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server-key.pem -out server.csr -subj '/CN=127.0.0.1' &&
		printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext &&
		openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out server.pem -days 3650 -extfile server.ext &&
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout client-key.pem -out client.csr -subj '/CN=zuntlsx509' &&
		printf 'extendedKeyUsage=clientAuth\n' >client.ext &&
		openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out client.pem -days 3650 -extfile client.ext &&
		rm -f server.csr client.csr server.ext client.ext" >/dev/null 2>&1 ||
		die "could not make the database TLS certificates"
fi
# Keys 0600: the server's for mariadbd, the client's for whoever runs the
# tests (root, in the namespace).
$SUDO chmod 0644 "$TLSDB_CERTS"/ca.pem "$TLSDB_CERTS"/server.pem "$TLSDB_CERTS"/client.pem
$SUDO chmod 0600 "$TLSDB_CERTS"/*-key.pem
$SUDO chown mysql:mysql "$TLSDB_CERTS"/server-key.pem
$SUDO chmod 0711 "$TLSDB_DIR"
$SUDO chmod 0755 "$TLSDB_CERTS"
tlsdb() { $SUDO mariadb --no-defaults --protocol=socket --socket="$TLSDB_RUN/mysqld.sock" -uroot "$@"; }
start_mariadb "a second mariadbd with TLS on 127.0.0.1:$TLSDB_PORT" "$TLSDB_DIR/data" "$TLSDB_RUN" "$TLSDB_LOG" \
	--port=$TLSDB_PORT --bind-address=127.0.0.1,127.0.0.2 \
	--ssl-ca="$TLSDB_CERTS/ca.pem" --ssl-cert="$TLSDB_CERTS/server.pem" --ssl-key="$TLSDB_CERTS/server-key.pem"
# Quoted: the grants' backquotes are SQL's.
tlsdb <<'SQL'
CREATE USER IF NOT EXISTS 'zuntls'@'127.0.0.%' IDENTIFIED BY 'zuntls-secret';
ALTER USER 'zuntls'@'127.0.0.%' IDENTIFIED BY 'zuntls-secret' REQUIRE SSL;
GRANT ALL PRIVILEGES ON `zuntls\_%`.* TO 'zuntls'@'127.0.0.%';
CREATE USER IF NOT EXISTS 'zuntlsx509'@'127.0.0.%' IDENTIFIED BY 'zuntlsx509-secret';
ALTER USER 'zuntlsx509'@'127.0.0.%' IDENTIFIED BY 'zuntlsx509-secret' REQUIRE X509;
GRANT ALL PRIVILEGES ON `zuntls\_%`.* TO 'zuntlsx509'@'127.0.0.%';
FLUSH PRIVILEGES;
SQL
tls_login() { in_ns mariadb --no-defaults -h 127.0.0.1 -P $TLSDB_PORT -uzuntls -pzuntls-secret "$@" -e 'SELECT 1' >/dev/null 2>&1; }
tls_login --ssl --ssl-ca="$TLSDB_CERTS/ca.pem" --ssl-verify-server-cert ||
	die "cannot log in to the TLS MariaDB at 127.0.0.1:$TLSDB_PORT as zuntls over verified TLS (log: $TLSDB_LOG)"
! tls_login --skip-ssl || die "the TLS MariaDB let zuntls in without TLS"
log "MariaDB with TLS required of its test users ready on 127.0.0.1:$TLSDB_PORT in $TEST_NS (certificates in $TLSDB_CERTS)"

# 4. Docker's engine in the namespace: its own data root, state and socket
# (root only), and the plain API on the namespace's loopback.
ENGINE_SOCK=$RUN_DIR/engine.sock
engine() { $SUDO env DOCKER_HOST="unix://$ENGINE_SOCK" docker "$@"; }
if ! engine version >/dev/null 2>&1; then
	log "starting the tests' Docker engine in $TEST_NS (log $LOG_DIR/dockerd.log)"
	# Containers in tests run with --network none: no bridge, no iptables.
	in_ns_daemon "$LOG_DIR/dockerd.log" dockerd --data-root "$STATE_DIR/engine" --exec-root "$RUN_DIR/engine" \
		--pidfile "$RUN_DIR/engine.pid" --group root -H "unix://$ENGINE_SOCK" -H tcp://127.0.0.1:2375 \
		--bridge=none --iptables=false --ip6tables=false
	for _ in $(seq 1 60); do engine version >/dev/null 2>&1 && break; sleep 1; done
	engine version >/dev/null 2>&1 || { $SUDO tail -30 "$LOG_DIR/dockerd.log"; die "the tests' dockerd did not start (log: $LOG_DIR/dockerd.log)"; }
fi
in_ns curl -sf --max-time 5 http://127.0.0.1:2375/_ping >/dev/null || die "the tests' dockerd does not answer on 127.0.0.1:2375 in $TEST_NS"
log "Docker engine ready on tcp://127.0.0.1:2375 in $TEST_NS"

# 4b. A second engine that only speaks TLS with client certificates
# (dockerd --tlsverify), on 127.0.0.1:2376 in the namespace, with
# certificates made here: the tests check the proxy's verified TLS to
# Docker against it. Keys are readable by root only.
TLS_DIR=$STATE_DIR/docker-tls
if [ ! -f "$TLS_DIR/cert.pem" ]; then
	log "making the test CA and certificates in $TLS_DIR"
	$SUDO mkdir -p "$TLS_DIR"
	$SUDO sh -c "cd '$TLS_DIR' && umask 077 &&
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca-key.pem -out ca.pem -days 3650 -subj '/CN=zun-wsproxy test Docker CA' &&
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server-key.pem -out server.csr -subj '/CN=127.0.0.1' &&
		printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext &&
		openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out server.pem -days 3650 -extfile server.ext &&
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem -out client.csr -subj '/CN=zun-wsproxy' &&
		printf 'extendedKeyUsage=clientAuth\n' >client.ext &&
		openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out cert.pem -days 3650 -extfile client.ext" >/dev/null 2>&1 ||
		die "could not make the Docker TLS certificates"
fi
$SUDO chmod 0700 "$TLS_DIR"
$SUDO chmod 0600 "$TLS_DIR"/*-key.pem "$TLS_DIR"/key.pem
$SUDO chmod 0644 "$TLS_DIR"/ca.pem "$TLS_DIR"/cert.pem "$TLS_DIR"/server.pem
ENGINE_TLS_SOCK=$RUN_DIR/engine-tls.sock
engine_tls() { $SUDO env DOCKER_HOST="unix://$ENGINE_TLS_SOCK" docker "$@"; }
if ! engine_tls version >/dev/null 2>&1; then
	log "starting a dockerd with --tlsverify on 127.0.0.1:2376 in $TEST_NS (log $LOG_DIR/dockerd-tls.log)"
	in_ns_daemon "$LOG_DIR/dockerd-tls.log" dockerd --data-root "$STATE_DIR/engine-tls" --exec-root "$RUN_DIR/engine-tls" \
		--pidfile "$RUN_DIR/engine-tls.pid" --group root -H "unix://$ENGINE_TLS_SOCK" -H tcp://127.0.0.1:2376 \
		--tlsverify --tlscacert "$TLS_DIR/ca.pem" --tlscert "$TLS_DIR/server.pem" --tlskey "$TLS_DIR/server-key.pem" \
		--bridge=none --iptables=false --ip6tables=false
	for _ in $(seq 1 60); do engine_tls version >/dev/null 2>&1 && break; sleep 1; done
	engine_tls version >/dev/null 2>&1 || { $SUDO tail -20 "$LOG_DIR/dockerd-tls.log"; die "the TLS dockerd did not start"; }
fi
in_ns docker -H tcp://127.0.0.1:2376 --tlsverify --tlscacert "$TLS_DIR/ca.pem" --tlscert "$TLS_DIR/cert.pem" --tlskey "$TLS_DIR/key.pem" version >/dev/null ||
	die "the TLS dockerd does not answer with client certificates on 127.0.0.1:2376 in $TEST_NS"
log "Docker engine with --tlsverify ready on tcp://127.0.0.1:2376 in $TEST_NS"

# 5. The offline test image, in both engines.
if ! engine image inspect "$IMAGE" >/dev/null 2>&1; then
	log "building $IMAGE from busybox-static"
	DOCKER_HOST="unix://$ENGINE_SOCK" build_busybox_image "$IMAGE"
fi
if ! engine_tls image inspect "$IMAGE" >/dev/null 2>&1; then
	engine save "$IMAGE" | engine_tls load >/dev/null
fi
out=$(engine run --rm --network none "$IMAGE" sh -c 'echo hello-$((6*7))')
[ "$out" = hello-42 ] || die "test image does not run: got '$out' (dockerd log: $LOG_DIR/dockerd.log)"
log "image $IMAGE runs"

# 6. Playwright (playwright-core only: it drives Debian's chromium and
# downloads no browser) for the web console's browser test.
here=$(cd "$(dirname "$0")/.." && pwd)
command -v npm >/dev/null || die "npm is needed for the browser test (Node.js with npm)"
browser_dir="$here/e2e/browser"
# node_modules/.installed-lock records the lockfile it was installed from.
if ! cmp -s "$browser_dir/package-lock.json" "$browser_dir/node_modules/.installed-lock" 2>/dev/null; then
	log "installing playwright-core from e2e/browser/package-lock.json"
	(cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
	cp "$browser_dir/package-lock.json" "$browser_dir/node_modules/.installed-lock"
fi
/usr/bin/chromium --version >/dev/null 2>&1 || die "chromium does not run"
log "chromium and playwright-core ready"

# 7. The real Python client, under Debian's interpreter.
/usr/bin/python3 -c 'import zunclient.common.websocketclient.websocketclient, websocket' ||
	die "python3-zunclient is not importable by /usr/bin/python3"
log "python3-zunclient ready"

# 8. Horizon's console page, rendered by Django under Debian's interpreter.
/usr/bin/python3 -c 'import django, compressor, horizon, openstack_dashboard, xstatic.pkg.termjs, xstatic.pkg.angular, xstatic.pkg.jquery' ||
	die "python3-django-horizon or its XStatic packages are not importable by /usr/bin/python3"
log "Horizon's serial console page ready"

# 9. The Go modules, fetched here: the namespace has no route out.
(cd "$here" && go mod download) || die "go mod download failed"
log "Go modules ready"
log "all ready in ${SECONDS}s"
