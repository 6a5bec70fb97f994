#!/usr/bin/env node
// A Prack worker in plain Node.js: the built-in `http` module, no packages.
//
//   node examples/node/worker.js http://127.0.0.1:4242   (or PRACK_API=...; that is the default)
//
// It long-polls GET /api/v1/request, runs `app` on the request and posts the
// answer to POST /api/v1/response, over one keep-alive connection. SIGTERM
// (or Ctrl-C) abandons an idle poll at once, finishes a request already
// taken, and exits 0.
'use strict';

const http = require('http');

const API = new URL((process.argv[2] || process.env.PRACK_API || 'http://127.0.0.1:4242').replace(/\/+$/, ''));
if (API.protocol !== 'http:') {
  console.error(`node worker: not an http:// URL: ${API.href}`);
  process.exit(2);
}
const FIRST_DELAY = 100;   // ms of backoff after the first failure
const MAX_DELAY = 5000;    // and its ceiling
const CALL_TIMEOUT = 60000; // a poll lasts api.poll_timeout (5 s by default)

// The application. `env` is the Prack (Rack/CGI) environment: header values
// are strings whose characters are the bytes the client sent (ISO-8859-1),
// so Buffer.from(value, 'latin1') gives those bytes back, and a value passed
// through unchanged reaches the client byte for byte. `body` is a Buffer.
// Returns {status, headers, body}; a header may hold a list of values.
function app(env, body) {
  const path = env.PATH_INFO;
  if (path === '/') {
    return { status: 200, headers: { 'Content-Type': 'text/plain; charset=utf-8' }, body: 'Hello from Node.js ✓\n' };
  }
  if (path === '/echo') {
    const headers = {
      'Content-Type': 'application/octet-stream',
      'X-Echo-Method': env.REQUEST_METHOD,
      'X-Echo-Path': path,
      'X-Echo-Query': env.QUERY_STRING,
    };
    if ('HTTP_X_TEST' in env) headers['X-Echo-Header'] = env.HTTP_X_TEST;
    return { status: 200, headers, body };
  }
  if (path === '/cookies') {
    return {
      status: 200,
      headers: { 'Content-Type': 'text/plain; charset=utf-8', 'Set-Cookie': ['a=1; Path=/', 'b=2; Path=/'] },
      body: 'two cookies\n',
    };
  }
  if (path === '/binary') {
    return { status: 200, headers: { 'Content-Type': 'application/octet-stream' }, body: Buffer.from([...Array(256).keys()]) };
  }
  return { status: 404, headers: { 'Content-Type': 'text/plain; charset=utf-8' }, body: `Not found: ${path}\n` };
}

// One socket, kept open between calls.
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
let stopping = false;
let polling = null;        // the idle long-poll in flight, aborted on SIGTERM
let wakeSleep = null;      // cuts a backoff sleep short on SIGTERM

// The server closed a kept-alive socket before answering (a restart, or its
// limits on idle connections): the call goes once more on a new socket. A
// post sent twice is harmless (the second gets 404).
const CLOSED = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);

function call(method, path, payload, again = true) {
  return new Promise((resolve, reject) => {
    const headers = {};
    if (payload !== undefined) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = Buffer.byteLength(payload);
    }
    const req = http.request({
      host: API.hostname.replace(/^\[|\]$/g, ''), port: API.port || 80, method, path, headers, agent, timeout: CALL_TIMEOUT,
    }, (res) => {
      // The answer has started: from here on a request it carries is ours
      // to serve, so SIGTERM no longer aborts this call.
      if (polling === req) polling = null;
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, data: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('no answer in time')));
    req.on('error', (err) => {
      if (again && req.reusedSocket && CLOSED.has(err.code) && !stopping) {
        resolve(call(method, path, payload, false));
      } else {
        reject(err);
      }
    });
    if (method === 'GET') polling = req;
    req.end(payload);
  }).finally(() => { if (method === 'GET') polling = null; });
}

function sleep(ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    wakeSleep = () => { clearTimeout(timer); resolve(); };
  }).finally(() => { wakeSleep = null; });
}

function answer(job) {
  let out;
  try {
    const body = Buffer.from(job.body || '', 'base64');
    out = app(job.environment, body);
  } catch (err) {
    console.error(`node worker: ${job.identifier}: app failed:`, err);
    out = { status: 500, headers: { 'Content-Type': 'text/plain; charset=utf-8' }, body: 'Internal Server Error\n' };
  }
  const body = Buffer.isBuffer(out.body) ? out.body : Buffer.from(String(out.body ?? ''), 'utf8');
  return JSON.stringify({
    identifier: job.identifier,
    code: out.status,
    headers: out.headers || {},
    body: body.toString('base64'),
  });
}

async function main() {
  console.error(`node worker: pulling requests from ${API.origin}`);
  let delay = 0;
  let connected = false;
  while (!stopping) {
    let res;
    try {
      res = await call('GET', '/api/v1/request');
      if (res.status !== 200 && res.status !== 404) {
        // 503 while the server stops, or a proxy's error page
        throw new Error(`GET /api/v1/request: ${res.status}`);
      }
    } catch (err) {
      if (stopping) break;
      connected = false;
      delay = Math.min(delay ? delay * 2 : FIRST_DELAY, MAX_DELAY);
      console.error(`node worker: cannot reach ${API.origin} (${err.message}); retrying in ${delay} ms`);
      await sleep(delay);
      continue;
    }
    delay = 0;
    if (!connected) {
      console.error(`node worker: connected to ${API.origin}`);
      connected = true;
    }
    if (res.status === 404) continue;   // nothing pending within the poll timeout
    // A request we took is answered even if SIGTERM arrives meanwhile.
    let job;
    try {
      job = JSON.parse(res.data.toString('utf8'));
    } catch (err) {
      console.error(`node worker: undecodable request payload: ${err.message}`);
      continue;
    }
    try {
      const posted = await call('POST', '/api/v1/response', answer(job));
      if (posted.status !== 200) {
        // 410: the client left; 404: answered already or timed out; 400: we
        // sent something invalid (the client got 502). None is fatal.
        console.error(`node worker: ${job.identifier}: response refused: ${posted.status} ${posted.data}`);
      }
    } catch (err) {
      console.error(`node worker: ${job.identifier}: posting the response failed: ${err.message}`);
    }
  }
  agent.destroy();
  console.error('node worker: stopping');
}

function stop() {
  stopping = true;
  if (polling) polling.destroy(new Error('stopping'));
  if (wakeSleep) wakeSleep();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

main().catch((err) => {
  console.error('node worker: fatal:', err);
  process.exit(1);
});
