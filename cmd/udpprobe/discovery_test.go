package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/udpprobe/udpprobe/internal/testkit/scrape"
	"github.com/udpprobe/udpprobe/internal/testkit/testproc"
)

// TestSenderFollowsFileSD runs a sender whose targets come from a file_sd
// file, and two receivers: a receiver added to the file is probed within
// the file check; a file that breaks keeps both targets, counted as a
// discovery failure; a receiver taken out of the file gets the session's
// goodbyes and loses nothing, and its series leave the sender.
func TestSenderFollowsFileSD(t *testing.T) {
	clearEnv(t)
	bin := testproc.Build(t, ".")
	var udp, web [2]string
	for i := range udp {
		udp[i], web[i] = testproc.FreeAddr(t, "udp"), testproc.FreeAddr(t, "tcp")
		rcv := testproc.Start(t, []string{"UDPPROBE_LISTEN_ADDRESS=" + udp[i], "UDPPROBE_WEB_LISTEN_ADDRESS=" + web[i],
			"UDPPROBE_LOSS_TIMEOUT=100ms", "UDPPROBE_LOG_FORMAT=json"}, bin, "receiver")
		rcv.Await(t, `"msg":"receiving"`)
	}
	sd := filepath.Join(t.TempDir(), "targets.json")
	list := func(content string) {
		t.Helper()
		if err := os.WriteFile(sd, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	list(fmt.Sprintf(`[{"targets": [%q]}]`, udp[0]))
	sweb := testproc.FreeAddr(t, "tcp")
	snd := testproc.Start(t, []string{"UDPPROBE_TARGETS=file:" + sd, "UDPPROBE_WEB_LISTEN_ADDRESS=" + sweb,
		"UDPPROBE_RATE=200", "UDPPROBE_NAME=fleet", "UDPPROBE_LOSS_TIMEOUT=100ms", "UDPPROBE_LOG_FORMAT=json"}, bin, "sender")

	sender := func(name string, labels ...string) float64 {
		return metricsAt(t, sweb)[scrape.Series("udpprobe_sender_"+name, append([]string{"sender", "fleet"}, labels...)...)]
	}
	receiver := func(i int, name string) float64 {
		return metricsAt(t, web[i])[scrape.Series("udpprobe_receiver_"+name, "sender", "fleet", "target", udp[i])]
	}
	await := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting until %s", what)
			}
		}
	}
	await("the first receiver is probed", func() bool { return receiver(0, "packets_received_total") > 0 })
	if n := sender("targets"); n != 1 {
		t.Fatalf("%v targets, want 1", n)
	}

	list(fmt.Sprintf(`[{"targets": [%q]}, {"targets": [%q], "labels": {"zone": "b"}}]`, udp[0], udp[1]))
	await("the second receiver is probed", func() bool { return receiver(1, "packets_received_total") > 0 })
	if n := sender("targets"); n != 2 {
		t.Fatalf("%v targets, want 2", n)
	}

	list(`[{"targets": [`)
	await("the broken file is counted", func() bool { return sender("discovery_failures_total", "source", "file") == 1 })
	before := receiver(0, "packets_received_total")
	await("both are still probed", func() bool { return receiver(0, "packets_received_total") > before })
	if n := sender("targets"); n != 2 {
		t.Fatalf("%v targets with a broken file, want the 2 it gave", n)
	}

	list(fmt.Sprintf(`[{"targets": [%q]}]`, udp[1]))
	await("the first receiver's session ends", func() bool { return receiver(0, "session_ended") == 1 })
	await("the first target's series leave the sender", func() bool {
		_, ok := metricsAt(t, sweb)[scrape.Series("udpprobe_sender_packets_sent_total", "sender", "fleet", "target", udp[0])]
		return !ok
	})
	if n := sender("targets"); n != 1 {
		t.Fatalf("%v targets, want 1", n)
	}
	if code := snd.Stop(t); code != exitOK {
		t.Fatalf("sender exit %d", code)
	}
	await("the second receiver's session ends", func() bool { return receiver(1, "session_ended") == 1 })
	time.Sleep(300 * time.Millisecond) // three loss timeouts: anything missing is settled
	for i := range udp {
		if lost, got := receiver(i, "packets_lost_total"), receiver(i, "packets_received_total"); lost != 0 || got == 0 {
			t.Errorf("receiver %d: %v received, %v lost; want a clean join and leave", i, got, lost)
		}
	}
}
