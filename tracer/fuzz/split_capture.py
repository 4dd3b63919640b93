#!/usr/bin/env python3
"""Splits a client-to-server byte stream (socat -r) into fuzz seeds: pg requests or MySQL
COM_QUERY payloads."""
import os, struct, sys

def pg(stream, out, name):
    """Requests (messages up to a Sync or a Query), past each connection's startup packet."""
    requests, messages, at = [], b"", 0
    while at + 5 <= len(stream):
        if stream[at] == 0:  # a startup packet: its length's top byte
            (length,) = struct.unpack(">I", stream[at:at+4]); at += length; continue
        kind = stream[at:at+1]
        (length,) = struct.unpack(">I", stream[at+1:at+5])
        messages += stream[at:at+1+length]; at += 1 + length
        if kind in (b"Q", b"S"):
            requests.append(messages); messages = b""
    for i, request in enumerate(requests):
        open(os.path.join(out, f"{name}-{i}"), "wb").write(b"\x01" + request)
    whole = b"".join(requests)
    open(os.path.join(out, f"{name}-all"), "wb").write(b"\x01" + whole)
    return len(requests) + 1

def mysql(stream, out, name):
    at, n = 0, 0
    while at + 4 <= len(stream):
        length = int.from_bytes(stream[at:at+3], "little"); seq = stream[at+3]
        payload = stream[at+4:at+4+length]; at += 4 + length
        if seq == 0 and payload[:1] == b"\x03":
            open(os.path.join(out, f"{name}-{n}"), "wb").write(payload[1:]); n += 1
    return n

kind, dump, out, name = sys.argv[1:]
os.makedirs(out, exist_ok=True)
stream = open(dump, "rb").read()
print((pg if kind == "pg" else mysql)(stream, out, name), "seeds")
