package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/udpprobe/udpprobe/internal/receiver"
	"github.com/udpprobe/udpprobe/internal/sender"
	"github.com/udpprobe/udpprobe/internal/testkit/scrape"
	"github.com/udpprobe/udpprobe/internal/testkit/testproc"
)

// stampRun is what testdata/stamp_sender.py printed.
type stampRun struct {
	Sent []struct {
		Seq uint32 `json:"seq"`
		TS  uint64 `json:"ts"`
		Len int    `json:"len"`
	} `json:"sent"`
	Replies []struct {
		Seq       uint32 `json:"seq"`
		TS        uint64 `json:"ts"`
		SSID      uint16 `json:"ssid"`
		TSRx      uint64 `json:"ts_rx"`
		SeqSender uint32 `json:"seq_sender"`
		TSSender  uint64 `json:"ts_sender"`
		TTL       uint8  `json:"ttl"`
		HMACOK    *bool  `json:"hmac_ok"`
		Len       int    `json:"len"`
		Arrived   uint64 `json:"arrived"`
		TLVs      []struct {
			Flags uint8  `json:"flags"`
			Type  uint8  `json:"type"`
			Value string `json:"value"`
		} `json:"tlvs"`
	} `json:"replies"`
}

// TestSTAMPReflectorAgainstScapy: scapy's Session-Sender sends 200 test
// packets to the reflector, skipping 7 of the sequence numbers, in both
// modes over IPv4 and unauthenticated over IPv6. Every packet it sent is answered: the replies are numbered by the
// reflector from 0 with no gap (stateful), each answers the packet it
// names with that packet's timestamp, the TTL it arrived with (64 on
// loopback) and the TLVs back, as long as the probe, Class of Service
// filled in with the DSCP 10 and ECN 1 the probes were sent with, and its
// timestamps bracket the reflector's time (sent ≤ received ≤ replied ≤
// arrived back, on one host's clock). The reflector counts the 193 received
// and the 7 lost, exactly.
func TestSTAMPReflectorAgainstScapy(t *testing.T) {
	py := testproc.RequirePython(t, "scapy.contrib.stamp", "python3-scapy") // a STAMP peer sharing no code with udpprobe
	key := "a STAMP key for the e2e test"
	dir := t.TempDir()
	keyFile := dir + "/key"
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const count = 200
	skip := "3,4,50,51,52,120,198" // not the last: nothing after it would reveal it
	for _, c := range []struct{ mode, listen string }{
		{"unauthenticated", "127.0.0.1:0"}, {"authenticated", "127.0.0.1:0"}, {"unauthenticated", "[::1]:0"},
	} {
		mode := c.mode
		t.Run(mode+" "+c.listen, func(t *testing.T) {
			o := receiver.Options{STAMPListenAddress: c.listen}
			args := []string{"testdata/stamp_sender.py", "", "", "17", fmt.Sprint(count), skip}
			if mode == "authenticated" {
				o.STAMPKeys = [][]byte{[]byte(key)}
				args = append(args, key)
			}
			h := startReceiverWith(t, o)
			addr := h.rcv.STAMPAddr()
			args[1], args[2] = addr.Addr().String(), fmt.Sprint(addr.Port())
			cmd := exec.Command(py, args...)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("stamp_sender.py: %v\n%s", err, stderr.String())
			}
			var run stampRun
			if err := json.Unmarshal(out, &run); err != nil {
				t.Fatal(err)
			}
			if len(run.Sent) != count-7 || len(run.Replies) != len(run.Sent) {
				t.Fatalf("sent %d, replies %d: want %d of each", len(run.Sent), len(run.Replies), count-7)
			}
			byseq := map[uint32]int{}
			for i, s := range run.Sent {
				byseq[s.Seq] = i
			}
			for i, r := range run.Replies {
				j, ok := byseq[r.SeqSender]
				if !ok {
					t.Fatalf("reply %d answers %d, which was never sent", i, r.SeqSender)
				}
				s := run.Sent[j]
				tlvsOK := len(r.TLVs) == 2 && r.TLVs[0].Type == 1 && r.TLVs[0].Flags == 0 &&
					r.TLVs[1].Type == 4 && r.TLVs[1].Flags == 0 && r.TLVs[1].Value == "b8a40000" // DSCP1 46; DSCP2 10, ECN 1 as received
				if r.Seq != uint32(i) || r.SSID != 17 || r.TSSender != s.TS || r.TTL != 64 || r.Len != s.Len ||
					!(s.TS <= r.TSRx && r.TSRx <= r.TS && r.TS <= r.Arrived) || !tlvsOK ||
					mode == "authenticated" && (r.HMACOK == nil || !*r.HMACOK) {
					t.Errorf("reply %d to %d: %+v (probe %+v)", i, s.Seq, r, s)
				}
			}
			series := func(name string) float64 {
				v, _ := h.stampSample(name)
				return v
			}
			deadline := time.Now().Add(5 * time.Second)
			for series("packets_lost_total") != 7 && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond) // the loss timeout, then housekeeping
			}
			if got, lost := series("packets_received_total"), series("packets_lost_total"); got != count-7 || lost != 7 ||
				series("packets_duplicated_total") != 0 || series("packets_reordered_total") != 0 || series("replies_sent_total") != count-7 {
				t.Errorf("the reflector counted %v received and %v lost, want %d and 7", got, lost, count-7)
			}
			t.Logf("%s: scapy sent %d, got %d replies numbered 0 to %d; the reflector counted %v received, %v lost",
				mode, len(run.Sent), len(run.Replies), len(run.Replies)-1, series("packets_received_total"), series("packets_lost_total"))
		})
	}
}

