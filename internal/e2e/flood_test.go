package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/receiver"
	"github.com/udpprobe/udpprobe/internal/sender"
	"github.com/udpprobe/udpprobe/internal/socket"
	"github.com/udpprobe/udpprobe/internal/testkit/heaptest"
	"github.com/udpprobe/udpprobe/internal/testkit/impair"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// The flood of TestFlood: 1,000,000 hostile datagrams of every kind the
// receiver rejects, and 200,000 well-formed ones from 10,000 fake senders,
// against a receiver with room for floodPeers senders.
const (
	floodRandom     = 1_000_000
	floodWellFormed = 200_000
	floodFakes      = 10_000
	floodPeers      = 64
	// floodChunk datagrams are sent at a time, each chunk ending with a
	// too-short one that tells when the receiver has taken it all; at most
	// two chunks are in flight, well within the socket's buffer.
	floodChunk = 600
	// floodSession datagrams of a fake sender share a session.
	floodSession = 4
)

// Heap the receiver may gain under the flood, documented in
// docs/hardening.md: a fake peer with two sessions and short gap queues
// takes about 32 KB; the slack is for the rest of the test (the relay's
// record, the sender's bookkeeping).
const (
	floodHeapPerPeer = 40 << 10
	floodHeapSlack   = 1 << 20
)

// floodKind is what the receiver must make of a flood datagram.
type floodKind int

const (
	tooShort floodKind = iota
	badMagic
	badVersion
	badHeader
	badName
	badReply
	corrupted
	wellFormed
	kinds
)

// flood makes the flood's datagrams from a seeded source and tallies what
// it made.
type flood struct {
	rng   *rand.Rand
	made  [kinds]uint64
	store [][]byte // a chunk's datagrams
}

func newFlood(seed uint64) *flood {
	f := &flood{rng: rand.New(rand.NewPCG(seed, 0xf100d)), store: make([][]byte, floodChunk)}
	for i := range f.store {
		f.store[i] = make([]byte, wire.MinSize(wire.MaxNameLen, 0)+1024)
	}
	return f
}

// encode writes a valid datagram of a random size into b[:0]'s storage and
// returns it.
func (f *flood) encode(b []byte, h *wire.Header) []byte {
	b = b[:wire.MinSize(len(h.Name), len(h.Target))+f.rng.IntN(64)]
	if err := wire.Encode(b, h); err != nil {
		panic(err) // the flood's own headers are valid
	}
	return b
}

// random returns the next of the hostile datagrams, of a random kind or, if
// short is set, too short, in b's storage.
func (f *flood) random(b []byte, short bool) []byte {
	kind := floodKind(f.rng.IntN(int(corrupted) + 1))
	if short {
		kind = tooShort
	}
	f.made[kind]++
	switch kind {
	case tooShort:
		return f.fill(b[:f.rng.IntN(wire.MinDatagram)])
	case badMagic: // random bytes, the first one far from the magic
		b = f.fill(b[:wire.MinSize(1, 0)+f.rng.IntN(1000)])
		b[0] = 0
		return b
	}
	h := wire.Header{Name: []byte("intruder"), Session: f.rng.Uint64(), Seq: f.rng.Uint64N(wire.MaxSeq)}
	if kind == badReply {
		h.Flags = wire.FlagReply
	}
	b = f.encode(b, &h)
	switch kind {
	case badVersion:
		b[4] = 7 // two bits from 1 and from 2: not a bit error, another version
	case badHeader:
		b[16] |= 0x80 // a sequence number above 2^63−1
	case badName:
		b[wire.HeaderSize] = ' '
	case corrupted:
		if f.rng.IntN(2) == 0 {
			return b[:len(b)-1-f.rng.IntN(len(b)-wire.MinSize(1, 0))] // truncated
		}
		i := f.rng.IntN(len(b))
		b[i] ^= 1 << f.rng.IntN(8)
		return b
	}
	wire.Seal(b)
	return b
}

func (f *flood) fill(b []byte) []byte {
	for i := range b {
		b[i] = byte(f.rng.Uint32())
	}
	return b
}

// wellFormed returns the i-th well-formed datagram: fake sender i mod
// floodFakes, in a new session every floodSession datagrams, sessions 1, 2
// and 3 by turns (so that each new one is a restart that displaces a
// stream). A session's first two datagrams are in order, which confirms it
// (a session on probation counts nothing); the others have an in-order or
// a random sequence number.
func (f *flood) wellFormed(b []byte, i int) []byte {
	f.made[wellFormed]++
	round := uint64(i / floodFakes)
	h := wire.Header{
		Name:     fmt.Appendf(nil, "fake-%05d", i%floodFakes),
		Session:  1 + round/floodSession%3,
		Seq:      round,
		SendTime: time.Now().UnixNano(),
	}
	if round%floodSession >= 2 && f.rng.IntN(2) == 0 {
		h.Seq = f.rng.Uint64N(wire.MaxSeq + 1)
	}
	return f.encode(b, &h)
}

