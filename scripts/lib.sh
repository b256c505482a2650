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
	tar -C "$rootfs" -c . | $SUDO docker import -c 'CMD ["/bin/sh"]' -c 'ENV PATH=/bin' "$@" - "$image" >/dev/null
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
	$SUDO apt-get update -qq
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	[ -z "$policy_added" ] || $SUDO rm -f /usr/sbin/policy-rc.d
}

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
