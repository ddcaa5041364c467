package e2e

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/udpprobe/udpprobe/internal/metrics"
	"github.com/udpprobe/udpprobe/internal/receiver"
	"github.com/udpprobe/udpprobe/internal/sender"
	"github.com/udpprobe/udpprobe/internal/testkit/scrape"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// The crowd of TestCrowdDropsStayLocal: new names, each one datagram,
// sent in waves as fast as one socket sends them, into a receiver whose
// socket holds crowdBuffer bytes and whose table admits the most peers
// configuration allows, so that admitting them is as slow as it gets.
const (
	crowdNames  = 8000
	crowdWaves  = 4
	crowdBuffer = 64 << 10
	crowdPeers  = 2000
)

// TestCrowdDropsStayLocal: a steady stream on lossless loopback shares a
// small socket buffer with a crowd of new senders arriving faster than the
// receiver admits them, so the socket drops datagrams of both. Every
// number of the stream that went missing was dropped by this host's
// socket, and must be counted so: lost 0, received + dropped locally =
// sent. The crowd's own drops, which no gap claims, go nowhere.
func TestCrowdDropsStayLocal(t *testing.T) {
	h := startReceiverWith(t, receiver.Options{ReceiveBuffer: crowdBuffer, MaxPeers: crowdPeers, Logger: zap.NewNop()})
	reg := prometheus.NewPedanticRegistry()
	probe, err := sender.New(sender.Options{
		Targets: []string{h.rcv.Addr().String()}, Name: "steady", Rate: 5000, PayloadSize: 124,
		LossTimeout: lossTimeout, Logger: zap.NewNop(), Metrics: metrics.NewSender(reg, "steady", metrics.ClassicAndNative),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- probe.Run(ctx) }()
	waitUntil(t, "the steady stream is counted", func() bool { return h.counts("steady").received > 0 })

	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(h.rcv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	b := make([]byte, 124)
	for wave := range crowdWaves {
		for i := range crowdNames / crowdWaves {
			hd := wire.Header{Name: fmt.Appendf(nil, "crowd-%04d", wave*crowdNames/crowdWaves+i), Target: []byte("x"),
				Session: 1, SendTime: time.Now().UnixNano()}
			if err := wire.Encode(b, &hd); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Write(b); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(100 * time.Millisecond) // the steady stream alone for a while
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s, err := scrape.Gather(reg)
	if err != nil {
		t.Fatal(err)
	}
	sent, _ := s.Sum("udpprobe_sender_packets_sent_total")
	got := h.waitFor("steady", uint64(sent))
	local := got.droppedLocally
	drops := uint64(testutil.ToFloat64(h.m.SocketDrops))
	t.Logf("sent %v; received %d, dropped locally %d, lost %d; the socket dropped %d in all", sent, got.received, local, got.lost, drops)
	if got.received >= uint64(sent) {
		t.Fatalf("the socket dropped none of the steady stream's datagrams (%d in all): the crowd tested nothing", drops)
	}
	if got.lost != 0 || got.received+local != uint64(sent) || got.late != 0 || got.duplicated != 0 {
		t.Errorf("steady stream: %d lost, %d received + %d dropped locally of %v sent, %d late, %d duplicated; "+
			"want 0 lost and every datagram received or dropped locally", got.lost, got.received, local, sent, got.late, got.duplicated)
	}
}
