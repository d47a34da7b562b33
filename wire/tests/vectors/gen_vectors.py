#!/usr/bin/env python3
"""Writes oap1.json, the OAP/1 test vectors, from a second, independent encoder.

The frames here are packed with Python's struct module straight from the contract
(wire/SPEC.md, sections 2 to 4), not with the Rust codec, so the vector tests compare two
readings of the contract. COMP payloads come from the zstd command-line tool. Run from the repo root:

    python3 wire/tests/vectors/gen_vectors.py > wire/tests/vectors/oap1.json
"""
import json
import struct
import subprocess

REQ, RESP, EVENT, START, END, ACK_REQ, COMP, APP_E2E = 1, 2, 4, 8, 16, 32, 64, 128
MAX_FRAME = 1_048_576


def zstd(data, content_size=True):
    args = ["zstd", "-q", "-c", "-19"]
    if not content_size:
        args.append("--no-content-size")
    return subprocess.run(args, input=data, capture_output=True, check=True).stdout


def pack(flags, payload=b"", cap=b"", code=0, app=0, tenant=0, corr=1, ver=1, length=None, cap_len=None):
    total = 38 + len(cap) + len(payload) if length is None else length
    cl = len(cap) if cap_len is None else cap_len
    hdr = struct.pack(">IHHHH", total, ver, flags, code, app)
    hdr += tenant.to_bytes(16, "big") + struct.pack(">HQ", cl, corr)
    return hdr + cap + payload


def valid(name, flags, payload=b"", cap=b"", code=0, app=0, tenant=0, corr=1, inflated=None):
    raw = pack(flags, payload, cap, code, app, tenant, corr)
    frame = {
        "len": len(raw), "ver": 1, "flags": flags, "code": code, "app_proto_id": app,
        "tenant_id": str(tenant), "cap_len": len(cap), "corr_id": corr,
        "cap_hex": cap.hex(), "payload_hex": payload.hex(),
    }
    if inflated is not None:
        frame["inflated_hex"] = inflated.hex()
    return {"name": name, "hex": raw.hex(), "valid": True, "frame": frame}


def invalid(name, raw, error):
    return {"name": name, "hex": raw.hex(), "valid": False, "error": error}


text = b"the quick brown fox jumps over the lazy dog " * 20
cases = [
    valid("request_one_frame_empty", REQ | START | END),
    valid("request_start_only", REQ | START, b"part one", corr=7),
    valid("request_middle_frame", REQ, b"part two", corr=7),
    valid("request_end_frame", REQ | END, b"part three", corr=7),
    valid("response_ok", RESP | START | END, b"hello", code=200, app=1, corr=99),
    valid("response_partial", RESP | START, b"range", code=206, app=2, corr=100),
    valid("response_unavailable", RESP | START | END, b"", code=503, corr=101),
    valid("event_frame", EVENT | START | END, b"\x01\x02\x03", app=1),
    valid("ack_requested", REQ | START | END | ACK_REQ, b"ack me", app=2),
    valid("app_e2e_opaque", REQ | START | END | APP_E2E, bytes(range(256)), app=65535),
    valid("capability_on_start", REQ | START, b"body", cap=b"macaroon-token-bytes", app=2, corr=5),
    valid("capability_empty_payload", REQ | START | END, cap=bytes([0xAB] * 300), app=2),
    valid("max_tenant_and_corr", REQ | START | END, b"x", tenant=(1 << 128) - 1, corr=(1 << 64) - 1),
    valid("tenant_mid", REQ | START | END, b"y", tenant=0x0123456789ABCDEF0011223344556677),
    valid("compressed_payload", REQ | START | END | COMP, zstd(text), app=1, inflated=text),
    valid("compressed_no_content_size", RESP | START | END | COMP, zstd(text, False), code=200, inflated=text),
    valid("all_known_flags", 0x00FF, zstd(b"all flags"), cap=b"c", code=200, inflated=b"all flags"),
    valid("max_size_payload", REQ | END, bytes(i % 251 for i in range(MAX_FRAME - 38)), corr=3),
]

good = pack(REQ | START | END, b"payload")
bomb = zstd(bytes(9 * MAX_FRAME))
cases += [
    invalid("too_large_by_one", pack(REQ | START | END, length=MAX_FRAME + 1), "frame_too_large"),
    invalid("too_large_max_u32", pack(REQ | START | END, length=0xFFFFFFFF, ver=9), "frame_too_large"),
    invalid("too_small_37", pack(REQ | START | END, length=37)[:37], "frame_too_small"),
    invalid("too_small_zero", b"\x00\x00\x00\x00", "frame_too_small"),
    invalid("truncated_length_prefix", b"\x00\x00\x00", "truncated"),
    invalid("truncated_body", good[:-1], "truncated"),
    invalid("bad_version_zero", pack(REQ | START | END, ver=0), "bad_version"),
    invalid("bad_version_two_and_bad_flags", pack(0x0100 | REQ, ver=2), "bad_version"),
    invalid("bad_flags_bit8", pack(0x0100 | REQ | START | END), "bad_flags"),
    invalid("bad_flags_bit15", pack(0x8000 | RESP | START, code=200), "bad_flags"),
    invalid("cap_out_of_bounds", pack(REQ | START, b"ab", cap_len=10), "cap_out_of_bounds"),
    invalid("cap_out_of_bounds_before_non_start", pack(REQ, b"ab", cap_len=3), "cap_out_of_bounds"),
    invalid("cap_on_non_start", pack(REQ | END, b"body", cap=b"tok"), "cap_on_non_start"),
    invalid("bad_status_201", pack(RESP | START | END, code=201), "bad_status"),
    invalid("bad_status_zero", pack(RESP | START | END, code=0), "bad_status"),
    invalid("bad_compression_garbage", pack(REQ | START | END | COMP, b"not zstd at all"), "bad_compression"),
    invalid("bad_compression_empty", pack(REQ | START | END | COMP), "bad_compression"),
    invalid("bad_compression_trailing", pack(REQ | START | END | COMP, zstd(text) + b"\x00"), "bad_compression"),
    invalid("bad_compression_cut", pack(REQ | START | END | COMP, zstd(text)[:-4]), "bad_compression"),
    invalid("decompress_bomb_declared", pack(REQ | START | END | COMP, bomb), "decompress_bound_exceeded"),
    invalid("decompress_bomb_undeclared", pack(REQ | START | END | COMP, zstd(bytes(9 * MAX_FRAME), False)),
            "decompress_bound_exceeded"),
]

print(json.dumps(cases, indent=1))
