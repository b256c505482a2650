# Shell helpers shared by scripts/test-env.sh and scripts/demo.sh.

# SUDO runs a command as root: empty when already root.
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || { echo "needs root, or sudo" >&2; exit 1; }
	SUDO="sudo"
fi

# build_busybox_image IMAGE [DOCKER-IMPORT-OPTIONS...] imports a small
# image from Debian's busybox-static (/bin/busybox and a link per applet),
# with no registry involved.
build_busybox_image() {
	local image=$1 rootfs
	shift
	rootfs=$(mktemp -d)
	mkdir -p "$rootfs"/{bin,etc,tmp,root,dev,proc,sys}
	chmod 1777 "$rootfs/tmp"
	cp /bin/busybox "$rootfs/bin/busybox"
	for applet in $(/bin/busybox --list); do
		[ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
	done
	printf 'root:x:0:0:root:/root:/bin/sh\n' >"$rootfs/etc/passwd"
	printf 'root:x:0:\n' >"$rootfs/etc/group"
	tar -C "$rootfs" -c . | $SUDO env ${DOCKER_HOST:+DOCKER_HOST="$DOCKER_HOST"} docker import -c 'CMD ["/bin/sh"]' -c 'ENV PATH=/bin' "$@" - "$image" >/dev/null
	rm -rf "$rootfs"
}

# apt_install PACKAGE... installs from Debian's archive what is not
# installed yet. Package scripts must not start services (there may be no
# init system, and what runs must listen on loopback only): the callers
# start what they need themselves.
apt_install() {
	local p missing=() policy_added=""
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -gt 0 ] || return 0
	echo "installing ${missing[*]} (Debian packages)"
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
		$SUDO chmod +x /usr/sbin/policy-rc.d
		policy_added=1
	fi
	# The policy goes whether apt succeeds or not: left behind, it would
	# keep every later package from (re)starting its service.
	local rc=0
	{ $SUDO apt-get update -qq &&
		$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } || rc=$?
	[ -z "$policy_added" ] || $SUDO rm -f /usr/sbin/policy-rc.d
	return "$rc"
}

# The tests' network namespace (scripts/test-env.sh makes it) and the
# directory of its servers' sockets, pid files and state.
TEST_NS=zun-wsproxy-test
RUN_DIR=/run/zun-wsproxy-test

# in_ns CMD... runs CMD in the tests' network namespace (nsenter: only the
# network is entered; ip netns exec would also remount /sys and hide the
# cgroups dockerd needs).
in_ns() { $SUDO nsenter --net="/run/netns/$TEST_NS" "$@"; }

# wait_port PORT [TRIES] waits until something accepts connections on
# 127.0.0.1:PORT, trying every 0.1 s (50 tries by default); it fails if
# nothing did.
wait_port() {
	local i
	for i in $(seq 1 "${2:-50}"); do
		(exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}
