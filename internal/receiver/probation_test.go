package receiver

import (
	"testing"

	"github.com/udpprobe/udpprobe/internal/wire"
)

// sent is one datagram of peer "alpha" in a probation script: its session
// and number, sent at sent ms on the sender's clocks, arriving at ms.
type sent struct {
	session, seq uint64
	sent, ms     float64
	flags        wire.Flags
}

// TestProbation: a session the peer does not know starts only when a
// second datagram of it confirms the first (RFC 3550 A.1), so a lone
// datagram, replayed or forged, restarts nothing and takes nothing from the
// live session; once confirmed, the first datagram and its copies count as
// they arrived. A candidate another session's datagram replaces is a stray.
func TestProbation(t *testing.T) {
	live := func(from, to uint64) []sent { // session 1, 1 ms apart, 0.1 ms of jitter every other
		var s []sent
		for seq := from; seq <= to; seq++ {
			s = append(s, sent{session: 1, seq: seq, sent: float64(seq), ms: float64(seq) + 10 + float64(seq%2)/10})
		}
		return s
	}
	cat := func(parts ...[]sent) []sent {
		var s []sent
		for _, p := range parts {
			s = append(s, p...)
		}
		return s
	}
	for _, tc := range []struct {
		name   string
		script []sent
		want   streamCounts
		ipdv   float64 // IPDV samples, all of the live session's consecutive pairs
	}{{
		name:   "a lone datagram of a new session, sent later, restarts nothing",
		script: cat(live(0, 9), []sent{{session: 2, seq: 0, sent: 9.5, ms: 19.6}}, live(10, 19)),
		want:   streamCounts{received: 20},
		ipdv:   19,
	}, {
		name: "a restart after it replaces it: the lone one is a stray",
		script: cat(live(0, 9), []sent{{session: 2, seq: 7, sent: 9.5, ms: 19.6}}, live(10, 19),
			[]sent{{session: 3, seq: 0, sent: 100, ms: 110}, {session: 3, seq: 1, sent: 101, ms: 111}}),
		want: streamCounts{received: 22, stray: 1, restarts: 1},
		ipdv: 19 + 1,
	}, {
		name:   "copies of the first datagram count as duplicates once it is confirmed",
		script: []sent{{session: 1, seq: 0, ms: 10}, {session: 1, seq: 0, ms: 10.5}, {session: 1, seq: 0, ms: 11}, {session: 1, seq: 1, sent: 1, ms: 11.5}},
		want:   streamCounts{received: 2, duplicated: 2},
		ipdv:   1,
	}, {
		name:   "the second datagram may arrive first: reordered",
		script: []sent{{session: 1, seq: 1, sent: 1, ms: 10}, {session: 1, seq: 0, ms: 10.5}, {session: 1, seq: 2, sent: 2, ms: 11}},
		want:   streamCounts{received: 3, reordered: 1},
		ipdv:   1,
	}, {
		name:   "losses between the two count once confirmed",
		script: []sent{{session: 1, seq: 0, ms: 10}, {session: 1, seq: 5, sent: 5, ms: 15}},
		want:   streamCounts{received: 2, lost: 4, gaps: 1, gapSum: 4},
	}, {
		name: "a number implausibly far from the first starts probation over",
		script: []sent{{session: 1, seq: 0, ms: 10}, {session: 1, seq: 65000, sent: 65000, ms: 65010},
			{session: 1, seq: 65001, sent: 65001, ms: 65011}},
		want: streamCounts{received: 2, stray: 1},
		ipdv: 1,
	}, {
		name: "a replay of an old session before the live one, after a receiver restart",
		script: []sent{{session: 7, seq: 500, sent: -1000, ms: 0},
			{session: 8, seq: 0, ms: 10}, {session: 8, seq: 1, sent: 1, ms: 11}, {session: 8, seq: 2, sent: 2, ms: 12}},
		want: streamCounts{received: 3, stray: 1},
		ipdv: 2,
	}, {
		name:   "a goodbye confirms a session of one datagram",
		script: []sent{{session: 1, seq: 0, ms: 10}, {session: 1, seq: 0, sent: 1, ms: 11, flags: wire.FlagGoodbye}},
		want:   streamCounts{received: 1},
	}, {
		name: "a goodbye far from the first confirms nothing",
		script: []sent{{session: 1, seq: 0, ms: 10}, {session: 1, seq: 5000, sent: 1, ms: 11, flags: wire.FlagGoodbye},
			{session: 1, seq: 1, sent: 1, ms: 12}},
		want: streamCounts{received: 2},
		ipdv: 1,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			tt := newTable(t, Options{})
			for _, d := range tc.script {
				b := probe(t, d.session, d.seq, d.sent)
				if d.flags != 0 {
					wire.PutFlags(b, d.flags)
					wire.Seal(b)
				}
				tt.handle(b, at(d.ms))
			}
			tt.Housekeep(at(1e6))
			if got := exported(t, tt.observed, "alpha"); got != tc.want {
				t.Errorf("exported\n %+v\nwant\n %+v", got, tc.want)
			}
			if got := tt.sample(t, "ipdv_seconds_count", "alpha"); got != tc.ipdv {
				t.Errorf("%v IPDV samples, want %v", got, tc.ipdv)
			}
		})
	}
}

// TestProbationReplies: a reflector answers a session's first datagram at
// once, with the count it will have once confirmed, and its copies not at
// all; a candidate's held-back reply is reported as withheld in the
// session's later replies.
func TestProbationReplies(t *testing.T) {
	tt := newTable(t, Options{Reflect: true, ReflectRate: 1000})
	for range 3 {
		tt.handle(probe(t, 1, 0, 0), at(0))
	}
	if h := tt.replies.header(t); tt.replies.n != 1 || h.Received != 1 {
		t.Fatalf("%d replies to three copies of a first datagram, the last carrying %d received; want 1 and 1", tt.replies.n, h.Received)
	}
	tt.handle(probe(t, 1, 1, 1), at(1))
	if h := tt.replies.header(t); tt.replies.n != 2 || h.Received != 2 {
		t.Fatalf("%d replies, the last carrying %d received once confirmed; want 2 and 2", tt.replies.n, h.Received)
	}

	// A rate of 10 a second holds one reply in its bucket: the first
	// session's takes it, the restart's first is held back, and the
	// confirming datagram's reply, a second later, reports it.
	limited := newTable(t, Options{Reflect: true, ReflectRate: 10})
	limited.handle(probe(t, 1, 0, 0), at(0))
	limited.handle(probe(t, 2, 0, 0.5), at(0.5))
	if limited.replies.n != 1 {
		t.Fatalf("%d replies, want the restart's first held back", limited.replies.n)
	}
	limited.handle(probe(t, 2, 1, 1000), at(1000))
	if h := limited.replies.header(t); limited.replies.n != 2 || h.Received != 2 || h.Withheld != 1 || h.Session != 2 {
		t.Fatalf("%d replies, the last of session %d carrying %d received and %d withheld; want 2, 2, 2 and 1",
			limited.replies.n, h.Session, h.Received, h.Withheld)
	}
}
