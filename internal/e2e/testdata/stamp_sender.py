#!/usr/bin/python3
"""A STAMP Session-Sender made of scapy's scapy.contrib.stamp, independent of
udpprobe's code, for internal/e2e's STAMP test:

    stamp_sender.py HOST PORT SSID COUNT SKIP [KEY]

It sends test packets 0 to COUNT-1 at 2 ms intervals, from one socket, but
for the sequence numbers in SKIP (comma-separated), which it never sends:
what the reflector must count lost. Each probe carries an Extra Padding
TLV of 12 octets and a Class of Service TLV asking for DSCP 46, and leaves
with DSCP 10 and ECN ECT(1), which the reflector must report back in it. With KEY,
the packets are authenticated (RFC 8762 section 4.2.2, laid out by hand,
since scapy has no authenticated layer). It waits 1 s for the last replies
and prints one JSON object: what it sent, and every reply as decoded by
scapy (or by hand, authenticated; the TLVs by hand in both modes, see
decode), with the time it arrived.
"""
import fractions
import hashlib
import hmac
import json
import socket
import struct
import sys
import time

from scapy.contrib.stamp import (
    STAMPSessionReflectorTestUnauthenticated as Reflected,
    STAMPSessionSenderTestUnauthenticated as Test,
    STAMPTestTLV as TLV,
)

host, port, ssid, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
skip = {int(s) for s in sys.argv[5].split(",") if s}
key = sys.argv[6].encode() if len(sys.argv) > 6 else None
NTP_DELTA = 2208988800


def ntp_now():
    ns = time.time_ns()
    return ((ns // 10**9 + NTP_DELTA) << 32) | (((ns % 10**9) << 32) // 10**9)


def tlvs():
    return [TLV(flags=0, type=1, len=12, value=bytes(12)),
            TLV(flags=0, type=4, len=4, value=bytes([46 << 2, 0, 0, 0]))]


def tlv_bytes():
    return b"".join(struct.pack("!BBH", int(t.flags), t.type, t.len) + t.value for t in tlvs())


def probe(seq):
    ts = ntp_now()
    if key is None:
        return bytes(Test(seq=seq, ts=fractions.Fraction(ts, 1 << 32), ssid=ssid, tlv_objects=tlvs())), ts
    base = struct.pack("!I12xQHH68x", seq, ts, 0x8001, ssid)
    return base + hmac.new(key, base, hashlib.sha256).digest()[:16] + tlv_bytes(), ts


def tlvs_of(rest):
    out = []
    while len(rest) >= 4:
        flags, typ, n = struct.unpack("!BBH", rest[:4])
        out.append({"flags": flags, "type": typ, "value": rest[4:4 + n].hex()})
        rest = rest[4 + n:]
    return out


def decode(data):
    if key is None:
        # scapy 2.5 sizes a reflected packet's TLV list from the parent UDP
        # header, which a dissection from bytes lacks, so it dissects the
        # base and the TLVs are read by hand.
        r = Reflected(data[:44])
        ts, rx, sts = (r.getfieldval(f) for f in ("ts", "ts_rx", "ts_sender"))  # raw 64-bit NTP
        out = {"seq": r.seq, "ts": ts, "ssid": r.ssid, "ts_rx": rx, "seq_sender": r.seq_sender,
               "ts_sender": sts, "ttl": r.ttl_sender, "tlvs": tlvs_of(data[44:])}
    else:
        seq, ts, _, ss, rx, sseq, sts, _, ttl = struct.unpack("!I12xQHH4xQ8xI12xQH6xB15x", data[:96])
        ok = hmac.compare_digest(hmac.new(key, data[:96], hashlib.sha256).digest()[:16], data[96:112])
        out = {"seq": seq, "ts": ts, "ssid": ss, "ts_rx": rx, "seq_sender": sseq, "ts_sender": sts, "ttl": ttl,
               "hmac_ok": ok, "tlvs": tlvs_of(data[112:])}
    out["len"] = len(data)
    return out


s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.001)
if s.family == socket.AF_INET:
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 10 << 2 | 1)  # DSCP 10, ECN ECT(1): what the reflector must report
else:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, 10 << 2 | 1)
sent, replies = [], []


def drain():
    while True:
        try:
            data = s.recv(65535)
        except (socket.timeout, BlockingIOError):
            return
        r = decode(data)
        r["arrived"] = ntp_now()
        replies.append(r)


for seq in range(count):
    if seq not in skip:
        b, ts = probe(seq)
        s.sendto(b, (host, port))
        sent.append({"seq": seq, "ts": ts, "len": len(b)})
    deadline = time.monotonic() + 0.002
    while time.monotonic() < deadline:
        drain()
deadline = time.monotonic() + 1
while time.monotonic() < deadline:
    drain()
print(json.dumps({"sent": sent, "replies": replies}))
