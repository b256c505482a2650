//go:build linux && (mips || mipsle || mips64 || mips64le)

package epoll

// sysEpollPwait2 is not used on MIPS (its tables number calls apart):
// WaitFor answers ENOSYS, and loops wait as without the call.
const sysEpollPwait2 = -1