// stampSample is the receiver's series name for the one STAMP session there
// is, whatever its port.
func (h *harness) stampSample(name string) (float64, bool) {
	s, err := scrape.Gather(h.reg)
	if err != nil {
		h.t.Fatal(err)
	}
	v, n := s.Sum("udpprobe_receiver_"+name, "target", "stamp:17")
	return v, n == 1
}

// TestSTAMPSenderAgainstScapy: the sender probes a stateless STAMP
// reflector made of scapy (testdata/stamp_reflector.py) that waits 30 ms
// before every reply and never answers 4 of the sequence numbers. Every
// other round trip is answered, the 4 are lost (a stateless reflector's
// replies say nothing of direction, so neither upstream nor downstream),
// and the round-trip times leave the reflector's 30 ms out: on loopback
// they average well under 10 ms. Over IPv4 and IPv6.
func TestSTAMPSenderAgainstScapy(t *testing.T) {
	py := testproc.RequirePython(t, "scapy.contrib.stamp", "python3-scapy")
	for _, address := range []string{"127.0.0.1", "::1"} {
		t.Run(address, func(t *testing.T) { stampSenderAgainstScapy(t, py, address) })
	}
}

func stampSenderAgainstScapy(t *testing.T, py, address string) {
	target := startSTAMPReflector(t, py, address, "stateless", "10,11,57,150", "", "")
	got := sendWith(t, sender.Options{Targets: []string{target}, Name: "s", Rate: 100, RoundTrip: true}, 2*time.Second)
	lost := uint64(0)
	for _, seq := range []uint64{10, 11, 57, 150} {
		if seq < got.packets {
			lost++
		}
	}
	if got.packets < 150 || got.rt.Answered != got.packets-lost || got.rt.Lost != lost ||
		got.rt.Upstream != 0 || got.rt.Downstream != 0 || got.rt.Late != 0 || got.rt.Duplicated != 0 || got.rt.Invalid != 0 {
		t.Fatalf("sent %d: %+v; want %d answered and %d lost, direction unknown", got.packets, got.rt, got.packets-lost, lost)
	}
	mean := got.rttSum / float64(got.rttN)
	if got.rttN != got.rt.Answered || mean <= 0 || mean > 0.010 {
		t.Fatalf("%d round-trip times averaging %v s: want one per answer, without the reflector's 30 ms", got.rttN, mean)
	}
	t.Logf("sent %d, answered %d, lost %d; round trips averaged %.3f ms with the reflector's 30 ms taken out",
		got.packets, got.rt.Answered, got.rt.Lost, mean*1e3)
}

