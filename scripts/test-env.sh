#!/usr/bin/env bash
# Installs and starts, idempotently, what the integration tests need:
#   - MariaDB on 127.0.0.1:3306 with a `zuntest` user (tests make their own
#     databases and load Zun's schema into them);
#   - a second MariaDB on 127.0.0.1:3307 whose test users must use TLS
#     (REQUIRE SSL, REQUIRE X509), with certificates made here;
#   - Docker's engine on unix:///var/run/docker.sock and tcp://127.0.0.1:2375;
#   - the image zun-wsproxy-test/busybox:latest, built offline from Debian's
#     busybox-static (no registry is needed);
#   - python3-zunclient and python3-websocket for /usr/bin/python3, and
#     PyMySQL and SQLAlchemy (the proxy reads [database] connection as they do).
# Everything listens on loopback only. Safe to run again: it only starts
# what is not running and builds what is missing.
set -euo pipefail

log() { printf 'test-env: %s\n' "$*"; }
die() { printf 'test-env: ERROR: %s\n' "$*" >&2; exit 1; }

. "$(dirname "$0")/lib.sh"

MYSQL_USER=zuntest
MYSQL_PASS=zuntest
DOCKER_TCP=127.0.0.1:2375
IMAGE=zun-wsproxy-test/busybox:latest
STATE_DIR=/var/lib/zun-wsproxy-test
DOCKERD_LOG=/var/log/zun-wsproxy-test-dockerd.log
MARIADB_LOG=/var/log/zun-wsproxy-test-mariadb.log
SECONDS=0

# 1. Packages from Debian's archive.
packages=(mariadb-server mariadb-client docker.io busybox-static python3-zunclient python3-websocket python3-pymysql python3-sqlalchemy curl ca-certificates openssl iproute2 chromium fonts-dejavu-core haproxy)
apt_install "${packages[@]}"

# 2. MariaDB, loopback only.
$SUDO mkdir -p /etc/mysql/mariadb.conf.d "$STATE_DIR"
cnf=/etc/mysql/mariadb.conf.d/99-zun-wsproxy-test.cnf
cnf_text=$'# Written by zun-wsproxy scripts/test-env.sh: loopback only.\n[mysqld]\nbind-address = 127.0.0.1\nport = 3306\nskip-name-resolve\n'
mysql_up() { $SUDO mysqladmin --protocol=socket -uroot ping >/dev/null 2>&1; }
if [ "$(cat "$cnf" 2>/dev/null)"$'\n' != "$cnf_text" ]; then
	printf '%s' "$cnf_text" | $SUDO tee "$cnf" >/dev/null
	mysql_up && log "wrote $cnf; it applies when MariaDB restarts"
fi
if ! mysql_up; then
	if pgrep -a -x 'mariadbd|mysqld' | grep -qv -- "--datadir=$STATE_DIR/mariadb-tls/"; then
		log "waiting for the running MariaDB"
	else
		log "starting MariaDB (mariadbd-safe, log $MARIADB_LOG)"
		$SUDO mkdir -p /run/mysqld
		$SUDO chown mysql:mysql /run/mysqld
		if [ ! -d /var/lib/mysql/mysql ]; then
			$SUDO mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
		fi
		# Debian's 50-mysqld_safe.cnf logs to syslog, which may not exist here.
		# The log is written by the mysql user (mariadbd-safe-helper), so it
		# must be theirs; the wrapper's own complaints go to a .out beside it.
		$SUDO touch "$MARIADB_LOG"
		$SUDO chown mysql:mysql "$MARIADB_LOG"
		$SUDO setsid nohup sh -c 'exec "$@" >"$0" 2>&1 </dev/null' "$MARIADB_LOG.out" \
			mariadbd-safe --user=mysql --skip-syslog --log-error="$MARIADB_LOG" >/dev/null 2>&1 </dev/null &
	fi
	for _ in $(seq 1 60); do mysql_up && break; sleep 1; done
	mysql_up || { tail -20 "$MARIADB_LOG" "$MARIADB_LOG.out" 2>/dev/null || true; die "MariaDB did not start (log: $MARIADB_LOG)"; }
fi
$SUDO mariadb --protocol=socket -uroot <<SQL
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'127.0.0.1' IDENTIFIED BY '$MYSQL_PASS';
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'localhost' IDENTIFIED BY '$MYSQL_PASS';
ALTER USER '$MYSQL_USER'@'127.0.0.1' IDENTIFIED BY '$MYSQL_PASS';
ALTER USER '$MYSQL_USER'@'localhost' IDENTIFIED BY '$MYSQL_PASS';
GRANT ALL PRIVILEGES ON *.* TO '$MYSQL_USER'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO '$MYSQL_USER'@'localhost';
FLUSH PRIVILEGES;
SQL
mariadb -h 127.0.0.1 -P 3306 -u"$MYSQL_USER" -p"$MYSQL_PASS" -e 'SELECT 1' >/dev/null ||
	die "cannot log in to MariaDB at 127.0.0.1:3306 as $MYSQL_USER (is it listening on TCP? $cnf must apply: restart MariaDB)"
