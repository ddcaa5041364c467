#!/usr/bin/python3
"""Golden STAMP packets for internal/stamp's tests, made by implementations
independent of udpprobe's Go code: scapy's scapy.contrib.stamp (Debian's
python3-scapy) for the unauthenticated packets of RFC 8762 and RFC 8972, and
for the authenticated ones, which scapy lacks, this script's own layout,
written from RFC 8762 sections 4.2.2 and 4.3.2 with RFC 8972's SSID, and
Python's hmac (RFC 8762 section 4.4: HMAC-SHA-256 over the first 96 octets,
cut to 16).

    /usr/bin/python3 internal/stamp/testdata/golden.py > internal/stamp/testdata/golden.json

The output is deterministic; stamp's tests compare it with golden.json
when python3-scapy is installed. scapy names the TLV flags "UMIRRRRR" from
the least significant bit, while RFC 8972 section 4 puts U in the most
significant one, so the flags are given here as numbers: U is 0x80.
"""
import fractions
import hashlib
import hmac
import json
import struct

from scapy.contrib.stamp import (
    ErrorEstimate,
    STAMPSessionReflectorTestUnauthenticated as Reflected,
    STAMPSessionSenderTestUnauthenticated as Test,
    STAMPTestTLV as TLV,
)

KEY = b"a STAMP key of 32 bytes, no more"

# Times as NTP 64-bit timestamps: seconds since 1900 and a binary fraction.
T1 = (3973449600 << 32) | 0x40000000  # 2025-11-30T00:00:00.25Z
T2 = T1 + (1 << 32) // 1000           # about 1 ms later
T3 = T2 + (1 << 32) // 20000          # about 50 us later


def ntp(ts):
    # scapy's TimeStampField takes seconds since 1900; a Fraction keeps them exact.
    return fractions.Fraction(ts, 1 << 32)


def ee(s, scale, mult):
    return ErrorEstimate(S=s, Z=0, scale=scale, multiplier=mult)


def ee16(s, scale, mult):
    return (s << 15) | (scale << 8) | mult


def tlvs_bytes(tlvs):
    return b"".join(struct.pack("!BBH", f, t, len(v)) + v for f, t, v in tlvs)


def tlv_objects(tlvs):
    return [TLV(flags=f, type=t, len=len(v), value=v) for f, t, v in tlvs]


PADDING = (0, 1, bytes(20))                            # Extra Padding, 20 octets
COS = (0, 4, bytes([46 << 2 | 0, 0, 0, 0]))            # Class of Service: DSCP1 46 asked, DSCP2 and ECN to fill
COS_REFLECTED = (0, 4, bytes([46 << 2 | 10 >> 4, (10 & 0xF) << 4 | 1 << 2, 0, 0]))  # DSCP2 10, ECN 01
UNKNOWN = (0, 200, b"\x01\x02\x03")                   # a type nobody defined
UNKNOWN_REFLECTED = (0x80, 200, b"\x01\x02\x03")      # echoed with U


def test_unauth(seq, ts, e, ssid, tlvs):
    return bytes(Test(seq=seq, ts=ntp(ts), err_estimate=ee(*e), ssid=ssid, tlv_objects=tlv_objects(tlvs)))


def reflected_unauth(seq, ts, e, ssid, rx, sseq, sts, se, ttl, tlvs):
    return bytes(Reflected(seq=seq, ts=ntp(ts), err_estimate=ee(*e), ssid=ssid, ts_rx=ntp(rx), seq_sender=sseq,
                           ts_sender=ntp(sts), err_estimate_sender=ee(*se), ttl_sender=ttl,
                           tlv_objects=tlv_objects(tlvs)))


def sign(base):
    assert len(base) == 96
    return base + hmac.new(KEY, base, hashlib.sha256).digest()[:16]


def test_auth(seq, ts, e, ssid, tlvs):
    base = struct.pack("!I12xQHH68x", seq, ts, ee16(*e), ssid)
    return sign(base) + tlvs_bytes(tlvs)


def reflected_auth(seq, ts, e, ssid, rx, sseq, sts, se, ttl, tlvs):
    base = struct.pack("!I12xQHH4xQ8xI12xQH6xB15x", seq, ts, ee16(*e), ssid, rx, sseq, sts, ee16(*se), ttl)
    return sign(base) + tlvs_bytes(tlvs)


def fields(kind, seq, ts, e, ssid, *rest):
    f = {"seq": seq, "timestamp": ts, "error_estimate": ee16(*e), "ssid": ssid}
    if kind == "reflected":
        rx, sseq, sts, se, ttl, tlvs = rest
        f.update({"receive_timestamp": rx, "sender_seq": sseq, "sender_timestamp": sts,
                  "sender_error_estimate": ee16(*se), "sender_ttl": ttl})
    else:
        (tlvs,) = rest
    f["tlvs"] = [{"flags": fl, "type": t, "value": v.hex()} for fl, t, v in tlvs]
    return f


SYNCED = (1, 2, 200)    # synchronised, error 200 * 2^(2-32) s, about 0.19 us
UNSYNCED = (0, 10, 1)   # not synchronised, error 2^(10-32) s, about 0.24 ms

CASES = [
    ("test", "unauthenticated, no TLVs", (7, T1, SYNCED, 0x1234, [])),
    ("test", "unauthenticated, padding and class of service", (8, T1, UNSYNCED, 1, [PADDING, COS])),
    ("test", "unauthenticated, an unknown TLV", (9, T1, SYNCED, 0xFFFF, [UNKNOWN])),
    ("reflected", "unauthenticated, no TLVs", (3, T3, SYNCED, 0x1234, T2, 7, T1, SYNCED, 62, [])),
    ("reflected", "unauthenticated, padding, class of service and the unknown TLV echoed",
     (4, T3, UNSYNCED, 1, T2, 9, T1, SYNCED, 255, [PADDING, COS_REFLECTED, UNKNOWN_REFLECTED])),
    ("test", "authenticated, no TLVs", (7, T1, SYNCED, 0x1234, [])),
    ("test", "authenticated, padding", (8, T1, UNSYNCED, 2, [PADDING])),
    ("reflected", "authenticated, no TLVs", (3, T3, SYNCED, 0x1234, T2, 7, T1, SYNCED, 64, [])),
    ("reflected", "authenticated, padding", (5, T3, UNSYNCED, 2, T2, 8, T1, UNSYNCED, 1, [PADDING])),
]

out = {"key": KEY.decode(), "packets": []}
for kind, name, args in CASES:
    auth = name.startswith("authenticated")
    make = {("test", False): test_unauth, ("test", True): test_auth,
            ("reflected", False): reflected_unauth, ("reflected", True): reflected_auth}[(kind, auth)]
    b = make(*args)
    out["packets"].append({"kind": kind, "name": name, "authenticated": auth,
                           "fields": fields(kind, *args), "hex": b.hex()})
print(json.dumps(out, indent=1))
