// MQTT over WebSocket against our broker, driven by websockets_test.sh:
//
//   node websockets_test.js scenarios URL   MQTT.js scenario suite over URL
//   node websockets_test.js bad             bad input on the ws:// listener
//   node websockets_test.js browser         headless Chromium shows the dashboard
//
// Needs NODE_PATH pointing at a node_modules with `mqtt` (and its `ws`).
// Environment: WS_PORT, TCP_PORT, BROKER_LOG, MQTT_BIN, CDP_PORT. Prints
// one "PASS name" or "FAIL name: why" line per check; every wait is bounded.
"use strict";

const mqtt = require("mqtt");
const WebSocket = require("ws");
const net = require("net");
const fs = require("fs");
const crypto = require("crypto");
const { spawn, execFileSync } = require("child_process");

const RUN = `${process.pid}-${Math.floor(Math.random() * 1e6)}`;
const WAIT = 10000;
let failures = 0;

function within(ms, what, promise) {
  let t;
  const timeout = new Promise((_, rej) => {
    t = setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(t));
}

async function check(name, fn) {
  const start = Date.now();
  try {
    await within(30000, name, fn());
    console.log(`PASS ${name} (${Date.now() - start} ms)`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}: ${e && e.message ? e.message : e}`);
  }
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

// --- MQTT.js helpers ---------------------------------------------------------

function connect(url, opts = {}) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: WAIT, ...opts });
    c.once("connect", (ack) => resolve(Object.assign(c, { connack: ack })));
    c.once("error", reject);
    c.once("close", () => reject(new Error("closed before CONNACK")));
  });
}

const subscribe = (c, topic, opts) =>
  new Promise((res, rej) => c.subscribe(topic, opts, (e, g) => (e ? rej(e) : res(g))));
const publish = (c, topic, payload, opts) =>
  new Promise((res, rej) => c.publish(topic, payload, opts, (e) => (e ? rej(e) : res())));
const end = (c) => new Promise((res) => c.end(false, {}, res));

// The next message on `c` (optionally on one topic).
function nextMessage(c, topic) {
  return within(
    WAIT,
    `a message${topic ? " on " + topic : ""}`,
    new Promise((resolve) => {
      const on = (t, payload, packet) => {
        if (topic && t !== topic) return;
        c.removeListener("message", on);
        resolve({ topic: t, payload, packet });
      };
      c.on("message", on);
    }),
  );
}

// --- Scenario suite (MQTT.js over ws:// or wss://) ---------------------------

async function scenarios(url) {
  const tag = url.startsWith("wss") ? "wss" : "ws";
  for (const version of [4, 5]) {
    for (const qos of [0, 1, 2]) {
      await check(`${tag} mqtt${version === 5 ? "5" : "311"} qos${qos} round trip`, async () => {
        const topic = `ws/${RUN}/qos${qos}/v${version}`;
        const sub = await connect(url, { protocolVersion: version });
        const pub = await connect(url, { protocolVersion: version });
        const granted = await subscribe(sub, topic, { qos });
        assert(granted[0].qos === qos, `granted ${JSON.stringify(granted)}`);
        const got = nextMessage(sub, topic);
        await publish(pub, topic, `qos${qos}`, { qos });
        const m = await got;
        assert(m.payload.toString() === `qos${qos}`, `payload ${m.payload}`);
        assert(m.packet.qos === qos, `delivered at qos ${m.packet.qos}`);
        await Promise.all([end(sub), end(pub)]);
      });
    }
  }

  await check(`${tag} retained message set, then cleared`, async () => {
    const topic = `ws/${RUN}/retained/${tag}`;
    const pub = await connect(url);
    await publish(pub, topic, "kept", { qos: 1, retain: true });
    const a = await connect(url);
    const got = nextMessage(a, topic);
    await subscribe(a, topic, { qos: 1 });
    const m = await got;
    assert(m.packet.retain && m.payload.toString() === "kept", "retained message not delivered");
    await publish(pub, topic, "", { qos: 1, retain: true });
    // After clearing, the first message a new subscriber sees must be a
    // live one, not the old retained one.
    const b = await connect(url);
    const first = nextMessage(b, topic);
    await subscribe(b, topic, { qos: 1 });
    await publish(pub, topic, "live", { qos: 1 });
    const m2 = await first;
    assert(m2.payload.toString() === "live" && !m2.packet.retain, `got ${m2.payload} retain=${m2.packet.retain}`);
    await Promise.all([end(pub), end(a), end(b)]);
  });

  await check(`${tag} will published when the connection drops`, async () => {
    const topic = `ws/${RUN}/will/${tag}`;
    const watcher = await connect(url);
    await subscribe(watcher, topic, { qos: 1 });
    const dying = await connect(url, {
      will: { topic, payload: Buffer.from("gone"), qos: 1, retain: false },
    });
    const got = nextMessage(watcher, topic);
    dying.stream.destroy(); // no DISCONNECT, no close frame
    const m = await got;
    assert(m.payload.toString() === "gone", `will payload ${m.payload}`);
    dying.end(true);
    await end(watcher);
  });

  await check(`${tag} persistent session keeps a QoS 1 message while offline`, async () => {
    const topic = `ws/${RUN}/session/${tag}`;
    const clientId = `persist-${tag}-${RUN}`;
    const opts = { clientId, clean: false, protocolVersion: 4 };
    let s = await connect(url, opts);
    await subscribe(s, topic, { qos: 1 });
    await end(s);
    const pub = await connect(url);
    await publish(pub, topic, "while away", { qos: 1 });
    s = mqtt.connect(url, { ...opts, reconnectPeriod: 0 });
    const got = nextMessage(s, topic);
    const ack = await within(WAIT, "reconnect", new Promise((r) => s.once("connect", r)));
    assert(ack.sessionPresent, "session not present");
    const m = await got;
    assert(m.payload.toString() === "while away", `payload ${m.payload}`);
    await Promise.all([end(s), end(pub)]);
  });

  await check(`${tag} MQTT 5 properties pass through`, async () => {
    const topic = `ws/${RUN}/props/${tag}`;
    const sub = await connect(url, { protocolVersion: 5 });
    const pub = await connect(url, { protocolVersion: 5 });
    await subscribe(sub, topic, { qos: 1 });
    const got = nextMessage(sub, topic);
    await publish(pub, topic, "{}", {
      qos: 1,
      properties: {
        userProperties: { room: "kitchen", unit: "C" },
        contentType: "application/json",
        responseTopic: `${topic}/reply`,
        correlationData: Buffer.from("id-42"),
        messageExpiryInterval: 600,
        payloadFormatIndicator: true,
      },
    });
    const p = (await got).packet.properties || {};
    assert(p.userProperties && p.userProperties.room === "kitchen" && p.userProperties.unit === "C",
      `user properties ${JSON.stringify(p.userProperties)}`);
    assert(p.contentType === "application/json", `content type ${p.contentType}`);
    assert(p.responseTopic === `${topic}/reply`, `response topic ${p.responseTopic}`);
    assert(p.correlationData && p.correlationData.toString() === "id-42", "correlation data");
    assert(p.messageExpiryInterval > 0 && p.messageExpiryInterval <= 600, `expiry ${p.messageExpiryInterval}`);
    assert(p.payloadFormatIndicator === true, "payload format indicator");
    await Promise.all([end(sub), end(pub)]);
  });

  await check(`${tag} 1 MB binary payload arrives intact`, async () => {
    const topic = `ws/${RUN}/big/${tag}`;
    const payload = crypto.randomBytes(1024 * 1024);
    const sub = await connect(url, { protocolVersion: 5 });
    const pub = await connect(url, { protocolVersion: 5 });
    await subscribe(sub, topic, { qos: 1 });
    const got = nextMessage(sub, topic);
    await publish(pub, topic, payload, { qos: 1 });
    const m = await got;
    assert(Buffer.compare(m.payload, payload) === 0, `payload of ${m.payload.length} bytes differs`);
    await Promise.all([end(sub), end(pub)]);
  });

  await check(`${tag} $SYS is published to WebSocket clients`, async () => {
    const c = await connect(url);
    // The retained value may predate this client; the next update
    // (sys_interval_secs = 1) counts it.
    const seen = within(WAIT, "clients/connected >= 1", new Promise((resolve) => {
      c.on("message", (t, payload) => {
        if (Number(payload.toString()) >= 1) resolve();
      });
    }));
    await subscribe(c, "$SYS/broker/clients/connected", { qos: 0 });
    await seen;
    await end(c);
  });
}

// --- Bad input on the ws:// listener -------------------------------------------

const WS_PORT = Number(process.env.WS_PORT);
const wsUrl = `ws://127.0.0.1:${WS_PORT}/mqtt`;

function logHas(text) {
  return fs.readFileSync(process.env.BROKER_LOG, "utf8").includes(text);
}

async function waitLog(text) {
  const until = Date.now() + WAIT;
  while (Date.now() < until) {
    if (logHas(text)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no log line containing "${text}"`);
}

// Opens a raw socket, writes `data`, and collects everything until the
// server closes (bounded).
function rawExchange(data, { endAfterWrite = false } = {}) {
  return within(WAIT, "the server closes", new Promise((resolve, reject) => {
    const s = net.connect(WS_PORT, "127.0.0.1", () => {
      s.write(data);
      if (endAfterWrite) s.end();
    });
    const chunks = [];
    s.on("data", (d) => chunks.push(d));
    s.on("close", () => resolve(Buffer.concat(chunks)));
    s.on("error", reject);
  }));
}

// A WebSocket offering `mqtt`; resolves once open.
function openWs() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl, "mqtt");
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}

const closeCode = (ws) =>
  within(WAIT, "a close frame", new Promise((r) => ws.once("close", (code) => r(code))));

const UPGRADE = (extra) =>
  "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
  `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString("base64")}\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`;

async function bad() {
  const bystander = await connect(wsUrl, { protocolVersion: 5 });
  await subscribe(bystander, `bad/${RUN}/alive`, { qos: 1 });

  await check("text frame: close 1003 and a log line", async () => {
    const ws = await openWs();
    const code = closeCode(ws);
    ws.send("not mqtt");
    assert((await code) === 1003, "close code");
    await waitLog("text frame");
  });

  await check("message above max_packet_size: close 1009 and a log line", async () => {
    const ws = await openWs();
    const code = closeCode(ws);
    ws.send(Buffer.alloc(3 * 1024 * 1024, 0x30)); // max_packet_size is 2 MiB
    assert((await code) === 1009, "close code");
    await waitLog("larger than max_packet_size");
  });

  await check("handshake without the mqtt subprotocol: HTTP 400 and a log line", async () => {
    const out = (await rawExchange(UPGRADE(""))).toString();
    assert(out.startsWith("HTTP/1.1 400 "), out.split("\r\n")[0]);
    assert(out.includes('"mqtt"'), "the body names the subprotocol");
    await waitLog("upgrade refused (400");
  });

  await check("plain HTTP request for a missing file in http_dir: HTTP 404", async () => {
    const out = (await rawExchange("GET /no-such-file HTTP/1.1\r\nHost: x\r\n\r\n")).toString();
    assert(out.startsWith("HTTP/1.1 404 "), out.split("\r\n")[0]);
  });

  await check("truncated frame: connection closed and a log line", async () => {
    // Upgrade by hand, then half a masked binary frame, then end.
    const frame = Buffer.concat([Buffer.from([0x82, 0x80 | 100, 1, 2, 3, 4]), Buffer.alloc(20)]);
    const out = await within(WAIT, "upgrade and close", new Promise((resolve, reject) => {
      const s = net.connect(WS_PORT, "127.0.0.1", () => s.write(UPGRADE("Sec-WebSocket-Protocol: mqtt\r\n")));
      let buf = Buffer.alloc(0);
      let sent = false;
      s.on("data", (d) => {
        buf = Buffer.concat([buf, d]);
        if (!sent && buf.includes("\r\n\r\n")) {
          sent = true;
          s.write(frame);
          s.end();
        }
      });
      s.on("close", () => resolve(buf.toString("latin1")));
      s.on("error", reject);
    }));
    assert(out.startsWith("HTTP/1.1 101 "), out.split("\r\n")[0]);
    await waitLog("without a close frame");
  });

  await check("slowloris upgrade request: 408 after the connect timeout and a log line", async () => {
    const start = Date.now();
    const out = await within(WAIT, "408", new Promise((resolve, reject) => {
      const s = net.connect(WS_PORT, "127.0.0.1", () => s.write("GET /mqtt HTTP/1.1\r\nHost: 12"));
      const chunks = [];
      s.on("data", (d) => chunks.push(d));
      s.on("close", () => resolve(Buffer.concat(chunks).toString()));
      s.on("error", reject);
    }));
    assert(out.startsWith("HTTP/1.1 408 "), out.split("\r\n")[0] || "nothing");
    assert(Date.now() - start >= 1500, "closed before the 2 s connect timeout");
    await waitLog("not received within the CONNECT timeout");
  });

  await check("other clients are unaffected by all of the above", async () => {
    assert(bystander.connected, "the bystander was disconnected");
    const got = nextMessage(bystander, `bad/${RUN}/alive`);
    await publish(bystander, `bad/${RUN}/alive`, "still here", { qos: 1 });
    assert((await got).payload.toString() === "still here", "payload");
    await end(bystander);
  });
}

// --- The dashboard in headless Chromium --------------------------------------------

async function browser() {
  const cdpPort = Number(process.env.CDP_PORT);
  let page;
  await check("chromium opens the dashboard served by http_dir", async () => {
    let targets;
    const until = Date.now() + 20000;
    while (!targets) {
      try {
        const r = await fetch(`http://127.0.0.1:${cdpPort}/json/list`);
        targets = (await r.json()).filter((t) => t.type === "page");
        if (targets.length === 0) targets = undefined;
      } catch (_) { /* not up yet */ }
      if (!targets) {
        if (Date.now() > until) throw new Error("no DevTools endpoint");
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    page = await cdp(targets[0].webSocketDebuggerUrl);
    await page.send("Page.enable");
    await page.send("Page.navigate", { url: `http://127.0.0.1:${WS_PORT}/` });
    await waitDom(page, "document.getElementById('status')?.textContent", "connected");
  });
  if (!page) return;

  await check("a message published with `mqtt pub` over TCP appears on the page", async () => {
    execFileSync(process.env.MQTT_BIN, [
      "pub", "-h", "127.0.0.1", "-p", process.env.TCP_PORT, "-t", "room_temp", "-m", "23.4", "-q", "1",
    ], { timeout: WAIT });
    await waitDom(page, "document.getElementById('latest').textContent", "23.4");
    execFileSync(process.env.MQTT_BIN, [
      "pub", "-L", `ws://127.0.0.1:${WS_PORT}/mqtt/room_temp`, "-m", "24.1",
    ], { timeout: WAIT });
    await waitDom(page, "document.getElementById('latest').textContent", "24.1");
    await waitDom(page, "document.getElementById('count').textContent", "2");
    const points = await evaluate(page, "document.getElementById('line').getAttribute('points')");
    assert(points.trim().split(" ").length === 2, `chart points "${points}"`);
  });
  page.close();
}

// A minimal DevTools protocol session over the page's WebSocket.
function cdp(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    let id = 0;
    const pending = new Map();
    ws.on("message", (data) => {
      const msg = JSON.parse(data.toString());
      if (msg.id && pending.has(msg.id)) {
        const { res, rej } = pending.get(msg.id);
        pending.delete(msg.id);
        msg.error ? rej(new Error(msg.error.message)) : res(msg.result);
      }
    });
    ws.once("error", reject);
    ws.once("open", () =>
      resolve({
        send: (method, params = {}) =>
          new Promise((res, rej) => {
            const n = ++id;
            pending.set(n, { res, rej });
            ws.send(JSON.stringify({ id: n, method, params }));
          }),
        close: () => ws.close(),
      }),
    );
  });
}

async function evaluate(page, expr) {
  const r = await page.send("Runtime.evaluate", { expression: expr, returnByValue: true });
  return r.result.value;
}

async function waitDom(page, expr, want) {
  const until = Date.now() + 20000;
  let last;
  while (Date.now() < until) {
    try {
      last = await evaluate(page, expr);
      if (last === want) return;
    } catch (_) { /* page navigating */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${expr} is ${JSON.stringify(last)}, expected ${JSON.stringify(want)}`);
}

(async () => {
  const [mode, url] = process.argv.slice(2);
  if (mode === "scenarios") await scenarios(url);
  else if (mode === "bad") await bad();
  else if (mode === "browser") await browser();
  else throw new Error(`unknown mode ${mode}`);
  process.exit(failures ? 1 : 0);
})().catch((e) => {
  console.log(`FAIL ${process.argv[2]}: ${e.message}`);
  process.exit(1);
});
