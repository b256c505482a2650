// zun-wsproxy web console: a terminal on a console WebSocket.
//
// The page is opened as /console?token=TOKEN. It connects to the proxy on
// the same origin with the subprotocol "console.zun-wsproxy.v1": binary
// messages carry terminal bytes both ways; text messages from the page
// carry JSON control messages, {"type":"resize","rows":R,"cols":C}, so a
// keystroke can never be read as a command.
(function () {
  "use strict";
  const SUBPROTOCOL = "console.zun-wsproxy.v1";
  const stateEl = document.getElementById("state");
  const titleEl = document.getElementById("title");

  function setState(state, text) {
    stateEl.dataset.state = state;
    stateEl.textContent = text;
  }

  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  // Keep the token out of the address bar, history and bookmarks.
  history.replaceState(null, "", location.pathname);
  if (!token) {
    setState("failed", "no token in the address: open the URL the token command printed");
    return;
  }

  const term = new Terminal({ cursorBlink: true, scrollback: 5000, convertEol: false });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(document.getElementById("terminal"));
  fit.fit();
  window.zunConsole = { term: term }; // for tests and the curious

  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const base = location.pathname.replace(/\/console\/?$/, "/");
  const ws = new WebSocket(scheme + "//" + location.host + base + "?token=" + encodeURIComponent(token), [SUBPROTOCOL]);
  ws.binaryType = "arraybuffer";
  const encoder = new TextEncoder();
  let opened = false;

  function sendSize() {
    if (ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ type: "resize", rows: term.rows, cols: term.cols }));
    }
  }

  ws.onopen = function () {
    opened = true;
    setState("connected", "connected");
    sendSize();
    term.focus();
  };
  ws.onmessage = function (ev) {
    if (typeof ev.data !== "string") term.write(new Uint8Array(ev.data));
  };
  ws.onclose = function (ev) {
    if (!opened) {
      setState("failed", "could not connect: the token is invalid, expired or used up, or the container is not running");
      return;
    }
    const reason = ev.reason || (ev.code === 1006 ? "connection lost" : "closed (code " + ev.code + ")");
    setState("ended", "session ended: " + reason);
    term.write("\r\n\x1b[2m[session ended: " + reason + "]\x1b[0m\r\n");
  };

  term.onData(function (data) {
    if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data));
  });
  term.onBinary(function (data) {
    if (ws.readyState !== WebSocket.OPEN) return;
    const bytes = new Uint8Array(data.length);
    for (let i = 0; i < data.length; i++) bytes[i] = data.charCodeAt(i) & 0xff;
    ws.send(bytes);
  });
  term.onResize(sendSize);

  let pending = 0;
  window.addEventListener("resize", function () {
    clearTimeout(pending);
    pending = setTimeout(function () { fit.fit(); }, 50);
  });
  titleEl.textContent = "Console";
})();
