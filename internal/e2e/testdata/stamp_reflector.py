#!/usr/bin/python3
"""A STAMP Session-Reflector made of scapy's scapy.contrib.stamp,
independent of udpprobe's code, for internal/e2e's STAMP sender tests:

    stamp_reflector.py MODE DROP LOSE HOLD WAIT_MS [ADDRESS]

It listens on a free port of ADDRESS (127.0.0.1 if not given; ::1 for
IPv6) and prints the port on its first line. It
answers every test packet after WAIT_MS milliseconds, with these faults,
each a comma-separated list of the test packets' sequence numbers:
DROP, test packets it drops as they arrive (lost on the way there);
LOSE, replies it makes, and numbers, and then drops (lost on the way
back); HOLD, replies it holds 15 ms more, so that the next overtakes them.
MODE stateless copies the test packet's sequence number into the reply;
stateful numbers the replies it makes, from 0 (RFC 8762 section 4.3.1). A
reply carries the time the packet arrived (Receive Timestamp) and the time
the reply leaves (Timestamp), so a sender that subtracts the two leaves
the wait out, and the test packet's TLVs back, as long as it came. It runs
until killed.
"""
import fractions
import heapq
import select
import socket
import sys
import time

from scapy.contrib.stamp import (
    STAMPSessionReflectorTestUnauthenticated as Reflected,
    STAMPSessionSenderTestUnauthenticated as Test,
)

def seqs(arg):
    return {int(s) for s in arg.split(",") if s}


mode = sys.argv[1]
drop, lose, hold = seqs(sys.argv[2]), seqs(sys.argv[3]), seqs(sys.argv[4])
wait = int(sys.argv[5]) / 1000
address = sys.argv[6] if len(sys.argv) > 6 else "127.0.0.1"
NTP_DELTA = 2208988800


def ntp(ns):
    return fractions.Fraction(((ns // 10**9 + NTP_DELTA) << 32) | (((ns % 10**9) << 32) // 10**9), 1 << 32)


s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((address, 0))
print(s.getsockname()[1], flush=True)
pending = []  # (due, order, reply number, test packet bytes, arrival ns, address)
order = 0
numbered = 0  # replies made: the next one's number, when stateful
while True:
    timeout = max(0, pending[0][0] - time.monotonic()) if pending else None
    readable, _, _ = select.select([s], [], [], timeout)
    if readable:
        data, addr = s.recvfrom(65535)
        arrived = time.time_ns()
        probe = Test(data[:44])  # the base; the TLVs go back as they came
        if probe.seq not in drop:
            number = numbered if mode == "stateful" else probe.seq
            numbered += 1
            if probe.seq not in lose:
                due = time.monotonic() + wait + (0.015 if probe.seq in hold else 0)
                heapq.heappush(pending, (due, order, number, data, arrived, addr))
                order += 1
    while pending and pending[0][0] <= time.monotonic():
        _, _, number, data, arrived, addr = heapq.heappop(pending)
        probe = Test(data[:44])
        reply = Reflected(seq=number, ts=ntp(time.time_ns()), ssid=probe.ssid, ts_rx=ntp(arrived),
                          seq_sender=probe.seq, ts_sender=fractions.Fraction(probe.getfieldval("ts"), 1 << 32),
                          err_estimate_sender=probe.err_estimate, ttl_sender=64)
        s.sendto(bytes(reply) + data[44:], addr)
