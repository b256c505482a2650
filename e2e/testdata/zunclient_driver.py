#!/usr/bin/python3
"""Drive python-zunclient's own console client through a proxy URL.

Runs the CLI's real code path -- zunclient.common.websocketclient's
do_attach / do_exec (AttachClient / ExecClient), i.e. `openstack
appcontainer attach` and `exec --interactive` -- in a child process whose
terminal is a pty this driver controls. Why a pty rather than calling
connect() and recv() by hand: the client's loop (start_loop, run_forever,
handle_socket, handle_stdin) is where it decodes every received message as
UTF-8 on its own and writes it to the terminal, and it polls a real stdin;
on a pty that loop runs unmodified. So the client connects with its own
options (subprotocols ["binary", "base64"], Origin http://HOST:PORT, or
https:// for wss), puts the terminal in raw mode (no \\n -> \\r\\n on output,
no echo of what is typed), sends what is typed as binary messages, and
decodes each message by itself. Nothing of the client is replaced but the
Zun API object used for terminal resizes, which go to Zun's API, not
through the proxy.

The driver ends the client as a CLI user does: by closing its terminal
(the pty master), so the kernel hangs it up and the process dies with its
socket, which closes without a WebSocket close frame. (The client's `~.`
escape never fires on Python 3: it compares bytes read from stdin with the
str '~'.)

Usage:
  zunclient_driver.py [attach|exec] --url URL [--exec-id ID]
      [--send TEXT] [--expect TEXT | --collect-bytes N --out FILE
       | --collect-out FILE] [--timeout S]

attach|exec       which client; default: exec when URL has exec_id=, else
                  attach
--exec-id ID      default: the URL's exec_id query parameter
--send TEXT       typed once the client is connected (\\n escapes allowed)
--expect TEXT     succeed once TEXT was written to the terminal, print what
                  the client wrote, then close its terminal
--collect-bytes N receive until the client wrote N bytes of text (0: until
                  the session ends), then write them to --out FILE
--collect-out F   same as --collect-bytes 0 --out F

Exit codes: 0 success; 1 timeout, the session ended before --expect
appeared, or the client failed otherwise (a traceback); 2 the client failed to decode a message as UTF-8 by itself (it
dies on such output; the message is printed); 3 usage.
"""

import argparse
import os
import pty
import select
import signal
import sys
import time
from urllib import parse

BANNER_END = b"to disconnect"
DECODE_ERROR = b"ZUNCLIENT-DECODE-ERROR"


def run_client(kind, url, exec_id):
    """The child: the CLI's own attach/exec function on this terminal."""
    from types import SimpleNamespace

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
        # websocket-client's recv() decodes text frames, handle_socket()
        # binary ones: either way the CLI dies with this error.
        os.write(1, DECODE_ERROR + b": " + str(e).encode() + b"\r\n")
        os._exit(2)
    os._exit(0)


def hang_up(pid, master):
    """Close the client's terminal, as a user closing the window does."""
    os.close(master)
    for _ in range(50):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


def main():
    ap = argparse.ArgumentParser(usage=__doc__.split("Usage:\n")[1].split("\n\n")[0])
    ap.error = lambda msg: (sys.stderr.write("zunclient_driver: %s\n" % msg), sys.exit(3))
    ap.add_argument("kind", nargs="?", choices=["attach", "exec"])
    ap.add_argument("--url", required=True)
    ap.add_argument("--exec-id", default="")
    ap.add_argument("--send", default="")
    ap.add_argument("--expect", default="")
    ap.add_argument("--collect-bytes", type=int, default=None)
    ap.add_argument("--out", default="")
    ap.add_argument("--collect-out", default="")
    ap.add_argument("--timeout", type=float, default=30)
    ap.add_argument("--send-delay", type=float, default=0.2,
                    help="seconds to wait after connecting before typing (idle time)")
    args = ap.parse_args()
    if args.collect_out:
        args.out = args.collect_out
        if args.collect_bytes is None:
            args.collect_bytes = 0
    collect = args.collect_bytes is not None
    if collect and not args.out:
        ap.error("--collect-bytes needs --out FILE")
    if bool(args.expect) == collect:
        ap.error("give one of --expect or --collect-bytes/--collect-out")
    query = parse.parse_qs(parse.urlparse(args.url).query)
    exec_id = args.exec_id or query.get("exec_id", [""])[0]
    kind = args.kind or ("exec" if exec_id else "attach")
    if kind == "exec" and not exec_id:
        ap.error("exec needs --exec-id or exec_id= in the URL")

    os.environ["PYTHONIOENCODING"] = "utf-8"
    pid, master = pty.fork()
    if pid == 0:
        run_client(kind, args.url, exec_id)

    deadline = time.time() + args.timeout
    out = bytearray()
    sent = False
    banner_at = -1
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
        if banner_at < 0:
            continue
        if not sent and args.send:
            # The client is connected; let it put the terminal in raw mode
            # (and stay idle as long as asked).
            time.sleep(args.send_delay)
            os.write(master, args.send.encode().decode("unicode_escape").encode("latin-1"))
            sent = True
        got = out[banner_at:]
        if args.expect and args.expect.encode() in got:
            sys.stdout.buffer.write(bytes(out))
            hang_up(pid, master)
            return 0
        if collect and args.collect_bytes > 0 and len(got) >= args.collect_bytes:
            if DECODE_ERROR in got:
                break
            with open(args.out, "wb") as f:
                f.write(bytes(got))
            print("zunclient_driver: collected %d bytes" % len(got))
            hang_up(pid, master)
            return 0
    else:
        sys.stdout.buffer.write(bytes(out[-4000:]))
        sys.stderr.write("zunclient_driver: timed out after %gs\n" % args.timeout)
        hang_up(pid, master)
        return 1

    # The client ended by itself: the session was closed by the other side.
    _, status = os.waitpid(pid, 0)
    os.close(master)
    code = os.waitstatus_to_exitcode(status)
    if DECODE_ERROR in out or code == 2:
        sys.stdout.buffer.write(bytes(out[-2000:]))
        sys.stderr.write("zunclient_driver: the client failed to decode a message as UTF-8\n")
        return 2
    if code != 0:
        # E.g. a close code websocket-client rejects (1012, 1013) raises
        # WebSocketProtocolException out of the CLI: a traceback, exit 1.
        sys.stdout.buffer.write(bytes(out[-4000:]))
        sys.stderr.write("zunclient_driver: the client failed (exit %d)\n" % code)
        return 1
    if collect and banner_at >= 0:
        with open(args.out, "wb") as f:
            f.write(bytes(out[banner_at:]))
        print("zunclient_driver: collected %d bytes; the session ended" % (len(out) - banner_at))
        return 0
    sys.stdout.buffer.write(bytes(out))
    what = repr(args.expect) if args.expect else "the connection"
    sys.stderr.write("zunclient_driver: the client ended before %s appeared (exit %d)\n" % (what, code))
    return 1


if __name__ == "__main__":
    sys.exit(main())
