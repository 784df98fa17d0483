#!/usr/bin/env python3
"""Connect Telethon (PyPI `telethon`) through an MTProto proxy with a `dd` secret and print
one JSON result line.

Usage: telethon_dd.py --server 127.0.0.1 --port PORT --secret ddHEX [--dc N] [--timeout S]

Telethon uses ConnectionTcpMTProxyRandomizedIntermediate (obfuscated2, tag dd dd dd dd,
padded intermediate) and, after the 64-byte frame, waits 2 s for the proxy to object, then
starts MTProto auth key generation with req_pq_multi. Against the fake DC the exchange cannot
complete (its resPQ is not backed by a real key), so `ok` is false by design; the test checks
what the fake DC received. `connected` is true only if Telethon fully connected.

Result: {"ok": bool, "connected": bool, "error": "...", "log_tail": [...]}.
"""
import argparse
import asyncio
import logging
import os
import sys
import warnings

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _netcheck import emit, fail, require_loopback_only  # noqa: E402

API_ID = 94575
API_HASH = "a3406de8d171bb422bb6ddf3bbd800e2"


class Tail(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(f"{record.name}: {record.getMessage()}"[:300])
        del self.lines[:-15]


async def run(a, tail):
    from telethon import TelegramClient
    from telethon.network import ConnectionTcpMTProxyRandomizedIntermediate
    from telethon.sessions import MemorySession

    session = MemorySession()
    # The address is not dialled with MTProxy; the DC id goes into the obfuscated2 frame.
    session.set_dc(a.dc, "127.0.0.1", 443)
    client = TelegramClient(session, API_ID, API_HASH,
                            connection=ConnectionTcpMTProxyRandomizedIntermediate,
                            proxy=(a.server, a.port, a.secret),
                            connection_retries=0, retry_delay=0, auto_reconnect=False,
                            timeout=a.timeout, receive_updates=False)
    result = {"ok": False, "connected": False, "dc": a.dc}
    try:
        await asyncio.wait_for(client.connect(), a.timeout + 5)
        result.update(ok=True, connected=client.is_connected())
    except BaseException as e:  # noqa: BLE001 - any failure is a result
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        try:
            await asyncio.wait_for(client.disconnect(), 5)
        except BaseException:  # noqa: BLE001
            pass
    result["log_tail"] = tail.lines
    return result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--server", default=os.environ.get("PROXY_SERVER", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("PROXY_PORT", "0")))
    p.add_argument("--secret", default=os.environ.get("PROXY_SECRET", ""))
    p.add_argument("--dc", type=int, default=int(os.environ.get("PROXY_DC", "2")))
    p.add_argument("--timeout", type=float, default=float(os.environ.get("CONNECT_TIMEOUT", "10")))
    a = p.parse_args()
    if not a.port or not a.secret:
        fail("need --port and --secret")
    require_loopback_only(a.server)
    try:
        import telethon  # noqa: F401
    except ImportError as e:
        fail(f"python package telethon missing ({e}); pip install -r tests/clients/requirements.txt")
    # Telethon warns that python-socks is missing: irrelevant, MTProxy does not use it.
    warnings.filterwarnings("ignore", message="proxy argument will be ignored")
    tail = Tail()
    logging.getLogger("telethon").addHandler(tail)
    logging.getLogger("telethon").setLevel(logging.DEBUG)
    result = asyncio.run(run(a, tail))
    emit(result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
