package zunsql

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/store"
	"github.com/zun-wsproxy/zun-wsproxy/internal/testenv"
)

// Lookups at once, of many containers, of one, of upper-case uuids and of
// none, each get their own container, and fewer queries answer them.
func TestLookupsByUUIDShareQueries(t *testing.T) {
	z := testenv.NewZunDB(t, "zunsql")
	var cs []testenv.Container
	for i := 0; i < 20; i++ {
		cs = append(cs, z.InsertContainer(t, testenv.Container{Name: "c", DockerID: strings.Repeat("0", i+1), Token: testenv.NewUUID()}))
	}
	db, err := Open(z.DSN(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	const workers, rounds = 16, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				switch i := (w*rounds + r) % (len(cs) + 2); {
				case i == len(cs): // no such container
					if _, err := db.ContainerByUUID(ctx, testenv.NewUUID()); !errors.Is(err, store.ErrNotFound) {
						errs <- errors.New("unknown uuid: " + errString(err))
						return
					}
				case i == len(cs)+1: // the same one as many others
					if c, err := db.ContainerByUUID(ctx, cs[0].UUID); err != nil || c.ID != cs[0].ID {
						errs <- errors.New("first container: " + errString(err))
						return
					}
				default:
					want := cs[i]
					uuid := want.UUID
					if r%2 == 1 {
						uuid = strings.ToUpper(uuid)
					}
					c, err := db.ContainerByUUID(ctx, uuid)
					if err != nil || c.ID != want.ID || c.WebsocketToken != want.Token || c.ContainerID != want.DockerID {
						errs <- errors.New("container " + uuid + ": got " + c.UUID + " " + errString(err))
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	lookups, queries := db.BatchedLookups()
	t.Logf("%d lookups, %d queries", lookups, queries)
	if lookups != workers*rounds || queries >= lookups {
		t.Errorf("%d lookups answered by %d queries: want %d lookups and fewer queries", lookups, queries, workers*rounds)
	}
}

// A lookup begun after a token was rotated reads the new token, however
// many lookups of the container are under way: none joins a query sent
// before it began.
func TestLookupAfterRotationReadsNewToken(t *testing.T) {
	z := testenv.NewZunDB(t, "zunsql")
	c := z.InsertContainer(t, testenv.Container{Name: "web", DockerID: "1", Token: testenv.NewUUID()})
	db, err := Open(z.DSN(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ { // lookups all the time, so that batches form
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				db.ContainerByUUID(ctx, c.UUID)
			}
		}()
	}
	defer func() { cancel(); wg.Wait() }()
	for i := 0; i < 100; i++ {
		token := testenv.NewUUID()
		if _, err := z.Exec(`UPDATE container SET websocket_token = ? WHERE id = ?`, token, c.ID); err != nil {
			t.Fatal(err)
		}
		got, err := db.ContainerByUUID(context.Background(), c.UUID)
		if err != nil {
			t.Fatal(err)
		}
		if got.WebsocketToken != token {
			t.Fatalf("rotation %d: lookup after it read the token before it", i)
		}
	}
	if lookups, queries := db.BatchedLookups(); queries >= lookups {
		t.Errorf("%d lookups, %d queries: no batch formed, so the test showed nothing", lookups, queries)
	}
}

// forwardedDB opens a store on a container's database through a
// Forwarder, with a query timeout of 10 s, and makes one lookup (so that
// one connection is open). The Forwarder is restored before the store is
// closed, which waits for the queries under way.
func forwardedDB(t *testing.T) (testenv.Container, *testenv.Forwarder, *DB) {
	t.Helper()
	z := testenv.NewZunDB(t, "zunsql")
	c := z.InsertContainer(t, testenv.Container{Name: "web", DockerID: "1", Token: testenv.NewUUID()})
	fwd := testenv.NewForwarder(t, testenv.MySQLAddr)
	db, err := Open(strings.Replace(z.DSN(), testenv.MySQLAddr, fwd.Addr, 1), Options{QueryTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	t.Cleanup(fwd.Restore)
	if _, err := db.ContainerByUUID(context.Background(), c.UUID); err != nil {
		t.Fatal(err)
	}
	return c, fwd, db
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

// A lookup gathered behind a query that does not come back is sent on
// its own after maxGatherWait: one stuck query does not hold up every
// lookup behind it until the query timeout.
func TestLookupNotHeldByStuckQuery(t *testing.T) {
	c, fwd, db := forwardedDB(t)
	ctx := context.Background()
	fwd.FreezeOpen() // that connection stops answering; new ones work
	defer fwd.Restore()
	stuck := make(chan error, 1)
	go func() { _, err := db.ContainerByUUID(ctx, c.UUID); stuck <- err }()
	for lookups, _ := db.BatchedLookups(); lookups < 2; lookups, _ = db.BatchedLookups() {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // the query is written and waits
	start := time.Now()
	got, err := db.ContainerByUUID(ctx, c.UUID)
	took := time.Since(start)
	if err != nil || got.ID != c.ID {
		t.Fatalf("lookup behind a stuck one: %+v %v", got, err)
	}
	select {
	case err := <-stuck:
		t.Fatalf("the stuck lookup returned first (%v): the test showed nothing", err)
	default:
	}
	// maxGatherWait and a new connection's handshake; 2 s more for a
	// busy machine, far below the query timeout.
	if took > maxGatherWait+2*time.Second {
		t.Errorf("lookup behind a stuck one took %v, want about %v", took, maxGatherWait)
	}
	t.Logf("lookup behind a stuck one: %v", took)
}

// Lookups gathered behind a stuck query, the first of them included, give
// up when their own contexts end (a client gone, a handshake's deadline),
// not at the query timeout.
func TestGatheredLookupsLeaveOnTheirContext(t *testing.T) {
	c, fwd, db := forwardedDB(t)
	fwd.Freeze() // every connection, new ones too
	go db.ContainerByUUID(context.Background(), c.UUID)
	for lookups, _ := db.BatchedLookups(); lookups < 2; lookups, _ = db.BatchedLookups() {
		time.Sleep(time.Millisecond)
	}
	const deadline = 100 * time.Millisecond
	errs := make(chan error, 3)
	start := time.Now()
	for i := 0; i < 3; i++ { // the first gathers, the others join it
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			_, err := db.ContainerByUUID(ctx, c.UUID)
			errs <- err
		}()
	}
	for i := 0; i < 3; i++ {
		if err := <-errs; !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("lookup behind a stuck query, its context ended: %v, want ErrUnavailable and DeadlineExceeded", err)
		}
	}
	// 2 s more for a busy machine, far below the query timeout.
	if took := time.Since(start); took > deadline+2*time.Second {
		t.Errorf("lookups behind a stuck query took %v to leave, want about %v", took, deadline)
	}
}