// startSTAMPReflector runs testdata/stamp_reflector.py on address with the
// mode and faults given, waiting 30 ms before each reply, until the test
// ends, and returns its stamp:// target.
func startSTAMPReflector(t *testing.T, py, address, mode, drop, lose, hold string) string {
	t.Helper()
	refl := exec.Command(py, "testdata/stamp_reflector.py", mode, drop, lose, hold, "30", address)
	stdout, err := refl.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := refl.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		refl.Process.Kill()
		refl.Wait()
	})
	var port int
	if _, err := fmt.Fscan(stdout, &port); err != nil {
		t.Fatalf("the reflector's port: %v", err)
	}
	return "stamp://" + net.JoinHostPort(address, strconv.Itoa(port))
}

// TestSTAMPSenderStateful: against a stateful reflector made of scapy that
// drops 3 test packets as they arrive, numbers and then drops 4 replies,
// and holds 3 replies back so that the next overtake them, the sender
// splits the round-trip losses exactly: 3 on the way there, 4 on the way
// back. The first drop (3) comes early, so the reflector shows itself
// stateful, at the reply to 4, before any loss is decided.
func TestSTAMPSenderStateful(t *testing.T) {
	py := testproc.RequirePython(t, "scapy.contrib.stamp", "python3-scapy")
	target := startSTAMPReflector(t, py, "127.0.0.1", "stateful", "3,60,61", "20,21,90,120", "40,70,100")
	got := sendWith(t, sender.Options{Targets: []string{target}, Name: "s", Rate: 100, RoundTrip: true}, 2*time.Second)
	if got.packets < 150 || got.rt.Answered != got.packets-7 || got.rt.Lost != 7 || got.rt.Upstream != 3 ||
		got.rt.Downstream != 4 || got.rt.Late != 0 || got.rt.Duplicated != 0 || got.rt.Invalid != 0 {
		t.Fatalf("sent %d: %+v; want %d answered, 7 lost: 3 upstream, 4 downstream", got.packets, got.rt, got.packets-7)
	}
	if mean := got.rttSum / float64(got.rttN); mean <= 0 || mean > 0.010 {
		t.Fatalf("round trips average %v s: the reflector's 30 ms (45 held) are not left out", mean)
	}
	t.Logf("sent %d: answered %d, lost %d (%d upstream, %d downstream), as the reflector dropped them",
		got.packets, got.rt.Answered, got.rt.Lost, got.rt.Upstream, got.rt.Downstream)
}

// TestSTAMPAuthenticatedSender: udpprobe's sender in STAMP's
// authenticated mode against udpprobe's reflector in it: every round trip
// is answered (the reflector verifies the sender's HMAC, the sender the
// reflector's); a sender with another key gets nothing answered, and the
// reflector counts its test packets unauthenticated.
func TestSTAMPAuthenticatedSender(t *testing.T) {
	key := []byte("a STAMP key both ends share")
	h := startReceiverWith(t, receiver.Options{STAMPListenAddress: "127.0.0.1:0", STAMPKeys: [][]byte{key}})
	target := "stamp://" + h.rcv.STAMPAddr().String()
	good := sendWith(t, sender.Options{Targets: []string{target}, Name: "s", Rate: 100, RoundTrip: true,
		STAMPKeys: [][]byte{key}}, time.Second)
	if good.packets < 50 || good.rt.Answered != good.packets || good.rt.Lost != 0 || good.rt.Invalid != 0 {
		t.Fatalf("with the key: sent %d, %+v", good.packets, good.rt)
	}
	bad := sendWith(t, sender.Options{Targets: []string{target}, Name: "s", Rate: 100, RoundTrip: true,
		STAMPKeys: [][]byte{[]byte("another STAMP key, 16+ octets")}}, time.Second)
	s, err := scrape.Gather(h.reg)
	if err != nil {
		t.Fatal(err)
	}
	refused, _ := s.Sum("udpprobe_receiver_invalid_packets_total", "reason", "auth")
	if bad.rt.Answered != 0 || bad.rt.Lost != bad.packets || uint64(refused) != bad.packets {
		t.Fatalf("with another key: sent %d, %+v; the reflector refused %v", bad.packets, bad.rt, refused)
	}
	t.Logf("with the key %d of %d answered; with another, %d of %d refused as unauthenticated",
		good.rt.Answered, good.packets, uint64(refused), bad.packets)
}
