package channel_test

import (
	"bytes"
	"context"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/internal/hostileguest"
)

// hostileSession connects a host Client to a fake guest: an agent-like
// yamux server (for well-behaved fetches) on a socket pair whose raw end
// the test also writes frames to, as a guest's root can with the agent's
// descriptor. Raw frames are written only while the server is idle, as in
// the VM.
func hostileSession(t *testing.T) (*channel.Client, *yamux.Session, net.Conn) {
	t.Helper()
	host, guest := channel.SocketPair(t)
	sessc := make(chan *yamux.Session, 1)
	go func() {
		if channel.GuestHandshake(guest) != nil {
			close(sessc)
			return
		}
		sess, err := yamux.Server(guest, channel.YamuxConfig())
		if err != nil {
			close(sessc)
			return
		}
		sessc <- sess
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := channel.Connect(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	sess := <-sessc
	if sess == nil {
		t.Fatal("guest handshake failed")
	}
	t.Cleanup(func() { c.Close(); sess.Close() })
	return c, sess, guest
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// A guest that opens thousands of streams, each announcing a megabyte and
// sending a window's worth of it, makes the host hold a bounded amount:
// streams beyond the backlog are reset, the served ones hold only the
// bytes that arrived, and none outlives its first-frame deadline.
func TestHostileStreamFloodBounded(t *testing.T) {
	defer channel.SetGuestTimeouts(500*time.Millisecond, 31*time.Second)() // the real close wait: slots turn over slowly
	c, _, raw := hostileSession(t)
	c.SetFetchHandler(func(ctx context.Context, name string) ([]byte, func(), error) {
		return []byte("v"), func() {}, nil
	})
	before, gBefore := heapInUse(), runtime.NumGoroutine()
	const streams = 1000
	var peak uint64
	sent := int64(0)
	for i := 0; i < streams; i += 100 {
		n, err := hostileguest.Flood(raw, 1<<20+2*uint32(i), 100, hostileguest.Window)
		sent += n
		if err != nil {
			t.Fatalf("flood: %v after %d bytes", err, sent)
		}
		peak = max(peak, heapInUse())
	}
	growth := int64(peak) - int64(before)
	t.Logf("sent %d MB on %d streams announcing %d MB: host heap grew by at most %.1f MiB, %d goroutines more",
		sent>>20, streams, streams*channel.MaxFrame>>20, float64(growth)/(1<<20), runtime.NumGoroutine()-gBefore)
	// Backlog + served streams, a 256 KiB window each, plus slack for the
	// runtime: far below the 256 MB sent (or the GB announced).
	const ceiling = 40 << 20
	if growth > ceiling {
		t.Errorf("host heap grew by %d MiB under the flood, more than %d MiB", growth>>20, ceiling>>20)
	}
	if g := runtime.NumGoroutine() - gBefore; g > channel.MaxGuestStreams+16 {
		t.Errorf("%d goroutines more than before the flood", g)
	}
}

// Streams that never send their first frame lose their slot at the
// deadline, and a guest that never closes its ends gets it back after the
// close wait: a well-behaved fetch is answered again (the session itself
// survives, the frames were valid yamux).
func TestHostileSilentStreamsFreeTheirSlots(t *testing.T) {
	defer channel.SetGuestTimeouts(300*time.Millisecond, time.Second)()
	c, gsess, raw := hostileSession(t)
	want := []byte("fetched-value")
	c.SetFetchHandler(func(ctx context.Context, name string) ([]byte, func(), error) {
		return bytes.Clone(want), func() {}, nil
	})
	// Every slot and the whole backlog, and more (reset by yamux).
	if _, err := hostileguest.Flood(raw, 1<<20, 100, 0); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		v, err := channel.Fetch(gsess, "X")
		if err == nil {
			if !bytes.Equal(v, want) {
				t.Fatalf("fetched %q", v)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no fetch answered after the flood: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A stream id used twice is a protocol error that ends the session: the
// host's Closed says so (the supervisor then fails the workspace).
func TestHostileReusedStreamIDEndsSession(t *testing.T) {
	c, _, raw := hostileSession(t)
	if err := hostileguest.ReuseID(raw, 1<<20); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Closed():
	case <-time.After(10 * time.Second):
		t.Fatal("the session survived a reused stream id: the host would not notice the broken channel")
	}
}
