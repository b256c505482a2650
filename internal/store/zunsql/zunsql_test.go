package zunsql

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/store"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// These tests run against a real MariaDB holding Zun's real schema.

func TestLookups(t *testing.T) {
	z := testenv.NewZunDB(t, "zunsql")
	dockerID := strings.Repeat("ab", 32) // Docker ids are 64 characters
	web := z.InsertContainer(t, testenv.Container{Name: "web", DockerID: dockerID, Token: testenv.NewUUID()})
	twin1 := z.InsertContainer(t, testenv.Container{Name: "twin", DockerID: "1"})
	twin2 := z.InsertContainer(t, testenv.Container{Name: "twin", DockerID: "2"})
	z.InsertExec(t, web.ID, "exec1", "etok", "tcp://127.0.0.1:2375")
	z.InsertExec(t, twin2.ID, "exec2", "etok2", "tcp://127.0.0.2:2375")
	// A capsule (container_type 1) is never a console target.
	capsule := testenv.NewUUID()
	if _, err := z.Exec(`INSERT INTO container (uuid, name, container_type, websocket_token) VALUES (?, 'pod', 1, 'x')`, capsule); err != nil {
		t.Fatal(err)
	}

	db, err := Open(z.DSN(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()

	c, err := db.ContainerByUUID(ctx, web.UUID)
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != web.ID || c.ContainerID != dockerID || c.WebsocketToken != web.Token || c.WebsocketURL != testenv.AttachURL(dockerID) || c.Name != "web" || c.Host != "compute-1" {
		t.Fatalf("by uuid: %+v", c)
	}
	if c.UpdatedAt.IsZero() {
		t.Error("updated_at not read")
	}
	if c, err := db.ContainerByUUID(ctx, strings.ToUpper(web.UUID)); err != nil || c.ID != web.ID {
		t.Errorf("upper-case uuid: %+v %v", c, err)
	}
	if cs, err := db.ContainersByName(ctx, "web"); err != nil || len(cs) != 1 || cs[0].ID != web.ID {
		t.Errorf("by name: %+v %v", cs, err)
	}
	if cs, err := db.ContainersByName(ctx, "twin"); err != nil || len(cs) != 2 || cs[0].ID != twin1.ID || cs[1].ID != twin2.ID {
		t.Errorf("twin: %+v %v", cs, err)
	}
	if _, err := db.ContainersByName(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("nobody: %v", err)
	}
	if _, err := db.ContainerByUUID(ctx, capsule); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("capsule: %v", err)
	}
	if _, err := db.ContainersByName(ctx, "pod"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("capsule by name: %v", err)
	}
	es, err := db.ExecInstances(ctx, []int64{web.ID}, "exec1")
	if err != nil || len(es) != 1 || es[0].Token != "etok" || es[0].URL != "tcp://127.0.0.1:2375" || es[0].ExecID != "exec1" || es[0].ContainerID != web.ID {
		t.Errorf("exec: %+v %v", es, err)
	}
	if es, err := db.ExecInstances(ctx, []int64{twin1.ID, twin2.ID}, "exec2"); err != nil || len(es) != 1 || es[0].ContainerID != twin2.ID || es[0].Token != "etok2" {
		t.Errorf("exec of one of two containers: %+v %v", es, err)
	}
	if _, err := db.ExecInstances(ctx, []int64{twin1.ID}, "exec1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("exec of another container: %v", err)
	}
	if _, err := db.ExecInstances(ctx, nil, "exec1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("exec of no container: %v", err)
	}
}

func TestDatabaseDown(t *testing.T) {
	// Nothing listens on port 1 of loopback.
	db, err := Open("zun:x@tcp(127.0.0.1:1)/zun", Options{QueryTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	start := time.Now()
	_, err = db.ContainersByName(context.Background(), "web")
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("got %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v", d)
	}
	if err := db.Ping(context.Background()); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("ping: %v", err)
	}
}

// Single-use tokens: one conditional UPDATE, case-sensitive, wins once.
func TestConsumeTokens(t *testing.T) {
	z := testenv.NewZunDB(t, "consume")
	c := z.InsertContainer(t, testenv.Container{Name: "web", DockerID: "abc", Token: "Tok-1"})
	z.InsertExec(t, c.ID, "e1", "etok", "tcp://127.0.0.1:2375")
	db, err := Open(z.DSN(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if ok, err := db.ConsumeAttachToken(ctx, c.ID, "tok-1"); ok || err != nil {
		t.Fatalf("a differently cased token consumed: %v %v", ok, err)
	}
	for i, want := range []bool{true, false} {
		if ok, err := db.ConsumeAttachToken(ctx, c.ID, "Tok-1"); ok != want || err != nil {
			t.Fatalf("attach consume #%d: %v %v", i+1, ok, err)
		}
		if ok, err := db.ConsumeExecToken(ctx, c.ID, "e1", "etok"); ok != want || err != nil {
			t.Fatalf("exec consume #%d: %v %v", i+1, ok, err)
		}
	}
	got, _ := db.ContainerByUUID(ctx, c.UUID)
	if got.WebsocketToken != "" {
		t.Fatalf("token still stored: %q", got.WebsocketToken)
	}
	es, _ := db.ExecInstances(ctx, []int64{c.ID}, "e1")
	if len(es) != 1 || es[0].Token != "" || es[0].UpdatedAt.IsZero() {
		t.Fatalf("exec after consume: %+v", es)
	}
}

// A database that stops answering, with connections open to it and a
// context that never ends, still fails a lookup within the query timeout
// (its reads are bounded), and lookups beyond the pool's size wait no
// longer than that for a connection.
func TestDatabaseStalls(t *testing.T) {
	z := testenv.NewZunDB(t, "stall")
	fwd := testenv.NewForwarder(t, testenv.MySQLAddr)
	const timeout = time.Second
	db, err := Open(strings.Replace(z.DSN(), testenv.MySQLAddr, fwd.Addr, 1), Options{QueryTimeout: timeout, MaxOpen: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ContainersByName(context.Background(), "web"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("before the stall: %v", err)
	}
	fwd.Freeze()
	defer fwd.Restore()
	start := time.Now()
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			_, err := db.ContainersByName(context.Background(), "web")
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("stalled lookup: %v, want ErrUnavailable", err)
		}
	}
	// Two at a time: the first two time out reading, the others waiting
	// for a slot, each within the timeout; 2 s more for a busy machine.
	if took := time.Since(start); took > timeout+2*time.Second {
		t.Errorf("4 lookups on a stalled database took %v, want about %v", took, timeout)
	}
}

// A database that answers a byte at a time, each byte well within the
// read timeout, still ends a lookup at the query timeout: the bound is
// the lookup's, not each read's.
func TestDatabaseTrickles(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	addr := testenv.ServeTCP(t, func(c net.Conn) {
		// A MySQL packet header announcing a 64 KiB greeting, then its
		// bytes one at a time.
		if _, err := c.Write([]byte{0xff, 0xff, 0x00, 0x00}); err != nil {
			return
		}
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := c.Write([]byte{10}); err != nil {
					return
				}
			}
		}
	})
	const timeout = time.Second
	db, err := Open("zun:zun@tcp("+addr+")/zun", Options{QueryTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	start := time.Now()
	_, err = db.ContainersByName(context.Background(), "web")
	took := time.Since(start)
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("lookup on a trickling database: %v, want ErrUnavailable", err)
	}
	// 2 s more for a busy machine.
	if took > timeout+2*time.Second {
		t.Errorf("lookup on a trickling database took %v, want about %v", took, timeout)
	}
}

// Lookups at once beyond what oslo.db's pool keeps (max_pool_size 5)
// reuse the connections they opened instead of opening one for every few
// lookups: each open is a MariaDB handshake and authentication.
func TestPoolKeepsConnectionsInUse(t *testing.T) {
	z := testenv.NewZunDB(t, "zunsql")
	web := z.InsertContainer(t, testenv.Container{Name: "web", DockerID: "1", Token: testenv.NewUUID()})
	const atOnce, rounds = 8, 50
	db, err := Open(z.DSN(), Options{MaxOpen: 55})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	for r := 0; r < rounds; r++ {
		errs := make(chan error, atOnce)
		for i := 0; i < atOnce; i++ {
			go func() {
				_, err := db.ContainerByUUID(ctx, web.UUID)
				errs <- err
			}()
		}
		for i := 0; i < atOnce; i++ {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	}
	st := db.Stats()
	if st.MaxIdleClosed != 0 || st.OpenConnections > atOnce {
		t.Fatalf("%d lookups, %d at once: %d connections closed as surplus idle ones, %d open (want 0 closed, at most %d open)",
			atOnce*rounds, atOnce, st.MaxIdleClosed, st.OpenConnections, atOnce)
	}
}
