#!/usr/bin/env python3
"""Ping an MTProto proxy with TDLib (PyPI `tdjson`) and print one JSON result line.

Usage: tdlib_ping.py --server 127.0.0.1 --port PORT --secret SECRET [--timeout S] [--add]

TDLib 1.8.69 (tdjson 1.8.69) request shapes that work:
  {"@type": "pingProxy", "proxy": {"@type": "proxy", "server": S, "port": P,
     "type": {"@type": "proxyTypeMtproto", "secret": SECRET}}}      -> {"@type": "seconds", ...}
  {"@type": "addProxy", "proxy": {...same...}, "enable": false}      -> {"@type": "addedProxy", "id": N, ...}
The old flat addProxy shape (server/port/type at top level) aborts this TDLib, and
`pingProxy {"proxy_id": N}` is ignored (it pings Telegram directly), so neither is used.
setTdlibParameters is required before any proxy request is answered; it makes TDLib dial
Telegram's DCs, which is why this script only runs in a loopback-only network namespace.

Result: {"ok": true, "seconds": F, ...} or {"ok": false, "error": "...", "code": N, ...}.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _netcheck import emit, fail, require_loopback_only  # noqa: E402

API_ID = 94575
API_HASH = "a3406de8d171bb422bb6ddf3bbd800e2"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--server", default=os.environ.get("PROXY_SERVER", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("PROXY_PORT", "0")))
    p.add_argument("--secret", default=os.environ.get("PROXY_SECRET", ""))
    p.add_argument("--timeout", type=float, default=float(os.environ.get("PING_TIMEOUT", "30")))
    p.add_argument("--add", action="store_true", help="addProxy first and report its answer")
    p.add_argument("--verbosity", type=int, default=int(os.environ.get("TDLIB_VERBOSITY", "0")))
    a = p.parse_args()
    if not a.port or not a.secret:
        fail("need --port and --secret")
    require_loopback_only(a.server)

    try:
        import tdjson
    except ImportError as e:
        fail(f"python package tdjson missing ({e}); pip install -r tests/clients/requirements.txt")

    tdjson.td_execute(json.dumps({"@type": "setLogVerbosityLevel",
                                  "new_verbosity_level": a.verbosity}).encode())
    client = tdjson.td_create_client_id()

    def send(request):
        tdjson.td_send(client, json.dumps(request).encode())

    db = tempfile.mkdtemp(prefix="tdlib-ping-")
    result = {"ok": False, "tdlib_version": tdjson.__version__}
    try:
        send({"@type": "setTdlibParameters", "use_test_dc": False,
              "database_directory": db, "files_directory": db, "database_encryption_key": "",
              "use_file_database": False, "use_chat_info_database": False,
              "use_message_database": False, "use_secret_chats": False,
              "api_id": API_ID, "api_hash": API_HASH, "system_language_code": "en",
              "device_model": "mtg-tests", "system_version": "linux",
              "application_version": "1.0", "@extra": "params"})
        proxy = {"@type": "proxy", "server": a.server, "port": a.port,
                 "type": {"@type": "proxyTypeMtproto", "secret": a.secret}}
        if a.add:
            send({"@type": "addProxy", "proxy": proxy, "enable": False, "@extra": "add"})
        started = time.monotonic()
        send({"@type": "pingProxy", "proxy": proxy, "@extra": "ping"})
        deadline = started + a.timeout
        while time.monotonic() < deadline:
            raw = tdjson.td_receive(0.5)
            if not raw:
                continue
            msg = json.loads(raw)
            extra = msg.get("@extra")
            if extra == "params" and msg.get("@type") == "error":
                result["error"] = "setTdlibParameters: " + msg.get("message", "")
                break
            if extra == "add":
                result["added"] = msg
            if extra == "ping":
                result["elapsed"] = round(time.monotonic() - started, 3)
                if msg.get("@type") == "seconds":
                    result.update(ok=True, seconds=msg.get("seconds"))
                else:
                    result.update(error=msg.get("message", str(msg)), code=msg.get("code"))
                break
        else:
            result["error"] = f"no pingProxy answer within {a.timeout}s"
    finally:
        send({"@type": "close"})
        end = time.monotonic() + 5
        while time.monotonic() < end:
            raw = tdjson.td_receive(0.2)
            if raw and b"authorizationStateClosed" in raw:
                break
        shutil.rmtree(db, ignore_errors=True)
    emit(result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
