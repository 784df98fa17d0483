"""Shared guard of the client scripts: refuse to run outside a loopback-only network namespace.

TDLib and Telethon dial Telegram's real addresses on their own (TDLib as soon as it is given
its parameters), so the scripts only run where nothing but loopback exists.
"""
import ipaddress
import json
import sys


def interfaces():
    # /proc/self/net/dev follows the namespace of this process (unlike /sys/class/net).
    with open("/proc/self/net/dev") as f:
        lines = f.read().splitlines()[2:]
    return [line.split(":", 1)[0].strip() for line in lines if ":" in line]


def require_loopback_only(server):
    ifaces = interfaces()
    if any(i != "lo" for i in ifaces):
        fail("refusing to run outside a loopback-only network namespace "
             f"(interfaces: {ifaces}); run under `unshare -n` with lo up")
    if not ipaddress.ip_address(server).is_loopback:
        fail(f"server {server} is not a loopback address")


def emit(result):
    print(json.dumps(result, sort_keys=True), flush=True)


def fail(message, **extra):
    emit(dict(ok=False, error=message, **extra))
    sys.exit(2)
