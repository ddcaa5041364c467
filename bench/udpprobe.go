package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/udpprobe/udpprobe/internal/testkit/scrape"
)

// peer is the name the bench's sender goes by.
const peer = "bench"

// receiverEnv configures a receiver on udp serving metrics on web.
func receiverEnv(udp, web string, more ...string) []string {
	return append([]string{"UDPPROBE_LISTEN_ADDRESS=" + udp, "UDPPROBE_WEB_LISTEN_ADDRESS=" + web,
		"UDPPROBE_SUMMARY_INTERVAL=0", "UDPPROBE_LOG_FORMAT=json"}, more...)
}

// senderEnv configures a sender to udp at rate serving metrics on web.
func senderEnv(udp, web string, rate float64, more ...string) []string {
	return append([]string{"UDPPROBE_TARGETS=" + udp, "UDPPROBE_WEB_LISTEN_ADDRESS=" + web,
		"UDPPROBE_RATE=" + strconv.FormatFloat(rate, 'f', -1, 64), "UDPPROBE_NAME=" + peer, "UDPPROBE_LOG_FORMAT=json"}, more...)
}

// oneWayResult is one udpprobe run at an offered rate.
type oneWayResult struct {
	rate                        float64
	elapsed                     time.Duration // first send to the sender's stop
	sent                        uint64        // the goodbye's last sequence number + 1
	received, lost, local       uint64
	late, duplicated, reordered uint64
	socketDrops, kernelDrops    uint64
	sendErrors, missed          uint64
	send, recv                  usage
	delivered                   float64
}

// exact: every datagram sent is accounted for as received or dropped
// locally, and nothing is reported lost, late, duplicated or reordered on
// a path that did none of it.
func (r oneWayResult) exact() bool {
	return r.received+r.local == r.sent && r.lost == 0 && r.late == 0 && r.duplicated == 0 &&
		r.reordered == 0 && r.socketDrops == r.kernelDrops && r.sendErrors == 0
}

func (r oneWayResult) row() string {
	return fmt.Sprintf("| udpprobe | %.0f | %d | %.0f | %d | %d / %d | %s | %.2f + %.2f | %.1f / %.1f |",
		r.rate, r.sent, r.delivered, r.lost, r.socketDrops, r.kernelDrops, yes(r.exact(), fmt.Sprintf("missed slots %d", r.missed)),
		r.send.cpu.Seconds(), r.recv.cpu.Seconds(), mib(r.send.rss), mib(r.recv.rss))
}

func yes(ok bool, detail string) string {
	if ok {
		return "exact"
	}
	return "NO (" + detail + ")"
}

// oneWay runs a receiver and a sender at rate for o.duration.
func oneWay(o options, rate float64) (oneWayResult, error) {
	r := oneWayResult{rate: rate}
	udp, web := free("udp"), free("tcp")
	recv, err := startReady(o.udpprobe, "receiving", receiverEnv(udp, web, "UDPPROBE_LOSS_TIMEOUT=500ms"), "receiver")
	if err != nil {
		return r, err
	}
	defer recv.Kill()
	if r.kernelDrops, err = kernelDrops(func() error { return r.session(o, udp, web) }); err != nil {
		return r, err
	}
	if r.recv, err = stop(recv, 30*time.Second); err != nil {
		return r, err
	}
	r.delivered = float64(r.received) / r.elapsed.Seconds()
	return r, nil
}

// session runs the sender for o.duration, stops it, and waits until the
// receiver has accounted for what it sent.
func (r *oneWayResult) session(o options, udp, web string) error {
	sweb := free("tcp")
	send, err := startReady(o.udpprobe, `"sending"`, senderEnv(udp, sweb, r.rate), "sender")
	if err != nil {
		return err
	}
	defer send.Kill()
	time.Sleep(o.duration)
	sm, err := scrape.Get("http://" + sweb + "/metrics")
	if err != nil {
		return fmt.Errorf("sender metrics: %w", err)
	}
	r.sendErrors = uint64(sm[scrape.Series("udpprobe_sender_send_errors_total", "sender", peer, "target", udp)])
	r.missed = uint64(sm[scrape.Series("udpprobe_sender_missed_slots_total", "sender", peer)])
	if r.send, err = stop(send, 30*time.Second); err != nil {
		return err
	}
	if r.sent, r.elapsed, err = sent(send); err != nil {
		return err
	}
	return settle(func() error { return r.readReceiver(udp, web) },
		func() bool { return r.received+r.lost+r.local >= r.sent })
}