log "MariaDB ready on 127.0.0.1:3306"

# 2b. A second MariaDB, for TLS to the database: its test users must use
# TLS (zuntls: REQUIRE SSL; zuntlsx509: REQUIRE X509, a client certificate
# from the CA made here) and may use only databases named zuntls_*. It has
# its own datadir, socket, pid file and port (3307), and listens on
# 127.0.0.1 and 127.0.0.2, an address its certificate does not name. The
# shared instance above is left as it is.
TLSDB_DIR=$STATE_DIR/mariadb-tls
TLSDB_CERTS=$TLSDB_DIR/certs
TLSDB_RUN=/run/zun-wsproxy-test-mariadb-tls
TLSDB_LOG=/var/log/zun-wsproxy-test-mariadb-tls.log
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
	# Keys 0600: the server's for mariadbd, the client's for whoever runs
	# the tests.
	$SUDO chmod 0644 "$TLSDB_CERTS"/ca.pem "$TLSDB_CERTS"/server.pem "$TLSDB_CERTS"/client.pem
	$SUDO chmod 0600 "$TLSDB_CERTS"/*-key.pem
	$SUDO chown mysql:mysql "$TLSDB_CERTS"/server-key.pem
	$SUDO chown "$(id -u):$(id -g)" "$TLSDB_CERTS"/client-key.pem
	$SUDO chmod 0755 "$TLSDB_DIR" "$TLSDB_CERTS"
fi
tlsdb() { $SUDO mariadb --no-defaults --protocol=socket --socket="$TLSDB_RUN/mysqld.sock" -uroot "$@"; }
tlsdb_up() { $SUDO mariadb-admin --no-defaults --protocol=socket --socket="$TLSDB_RUN/mysqld.sock" -uroot ping >/dev/null 2>&1; }
if ! tlsdb_up; then
	log "starting a second mariadbd on 127.0.0.1:$TLSDB_PORT with TLS (log $TLSDB_LOG)"
	$SUDO mkdir -p "$TLSDB_RUN" "$TLSDB_DIR/data"
	$SUDO chown mysql:mysql "$TLSDB_RUN" "$TLSDB_DIR/data"
	if [ ! -d "$TLSDB_DIR/data/mysql" ]; then
		$SUDO mariadb-install-db --no-defaults --user=mysql --datadir="$TLSDB_DIR/data" >/dev/null ||
			die "mariadb-install-db failed for $TLSDB_DIR/data"
	fi
	$SUDO touch "$TLSDB_LOG"
	$SUDO chown mysql:mysql "$TLSDB_LOG"
	$SUDO setsid nohup sh -c 'exec "$@" >"$0" 2>&1 </dev/null' "$TLSDB_LOG.out" \
		mariadbd --no-defaults --user=mysql --datadir="$TLSDB_DIR/data" \
		--socket="$TLSDB_RUN/mysqld.sock" --pid-file="$TLSDB_RUN/mysqld.pid" \
		--port=$TLSDB_PORT --bind-address=127.0.0.1,127.0.0.2 --skip-name-resolve \
		--ssl-ca="$TLSDB_CERTS/ca.pem" --ssl-cert="$TLSDB_CERTS/server.pem" --ssl-key="$TLSDB_CERTS/server-key.pem" \
		--log-error="$TLSDB_LOG" >/dev/null 2>&1 </dev/null &
	for _ in $(seq 1 60); do tlsdb_up && break; sleep 1; done
	tlsdb_up || { tail -20 "$TLSDB_LOG" "$TLSDB_LOG.out" 2>/dev/null || true; die "the TLS MariaDB did not start (log: $TLSDB_LOG)"; }
fi
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
tls_login() { mariadb --no-defaults -h 127.0.0.1 -P $TLSDB_PORT -uzuntls -pzuntls-secret "$@" -e 'SELECT 1' >/dev/null 2>&1; }
tls_login --ssl --ssl-ca="$TLSDB_CERTS/ca.pem" --ssl-verify-server-cert ||
	die "cannot log in to the TLS MariaDB at 127.0.0.1:$TLSDB_PORT as zuntls over verified TLS (log: $TLSDB_LOG)"
! tls_login --skip-ssl || die "the TLS MariaDB let zuntls in without TLS"
log "MariaDB with TLS required of its test users ready on 127.0.0.1:$TLSDB_PORT (certificates in $TLSDB_CERTS)"

# 3. Docker's engine with a loopback TCP socket.
docker_tcp_up() { curl -sf --max-time 2 "http://$DOCKER_TCP/_ping" >/dev/null 2>&1; }
if ! docker_tcp_up; then
	if pgrep -x dockerd >/dev/null; then
		die "a dockerd is running without -H tcp://$DOCKER_TCP; the tests need that loopback socket (restart it with -H unix:///var/run/docker.sock -H tcp://$DOCKER_TCP)"
	fi
	log "starting dockerd (log $DOCKERD_LOG)"
	# Containers in tests run with --network none: no bridge, no iptables.
	# The log is opened by root (sh -c), not by the caller of sudo.
	$SUDO setsid nohup sh -c 'exec "$@" >"$0" 2>&1 </dev/null' "$DOCKERD_LOG" \
		dockerd -H unix:///var/run/docker.sock -H "tcp://$DOCKER_TCP" \
		--bridge=none --iptables=false --ip6tables=false >/dev/null 2>&1 </dev/null &
	for _ in $(seq 1 60); do docker_tcp_up && break; sleep 1; done
	docker_tcp_up || { tail -30 "$DOCKERD_LOG"; die "dockerd did not answer on tcp://$DOCKER_TCP within 60 s (log: $DOCKERD_LOG)"; }
fi
log "Docker engine ready on tcp://$DOCKER_TCP"

# 3b. A second engine that only speaks TLS with client certificates
# (dockerd --tlsverify), on tcp://127.0.0.1:2376, with certificates made
# here: the tests check the proxy's verified TLS to Docker against it.
TLS_DIR=$STATE_DIR/docker-tls
DOCKER_TLS=127.0.0.1:2376
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
	$SUDO chmod 0644 "$TLS_DIR"/ca.pem "$TLS_DIR"/cert.pem "$TLS_DIR"/key.pem
fi
docker_tls() { $SUDO docker -H "tcp://$DOCKER_TLS" --tlsverify --tlscacert "$TLS_DIR/ca.pem" --tlscert "$TLS_DIR/cert.pem" --tlskey "$TLS_DIR/key.pem" "$@"; }
if ! docker_tls version >/dev/null 2>&1; then
	log "starting a dockerd with --tlsverify on tcp://$DOCKER_TLS (log /var/log/zun-wsproxy-test-dockerd-tls.log)"
	$SUDO setsid nohup sh -c 'exec "$@" >"$0" 2>&1 </dev/null' /var/log/zun-wsproxy-test-dockerd-tls.log \
		dockerd --data-root /var/lib/zun-wsproxy-test/docker-tls-data --exec-root /run/zun-wsproxy-test-docker-tls \
		--pidfile /run/zun-wsproxy-test-docker-tls.pid -H "tcp://$DOCKER_TLS" \
		--tlsverify --tlscacert "$TLS_DIR/ca.pem" --tlscert "$TLS_DIR/server.pem" --tlskey "$TLS_DIR/server-key.pem" \
		--bridge=none --iptables=false --ip6tables=false >/dev/null 2>&1 </dev/null &
	for _ in $(seq 1 60); do docker_tls version >/dev/null 2>&1 && break; sleep 1; done
	docker_tls version >/dev/null 2>&1 || { tail -20 /var/log/zun-wsproxy-test-dockerd-tls.log; die "the TLS dockerd did not start"; }
fi
log "Docker engine with --tlsverify ready on tcp://$DOCKER_TLS"

# 4. The offline test image.
if ! $SUDO docker image inspect "$IMAGE" >/dev/null 2>&1; then
	log "building $IMAGE from busybox-static"
	build_busybox_image "$IMAGE"
fi
if ! docker_tls image inspect "$IMAGE" >/dev/null 2>&1; then
	$SUDO docker save "$IMAGE" | docker_tls load >/dev/null
fi
out=$($SUDO docker run --rm --network none "$IMAGE" sh -c 'echo hello-$((6*7))')
[ "$out" = hello-42 ] || die "test image does not run: got '$out' (dockerd log: $DOCKERD_LOG)"
log "image $IMAGE runs"

# 5. Playwright (playwright-core only: it drives Debian's chromium and
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

# 6. The real Python client, under Debian's interpreter.
/usr/bin/python3 -c 'import zunclient.common.websocketclient.websocketclient, websocket' ||
	die "python3-zunclient is not importable by /usr/bin/python3"
log "python3-zunclient ready"
log "all ready in ${SECONDS}s"
