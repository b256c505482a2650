package testenv

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The tests' servers are out of reach of the machine's users: the tests
// run in a network namespace of their own, the machine's network has no
// Docker API without authentication, the TLS engine's keys are root's
// alone, and the tests' database user can touch only the tests' databases.
func TestEnvironmentIsContained(t *testing.T) {
	own, err := os.Stat("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	ns, err := os.Stat(Netns)
	if err != nil {
		t.Fatalf("%v: %s", err, setupHint)
	}
	if !os.SameFile(own, ns) {
		t.Fatalf("the tests do not run in the network namespace %s: %s", Netns, setupHint)
	}
	// /proc/1/net/tcp lists the sockets of the machine's namespace (PID 1's).
	for _, table := range []string{"/proc/1/net/tcp", "/proc/1/net/tcp6"} {
		data, err := os.ReadFile(table)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 3 && f[3] == "0A" && strings.HasSuffix(f[1], fmt.Sprintf(":%04X", 2375)) { // 0A: LISTEN
				t.Errorf("something listens on %s port 2375 of the machine's network (an unauthenticated Docker API?): %s", table, line)
			}
		}
	}
	for _, key := range []string{"key.pem", "server-key.pem", "ca-key.pem"} {
		fi, err := os.Stat(filepath.Join(DockerTLSDir, key))
		if err != nil {
			t.Fatalf("%v: %s", err, setupHint)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s is mode %v: others can read the key", key, fi.Mode().Perm())
		}
	}
	db, err := sql.Open("mysql", shared.dsn(""))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Ping(); err != nil {
		t.Fatalf("MariaDB at %s: %v: %s", MySQLAddr, err, setupHint)
	}
	if _, err := db.Exec("CREATE DATABASE outside_the_tests"); err == nil {
		db.Exec("DROP DATABASE outside_the_tests")
		t.Errorf("%s may create a database outside zun_*", MySQLUser)
	}
	if _, err := db.Exec("SELECT COUNT(*) FROM mysql.user"); err == nil {
		t.Errorf("%s may read mysql.user", MySQLUser)
	}
}
