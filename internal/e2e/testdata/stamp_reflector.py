#!/usr/bin/python3
"""A stateless STAMP Session-Reflector made of scapy's scapy.contrib.stamp,
independent of udpprobe's code, for internal/e2e's STAMP sender test:

    stamp_reflector.py DROP WAIT_MS

It listens on a free loopback port and prints it on its first line. It
answers every test packet after WAIT_MS milliseconds, but for those whose
sequence numbers are in DROP (comma-separated), which it never answers:
the round trips the sender must count lost. A reply copies the test
packet's sequence number (stateless, RFC 8762 section 4.3.1), carries the
time the packet arrived (Receive Timestamp) and the time the reply leaves
(Timestamp), so a sender that subtracts the two leaves the wait out, and
the test packet's TLVs back, as long as it came. It runs until killed.
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

drop = {int(s) for s in sys.argv[1].split(",") if s}
wait = int(sys.argv[2]) / 1000
NTP_DELTA = 2208988800


def ntp(ns):
    return fractions.Fraction(((ns // 10**9 + NTP_DELTA) << 32) | (((ns % 10**9) << 32) // 10**9), 1 << 32)


s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
pending = []  # (due, order, test packet bytes, arrival ns, address)
order = 0
while True:
    timeout = max(0, pending[0][0] - time.monotonic()) if pending else None
    readable, _, _ = select.select([s], [], [], timeout)
    if readable:
        data, addr = s.recvfrom(65535)
        arrived = time.time_ns()
        probe = Test(data[:44])  # the base; the TLVs go back as they came
        if probe.seq not in drop:
            heapq.heappush(pending, (time.monotonic() + wait, order, data, arrived, addr))
            order += 1
    while pending and pending[0][0] <= time.monotonic():
        _, _, data, arrived, addr = heapq.heappop(pending)
        probe = Test(data[:44])
        reply = Reflected(seq=probe.seq, ts=ntp(time.time_ns()), ssid=probe.ssid, ts_rx=ntp(arrived),
                          seq_sender=probe.seq, ts_sender=fractions.Fraction(probe.getfieldval("ts"), 1 << 32),
                          err_estimate_sender=probe.err_estimate, ttl_sender=64)
        s.sendto(bytes(reply) + data[44:], addr)