// settle waits until the receiver has accounted for every datagram the
// sender sent, reading it (read) until accounted says so or for 10 s,
// then reads it once more a loss timeout (500 ms in the bench) later: the
// receiver settles the last gaps one loss timeout after the goodbye.
func settle(read func() error, accounted func() bool) error {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if err := read(); err != nil {
			return err
		}
		if accounted() || time.Now().After(deadline) {
			break
		}
	}
	time.Sleep(600 * time.Millisecond)
	return read()
}

// sent reads from a stopped sender's log how many datagrams it sent (the
// goodbye carries the last sequence number) and for how long.
func sent(send *proc) (n uint64, elapsed time.Duration, err error) {
	began, err := record(send, "sending")
	if err != nil {
		return 0, 0, err
	}
	bye, err := record(send, "session ended with a goodbye")
	if err != nil {
		return 0, 0, err
	}
	last, err := bye.uint("last_sequence")
	if err != nil {
		return 0, 0, err
	}
	t0, err := began.time()
	if err != nil {
		return 0, 0, err
	}
	t1, err := bye.time()
	if err != nil {
		return 0, 0, err
	}
	return last + 1, t1.Sub(t0), nil
}

// readReceiver takes from the receiver's metrics its counts for the bench's
// sender sending to udp.
func (r *oneWayResult) readReceiver(udp, web string) error {
	m, err := scrape.Get("http://" + web + "/metrics")
	if err != nil {
		return fmt.Errorf("receiver metrics: %w", err)
	}
	count := func(name string) uint64 {
		return uint64(m[scrape.Series("udpprobe_receiver_"+name, "sender", peer, "target", udp)])
	}
	r.received = count("packets_received_total")
	r.lost = count("packets_lost_total")
	r.local = count("packets_dropped_locally_total")
	r.late = count("packets_late_total")
	r.duplicated = count("packets_duplicated_total")
	r.reordered = count("packets_reordered_total")
	r.socketDrops = uint64(m["udpprobe_receiver_socket_drops_total"])
	return nil
}

// oneWayLow runs a sender and a receiver at the low rate.
func oneWayLow(o options) (lowResult, error) {
	r, err := lowRun(o, "udpprobe one-way", nil, nil)
	if err != nil {
		err = fmt.Errorf("udpprobe one-way: %w", err)
	}
	return r, err
}

// roundTrips runs a round-trip sender against a reflecting receiver.
func roundTrips(o options) (lowResult, error) {
	r, err := lowRun(o, "udpprobe round trip",
		[]string{"UDPPROBE_REFLECT=true", "UDPPROBE_REFLECT_RATE=" + strconv.FormatFloat(2*o.lowRate, 'f', -1, 64)},
		[]string{"UDPPROBE_ROUND_TRIP=true", "UDPPROBE_LOSS_TIMEOUT=100ms"})
	if err != nil {
		err = fmt.Errorf("udpprobe round trips: %w", err)
	}
	return r, err
}

// lowRun runs a receiver and a sender, with extra variables each, at the
// low rate.
func lowRun(o options, tool string, recvEnv, sendEnv []string) (lowResult, error) {
	r := lowResult{tool: tool}
	udp := free("udp")
	recv, err := startReady(o.udpprobe, "receiving", receiverEnv(udp, free("tcp"), recvEnv...), "receiver")
	if err != nil {
		return r, err
	}
	defer recv.Kill()
	send, err := start(o.udpprobe, senderEnv(udp, free("tcp"), o.lowRate, sendEnv...), "sender")
	if err != nil {
		return r, err
	}
	defer send.Kill()
	time.Sleep(o.lowDuration)
	if r.client, err = stop(send, 30*time.Second); err != nil {
		return r, err
	}
	if r.packets, _, err = sent(send); err != nil {
		return r, err
	}
	if r.server, err = stop(recv, 30*time.Second); err != nil {
		return r, err
	}
	return r, nil
}
