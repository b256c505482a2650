//go:build linux && !(mips || mipsle || mips64 || mips64le)

package epoll

// sysEpollPwait2 is epoll_pwait2's number (Linux 5.11), 441 on the
// tables Go's Linux platforms share; MIPS numbers its calls apart.
const sysEpollPwait2 = 441
