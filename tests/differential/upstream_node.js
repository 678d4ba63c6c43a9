// Upstream for the differential tests: Node's own `http` parser (llhttp), no framework.
//
// usage: node upstream_node.js PORT LOG_FILE
// Answers every request at once with 200 (as an app that ignores the body of a
// request it does not need does), keeps the connection alive, and appends one
// JSON line per request to LOG_FILE once its body has ended or the connection
// closed: method, url as parsed, every header as received and the number of
// body bytes read.
"use strict";

const fs = require("fs");
const http = require("http");

const [port, logFile] = process.argv.slice(2);

function pairs(raw) {
  const out = [];
  for (let i = 0; i < raw.length; i += 2) out.push([raw[i], raw[i + 1]]);
  return out;
}

const server = http.createServer((req, res) => {
  let bytes = 0;
  let logged = false;
  const log = (complete) => {
    if (logged) return;
    logged = true;
    const entry = {
      method: req.method,
      url: req.url,
      headers: pairs(req.rawHeaders),
      body_bytes: bytes,
      complete: complete,
    };
    fs.appendFileSync(logFile, JSON.stringify(entry) + "\n");
  };
  req.on("data", (chunk) => {
    bytes += chunk.length;
  });
  req.on("end", () => log(true));
  req.on("close", () => log(req.complete));
  const body = "node ok\n";
  res.writeHead(200, {
    "Content-Type": "text/plain",
    "Content-Length": Buffer.byteLength(body),
    "X-Upstream": "node",
  });
  res.end(body);
});

server.keepAliveTimeout = 60000;
server.headersTimeout = 65000;
server.requestTimeout = 0;
server.listen(Number(port), "127.0.0.1", () => {
  process.stdout.write("listening\n");
});
process.on("SIGTERM", () => process.exit(0));
