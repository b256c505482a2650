package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// smallFSEnv names, in the child, the test that runs on the small file
// system.
const smallFSEnv = "ZUN_WSPROXY_TEST_SMALLFS"

// OnSmallFS runs f with dir on a tmpfs of size bytes, so that a test can
// fill a file system and free it again. The tmpfs is mounted in a mount
// namespace of its own, in a child process running this test alone (the
// test binary again); t passes or fails with it. Needs root (the test
// environment's), and fails if the mount cannot be made.
func OnSmallFS(t *testing.T, size int, f func(t *testing.T, dir string)) {
	t.Helper()
	if os.Getenv(smallFSEnv) == t.Name() {
		dir := t.TempDir()
		if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
			t.Fatalf("mount a tmpfs of %d bytes on %s: %v", size, dir, err)
		}
		t.Cleanup(func() { syscall.Unmount(dir, 0) })
		f(t, dir)
		return
	}
	var run []string
	for _, part := range strings.Split(t.Name(), "/") {
		run = append(run, "^"+regexp.QuoteMeta(part)+"$")
	}
	cmd := exec.Command(os.Args[0], "-test.run="+strings.Join(run, "/"), "-test.count=1", "-test.v", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), smallFSEnv+"="+t.Name())
	// Go makes the new namespace's mounts private, so the tmpfs is seen
	// by the child alone.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s on a small file system: %v\n%s", t.Name(), err, out)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()+" ") {
		t.Fatalf("%s did not run on the small file system:\n%s", t.Name(), out)
	}
	t.Logf("on a %d-byte tmpfs:\n%s", size, out)
}
