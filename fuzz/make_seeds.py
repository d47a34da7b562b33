#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/: a handful of
meaningful inputs each (valid messages, boundary cases, one of each refusal), a few KiB in
all. Each input's name says what it is. Inputs that once crashed a target are added by hand
as `crash-<what>` and never regenerated away. Run from the repo root:

    python3 fuzz/make_seeds.py

The layout of each target's input (selector bytes, then the body) is in its module's doc in
fuzz/src/. Bodies are postcard (wire/SPEC.md §6.1): LEB128 varints, enums as their variant
index, fixed arrays raw.
"""
import json
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CORPUS = ROOT / "corpus"


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def string(s):
    b = s.encode()
    return varint(len(b)) + b


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def frames():
    cases = {c["name"]: bytes.fromhex(c["hex"])
             for c in json.loads((ROOT.parent / "wire/tests/vectors/oap1.json").read_text())}
    # Selector bytes: default limits, pieces up to 2^5 bytes; then a small negotiated cap.
    write("decode", "request_one_frame", b"\x00\x05" + cases["request_one_frame_empty"])
    write("decode", "response_ok_twice", b"\x00\x03" + cases["response_ok"] * 2)
    write("decode", "cap_on_non_start", b"\x00\x07" + cases["cap_on_non_start"])
    write("decode", "bad_version_and_flags", b"\x00\x00" + cases["bad_version_two_and_bad_flags"])
    comp = next(n for n in cases if n.startswith("comp"))
    write("decode", "compressed_small_limits", b"\x81\x10" + cases[comp])


def dht():
    key = bytes([0xAA]) * 32
    node = bytes(range(32))
    local = bytes([0x5A]) * 32  # the receiving node in messages.rs

    def contact(nid, *addrs):
        return nid + varint(len(addrs)) + b"".join(string(a) for a in addrs)

    write("dht_messages", "req_ping", b"\x00" + b"\x00")
    write("dht_messages", "req_find_node", b"\x00" + b"\x01" + bytes([1]) * 32)
    write("dht_messages", "req_add_provider", b"\x00" + b"\x03" + key)
    write("dht_messages", "resp_nodes_one_naming_us", b"\x01" + b"\x01" + varint(2)
          + contact(node, "127.0.0.1:4433") + contact(local, "10.0.0.1:1"))
    write("dht_messages", "resp_providers_bad_addr", b"\x01" + b"\x02" + varint(1)
          + contact(node, "not an address", "[::1]:9") + varint(1) + contact(key, "h:1"))
    write("dht_messages", "resp_added", b"\x01" + b"\x03")


def objects():
    h = bytes([0x33]) * 32
    write("object_messages", "req_get_whole", b"\x00" + b"\x00" + h + b"\x00")
    write("object_messages", "req_get_range", b"\x00" + b"\x00" + h + b"\x01" + varint(10) + varint(100))
    write("object_messages", "req_put_64k", b"\x00" + b"\x02" + h + varint(65536))
    write("object_messages", "resp_found", b"\x01" + b"\x00" + varint(1000) + varint(0) + varint(1000))
    write("object_messages", "resp_has_none", b"\x01" + b"\x01" + b"\x00")
    write("object_messages", "resp_stored", b"\x01" + b"\x02")


def mailbox():
    def envelope(key, ttl, e2e, payload):
        return (bytes([1]) * 32 + bytes([2]) * 32 + varint(len(key)) + key + varint(ttl)
                + bytes([e2e]) + varint(len(payload)) + payload)

    e = envelope(b"k1", 60000, 1, b"hi")
    write("mailbox_messages", "req_send", b"\x00" + b"\x00" + e)
    write("mailbox_messages", "req_send_64k", b"\x00" + b"\x00" + envelope(b"k" * 64, 0, 0, bytes(65536)))
    write("mailbox_messages", "req_send_empty_key", b"\x00" + b"\x00" + envelope(b"", 1, 0, b"x"))
    write("mailbox_messages", "req_fetch", b"\x00" + b"\x01" + bytes([1]) * 32 + varint(0) + varint(100)
          + varint(65536) + varint(30000))
    write("mailbox_messages", "req_fetch_count_zero", b"\x00" + b"\x01" + bytes([1]) * 32 + varint(0)
          + varint(0) + varint(1) + varint(0))
    write("mailbox_messages", "req_ack", b"\x00" + b"\x02" + bytes([1]) * 32 + varint(1) + bytes([3]) * 32)
    write("mailbox_messages", "req_replicate", b"\x00" + b"\x03" + varint(2) + e + envelope(b"k2", 5, 0, b""))
    write("mailbox_messages", "req_send_for", b"\x00" + b"\x04" + e + bytes([4]) * 32 + varint(3) + varint(1000))
    write("mailbox_messages", "req_replicate_for", b"\x00" + b"\x05" + varint(2) + e + b"\x01" + bytes([4]) * 32
          + envelope(b"k2", 5, 0, b"") + b"\x00")
    write("mailbox_messages", "resp_refused", b"\x01" + b"\x01" + b"\x01" + varint(5000))
    write("mailbox_messages", "resp_batch", b"\x01" + b"\x02" + varint(1) + varint(7) + varint(1) + e
          + varint(7) + b"\x00")
    write("mailbox_messages", "resp_stored", b"\x01" + b"\x00" + b"\x01")


def hello_body(versions, max_frame, inflight, flags, protos, addrs):
    return (varint(len(versions)) + b"".join(varint(v) for v in versions) + varint(max_frame)
            + varint(inflight) + varint(flags) + varint(len(protos))
            + b"".join(varint(p) for p in protos) + varint(len(addrs))
            + b"".join(string(a) for a in addrs))


def hello():
    ours = hello_body([1], 65536, 64, 0xFF, [0, 1, 2], ["127.0.0.1:4433"])
    big = hello_body([1, 2], 1 << 20, 8, 0x19, [1], [])
    tiny = hello_body([1], 4096, 1, 0xFF, [], [])
    none = hello_body([3], 1 << 20, 0, 0, [], [])
    for name, a, b in [("ours_and_1mib", ours, big), ("frame_too_small", ours, tiny),
                       ("no_common_version", big, none)]:
        write("hello", name, bytes([len(a)]) + a + b)
    write("hello", "ping_request", b"\x02" + b"\x01\x2a" + b"\x01\x2a")


def ranges():
    def size_small(n):  # even raw: the size is (raw >> 1) % 4096
        return struct.pack(">Q", n << 1)

    for name, size, text in [
        ("first_hundred", 1000, "bytes=0-99"), ("suffix", 1000, "bytes=-500"),
        ("open_end", 1000, "bytes=900-"), ("past_the_end", 1000, "bytes=1000-"),
        ("reversed", 1000, "bytes=5-3"), ("two_ranges", 1000, "bytes=0-1,5-6"),
        ("empty_object_suffix", 0, "bytes=-0"),
    ]:
        write("range_header", name, size_small(size) + text.encode())
    write("range_header", "huge_object", struct.pack(">Q", (1 << 64) - 1)
          + b"bytes=18446744073709551614-")


def caps():
    # Text mode: mode 0, method PUT, no size, now = 100, then the token text.
    head = b"\x00" + b"\x00" + b"\x00" + struct.pack(">Q", 100)
    nonce = bytes(range(16))
    caveats = [b"\x00" + varint(5000), b"\x01" + varint(1) + string("PUT"), b"\x02" + varint(10)]
    token = nonce + varint(len(caveats)) + b"".join(caveats) + bytes([7]) * 32
    import base64
    text = "mn1." + base64.urlsafe_b64encode(token).decode().rstrip("=")
    write("cap_token", "text_three_caveats", head + text.encode())
    write("cap_token", "text_not_base64", head + b"mn1.!!!")
    # Built mode: mode 1, method GET, size 50, now = 10, nonce, 3 caveats (expiry 20,
    # methods [PUT], max bytes 40), then the caveat attenuation adds (max bytes 30).
    built = (b"\x01" + b"\x02" + b"\x01" + struct.pack(">Q", 50) + struct.pack(">Q", 10)
             + nonce + b"\x03"
             + b"\x00" + struct.pack(">Q", 20)
             + b"\x01" + b"\x01" + b"\x00"
             + b"\x02" + struct.pack(">Q", 40)
             + b"\x02" + struct.pack(">Q", 30))
    write("cap_token", "built_three_caveats", built)
    write("cap_token", "built_no_caveats", b"\x01\x00\x00" + struct.pack(">Q", 1) + nonce + b"\x00")


def config():
    write("config_toml", "full", b'''data_dir = "/var/lib/macronode"
listen = "0.0.0.0:4433"
http = "127.0.0.1:8080"
bootstrap = ["127.0.0.1:4434", "%s@10.0.0.2:4433"]
json_logs = true
k = 8
alpha = 2
rpc_timeout_ms = 1500
liveness_ms = 0
amnesia = false
open_writes = false
store_quota_bytes = 1073741824
object_max_bytes = 1048576
rf = 3
w = 2
http_requests_max = 64
http_body_timeout_ms = 5000
''' % (b"ab" * 32))
    write("config_toml", "w_over_rf", b"rf = 2\nw = 3\n")
    write("config_toml", "unknown_key", b'listn = "127.0.0.1:1"\n')
    write("config_toml", "bad_bootstrap", b'bootstrap = ["nohost"]\n')
    write("config_toml", "zero_cap", b"http_requests_max = 0\n")


def overlay():
    # flags, then steps: each step's first byte picks it (see overlay_machine.rs).
    boot = bytes([0x00,
                  10, 4, 1, 0, 2, 1, 3, 2, 4, 3,   # bootstrap with four contacts
                  6, 0, 50,                        # time +200 ms, timer
                  2, 0, 1, 3, 5, 0, 6, 1, 7, 2,    # answer the first request with 3 contacts
                  2, 0, 0,                         # answer the next with Pong (wrong kind)
                  4, 0,                            # a failure
                  6, 1, 0,                         # time +1 s
                  8, 9,                            # find_node
                  9, 7, 1,                         # start providing
                  0, 5, 1, 7, 3,                   # an inbound ADD_PROVIDER
                  6, 40, 0])                       # a long wait: everything times out
    write("overlay_machine", "bootstrap_and_lookups", boot)
    flood = bytes([0x01] + [b for i in range(40) for b in (0, i, 1, i, 1)] + [6, 0, 10])
    write("overlay_machine", "diversity_flood", flood)
    stale = bytes([0x06, 11, 3, 0, 0, 5, 0, 9, 0, 0, 5, 0, 0, 1, 8, 1, 6, 8, 0])
    write("overlay_machine", "stale_answers", stale)


if __name__ == "__main__":
    frames()
    dht()
    objects()
    mailbox()
    hello()
    ranges()
    caps()
    config()
    overlay()
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    count = sum(1 for f in CORPUS.rglob("*") if f.is_file())
    print(f"{count} seed inputs, {total} bytes, in {CORPUS}")
