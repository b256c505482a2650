#!/usr/bin/python3
"""Drive python-zunclient's own console client through a proxy URL.

Runs the CLI's real code path -- zunclient.common.websocketclient's
do_attach / do_exec, i.e. `openstack appcontainer attach` and
`exec --interactive` -- in a child process whose terminal is a pty this
driver controls: the client connects with its own options (subprotocols
["binary", "base64"], its Origin header), puts the terminal in raw mode,
sends what is typed, and decodes every received message as UTF-8 by itself
before writing it to the terminal. Nothing of the client is replaced but the
Zun API object used for terminal resizes, which go to Zun's API, not through
the proxy.

Usage:
  zunclient_driver.py attach|exec --url URL [--exec-id ID]
      [--send TEXT] [--expect TEXT] [--collect-out FILE] [--timeout S]

--send TEXT       typed once the client is connected (\\n escapes allowed)
--expect TEXT     succeed once TEXT was written to the terminal, then end the
                  client the way a user closing the terminal does
--collect-out F   wait for the session to end (the container exits) and
                  write what the client printed to F

Exit codes: 0 success; 1 timeout or expectation not met; 2 the client failed
to decode a message as UTF-8 (it dies on such output); 3 usage.
"""

import argparse
import os
import pty
import select
import signal
import sys
import time

BANNER_END = b"to disconnect"
DECODE_ERROR = b"ZUNCLIENT-DECODE-ERROR"


def run_client(kind, url, exec_id):
    """The child: the CLI's own attach/exec function on this terminal."""
    from types import SimpleNamespace
    from urllib import parse

    from zunclient.common.websocketclient import websocketclient as wc

    # Terminal resizes go to Zun's API, which is not part of this test.
    api = SimpleNamespace(containers=SimpleNamespace(
        resize=lambda *a: None, execute_resize=lambda *a: None))
    uuid = parse.parse_qs(parse.urlparse(url).query).get("uuid", ["?"])[0]
    try:
        if kind == "attach":
            wc.do_attach(api, url, uuid, "~", 0.5)
        else:
            wc.do_exec(api, url, uuid, exec_id, "~", 0.5)
    except UnicodeDecodeError as e:
        os.write(1, DECODE_ERROR + b": " + str(e).encode() + b"\r\n")
        os._exit(2)
    os._exit(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["attach", "exec"])
    ap.add_argument("--url", required=True)
    ap.add_argument("--exec-id", default="")
    ap.add_argument("--send", default="")
    ap.add_argument("--expect", default="")
    ap.add_argument("--collect-out", default="")
    ap.add_argument("--timeout", type=float, default=30)
    args = ap.parse_args()
    if not args.expect and not args.collect_out:
        ap.error("one of --expect or --collect-out is needed")

    os.environ["PYTHONIOENCODING"] = "utf-8"
    pid, master = pty.fork()
    if pid == 0:
        run_client(args.kind, args.url, args.exec_id)

    deadline = time.time() + args.timeout
    out = bytearray()
    sent = False
    banner_at = -1
    status = None
    while time.time() < deadline:
        r, _, _ = select.select([master], [], [], 0.1)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            if not chunk:
                break
            out += chunk
        if banner_at < 0 and BANNER_END in out:
            nl = out.find(b"\n", out.find(BANNER_END))
            if nl >= 0:
                banner_at = nl + 1
        if banner_at >= 0 and not sent and args.send:
            # The client is connected and its terminal raw: type.
            time.sleep(0.2)
            os.write(master, args.send.encode().decode("unicode_escape").encode("latin-1"))
            sent = True
        if args.expect and banner_at >= 0 and args.expect.encode() in out[banner_at:]:
            sys.stdout.buffer.write(bytes(out))
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
            return 0
    else:
        sys.stdout.buffer.write(bytes(out))
        sys.stderr.write("zunclient_driver: timed out\n")
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return 1

    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if DECODE_ERROR in out or code == 2:
        sys.stdout.buffer.write(bytes(out[-2000:]))
        sys.stderr.write("zunclient_driver: the client failed to decode a message as UTF-8\n")
        return 2
    if args.collect_out:
        with open(args.collect_out, "wb") as f:
            f.write(bytes(out[banner_at:] if banner_at >= 0 else out))
        return 0 if banner_at >= 0 else 1
    sys.stdout.buffer.write(bytes(out))
    sys.stderr.write("zunclient_driver: the client ended before %r appeared (exit %d)\n" % (args.expect, code))
    return 1


if __name__ == "__main__":
    sys.exit(main())