// TestFlood sends a real stream through the impairment relay while
// 1,200,000 hostile and fake datagrams arrive beside it, and requires the
// real stream's counts to stay exact, every hostile datagram to be counted
// under the reason it deserves, the peer table and the series to stop at
// their caps without evicting the real sender, the heap to stay within its
// documented bound and flat, and no goroutine to be left behind.
func TestFlood(t *testing.T) {
	warnings, logs := observer.New(zapcore.WarnLevel)
	h := startReceiverWith(t, receiver.Options{MaxPeers: floodPeers, Logger: zap.New(warnings)})
	relay := h.startRelay(impair.Config{Seed: 11, Drop: 0.02, Duplicate: 0.02, Corrupt: 0.01, Reorder: 0.02})

	const session = 0xf100d
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	probe, err := sender.New(sender.Options{
		Targets: []string{relay.Addr()}, Name: "real", Session: session, Rate: 200, PayloadSize: 124,
		LossTimeout: lossTimeout, Logger: zap.NewNop(), Metrics: metrics.NewSender(prometheus.NewPedanticRegistry(), "a", metrics.ClassicAndNative),
	})
	if err != nil {
		t.Fatal(err)
	}
	sent := make(chan error, 1)
	go func() { sent <- probe.Run(ctx) }()
	waitUntil(t, "the real sender is in the peer table", func() bool { return h.counts("real").received > 0 })
	seriesBefore, err := testutil.GatherAndCount(h.reg)
	if err != nil {
		t.Fatal(err)
	}
	f := newFlood(1)
	goroutines := runtime.NumGoroutine()
	heapBefore := heaptest.Live()

	var heapMid int64
	var midDelivered int
	f.send(t, h, func() {
		heapMid = heaptest.Live()
		midDelivered = len(relay.Delivered())
	})
	heapAfter := heaptest.Live()
	if n := testutil.ToFloat64(h.m.SocketDrops); n != 0 {
		t.Errorf("the socket dropped %v datagrams: the flood's pacing failed, and the counts below cannot be exact", n)
	}
	if n := runtime.NumGoroutine(); n > goroutines {
		t.Errorf("%d goroutines after the flood, %d before", n, goroutines)
	}
	// What the relay's record of the real stream may have added since.
	record := int64(2 * (len(relay.Delivered()) - midDelivered) * int(unsafe.Sizeof(impair.Delivery{})))
	stop()
	if err := <-sent; err != nil {
		t.Fatal(err)
	}

	// The real stream, exactly as the relay delivered it.
	w, relayCorrupted := impair.Truth(delivered(t, relay), session)
	got := h.waitFor("real", w.Expected)
	h.assertCounts(got, counts{
		received: w.Received, lost: w.Lost, duplicated: w.Duplicated, reordered: w.Reordered,
		goodbyes: got.goodbyes, gapCount: uint64(len(w.Gaps)), gapSum: sum(w.Gaps),
		extentCount: uint64(len(w.Extents)), extentSum: sum(w.Extents),
		corrupted: relayCorrupted + f.made[corrupted],
	})
	if w.Lost == 0 || w.Duplicated == 0 || w.Reordered == 0 || relayCorrupted == 0 {
		t.Errorf("the relay did not exercise every impairment: %+v, %d corrupted", w, relayCorrupted)
	}

	// Every hostile datagram, under its reason.
	for kind, reason := range map[floodKind]string{
		tooShort: metrics.ReasonTooShort, badMagic: metrics.ReasonMagic, badVersion: metrics.ReasonVersion,
		badHeader: metrics.ReasonHeader, badName: metrics.ReasonName, badReply: metrics.ReasonReply,
	} {
		if n := uint64(testutil.ToFloat64(h.m.Invalid.WithLabelValues(reason))); n != f.made[kind] {
			t.Errorf("invalid{reason=%q} = %d, the flood sent %d", reason, n, f.made[kind])
		}
	}
	if n := testutil.ToFloat64(h.m.Invalid.WithLabelValues(metrics.ReasonAuth)); n != 0 {
		t.Errorf("%v auth invalids without keys", n)
	}

	// The table: the real sender and the first fakes, the rest overflow;
	// each admitted fake counted every datagram once and restarted with
	// each session after its first.
	admitted := uint64(floodPeers - 1)
	perFake := uint64(floodWellFormed / floodFakes)
	if n := h.sample("peers", ""); n != floodPeers {
		t.Errorf("%v peers, want the cap, %d", n, floodPeers)
	}
	if n := uint64(testutil.ToFloat64(h.m.PeerOverflow)); n != floodWellFormed-admitted*perFake {
		t.Errorf("%d overflow, want %d", n, floodWellFormed-admitted*perFake)
	}
	var outcomes, restarts, strays uint64
	for i := range admitted {
		name := fmt.Sprintf("fake-%05d", i)
		c := h.counts(name)
		stray := uint64(h.sample("packets_stray_total", name))
		outcomes += c.received + c.duplicated + c.late + stray
		restarts += c.restarts
		strays += stray
	}
	if outcomes != admitted*perFake || restarts != admitted*(perFake/floodSession-1) {
		t.Errorf("admitted fakes: %d datagrams with an outcome, %d restarts; want %d and %d",
			outcomes, restarts, admitted*perFake, admitted*(perFake/floodSession-1))
	}
	if strays == 0 {
		t.Error("the fakes' random sequence numbers made no strays")
	}
	seriesAfter, err := testutil.GatherAndCount(h.reg)
	if err != nil {
		t.Fatal(err)
	}
	const perPeer = 20
	if seriesAfter != seriesBefore+int(admitted)*perPeer {
		t.Errorf("%d series after the flood, %d before: want %d more for each of %d fakes",
			seriesAfter, seriesBefore, perPeer, admitted)
	}

	// Memory: within the bound, and flat over the second half of the flood
	// but for the relay's record of the real stream.
	grown := heapAfter - heapBefore
	bound := int64(admitted)*floodHeapPerPeer + floodHeapSlack
	t.Logf("heap: %d B before the flood, %d B halfway, %d B after: %d B more, %.1f KB per admitted fake; bound %d B",
		heapBefore, heapMid, heapAfter, grown, float64(grown)/float64(admitted)/1e3, bound)
	t.Logf("real stream: %d received, %d lost in %d gaps, %d duplicated, %d reordered, %d corrupted; %d strays among the fakes",
		w.Received, w.Lost, len(w.Gaps), w.Duplicated, w.Reordered, relayCorrupted, strays)
	if grown > bound {
		t.Errorf("the heap grew by %d B under the flood, over the documented %d B", grown, bound)
	}
	if late := heapAfter - heapMid; late > 256<<10+record {
		t.Errorf("the heap grew by %d B over the second half of the flood", late)
	}
	if !hasWarning(logs, "the peer table is full") {
		t.Errorf("no warning about the full peer table; warnings: %v", logs.All())
	}
}

// send sends the flood to h's receiver, paced by what it has taken, and
// calls half halfway through.
func (f *flood) send(t *testing.T, h *harness, half func()) {
	t.Helper()
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(h.rcv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	w, err := socket.NewWriter(conn, 64)
	if err != nil {
		t.Fatal(err)
	}
	tooShortSeen := h.m.Invalid.WithLabelValues(metrics.ReasonTooShort)
	const total = floodRandom + floodWellFormed
	const perWellFormed = total / floodWellFormed // 6: one well-formed, then five hostile
	var shortBefore [2]uint64                     // too-short datagrams sent up to the end of the last two chunks
	bufs := make([][]byte, 0, floodChunk)
	for start := 0; start < total; start += floodChunk {
		bufs = bufs[:0]
		for i := start; i < min(start+floodChunk, total); i++ {
			b := f.store[i-start]
			if i%perWellFormed == 0 {
				bufs = append(bufs, f.wellFormed(b, i/perWellFormed))
				continue
			}
			bufs = append(bufs, f.random(b, i == start+floodChunk-1 || i == total-1))
		}
		if start == total/2 {
			half()
		}
		// The chunk before last must have been taken before this one goes.
		waitUntil(t, "the receiver takes the flood", func() bool {
			return uint64(testutil.ToFloat64(tooShortSeen)) >= shortBefore[0]
		})
		for sent := 0; sent < len(bufs); {
			n, err := w.Write(bufs[sent:], nil)
			if err != nil {
				t.Fatalf("flood: %v", err)
			}
			sent += n
		}
		shortBefore[0], shortBefore[1] = shortBefore[1], f.made[tooShort]
	}
	waitUntil(t, "the receiver takes the flood", func() bool {
		return uint64(testutil.ToFloat64(tooShortSeen)) >= f.made[tooShort]
	})
}

func hasWarning(logs *observer.ObservedLogs, snippet string) bool {
	for _, e := range logs.All() {
		if strings.Contains(e.Message, snippet) {
			return true
		}
	}
	return false
}
