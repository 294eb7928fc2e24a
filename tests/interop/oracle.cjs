#!/usr/bin/env node
// The official Alipay Node SDK (npm alipay-sdk@4.14.0) as a test oracle.
//
// One long-lived process per pytest session. It reads one JSON command per line on stdin and
// writes one JSON answer per line on stdout: {"id": <id>, "ok": true, "result": ...} or
// {"id": <id>, "ok": false, "error": "..."}. Commands run one at a time, in order.
//
// It also runs a capture HTTP server on 127.0.0.1 (port announced in the first line): every request
// it receives is recorded (method, target, headers, body bytes) and answered with the canned
// response the Python side armed. Both the SDK's `curl` and our Python client are pointed at it,
// so their requests can be compared byte for byte.
//
// Only the SDK's own code paths are used (required from its dist/commonjs build by absolute path,
// because the package's "exports" map hides the internal modules).
'use strict';

const path = require('node:path');
const http = require('node:http');
const readline = require('node:readline');
const nodeCrypto = require('node:crypto');

const sdkRoot = path.resolve(__dirname, '..', '..', 'node_modules', 'alipay-sdk');
const sdkVersion = require(path.join(sdkRoot, 'package.json')).version;
const { AlipaySdk } = require(path.join(sdkRoot, 'dist', 'commonjs', 'alipay.js'));
const util = require(path.join(sdkRoot, 'dist', 'commonjs', 'util.js'));
const antcertutil = require(path.join(sdkRoot, 'dist', 'commonjs', 'antcertutil.js'));

// --- pinning the nonce and the clock ---------------------------------------------------------
// alipay.js builds the auth string with `(0, node_crypto_1.randomUUID)()` and `Date.now()`, looking
// both up on the shared module object / global at call time, so replacing them here is seen by the
// SDK. They are pinned only for the synchronous part of `sdk.curl` (which signs before its first
// await) and restored right after.
const realRandomUUID = nodeCrypto.randomUUID;
const realDateNow = Date.now;

function withPinned(nonce, timestamp, fn) {
  nodeCrypto.randomUUID = () => nonce;
  Date.now = () => timestamp;
  try {
    return fn();
  } finally {
    nodeCrypto.randomUUID = realRandomUUID;
    Date.now = realDateNow;
  }
}

// --- capture server ---------------------------------------------------------------------------
let armedResponse = null;
let captured = [];

function decodeBody(spec) {
  if (spec.body_b64 !== undefined) return Buffer.from(spec.body_b64, 'base64');
  return Buffer.from(spec.body ?? '', 'utf8');
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    const headers = {};
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      headers[req.rawHeaders[i].toLowerCase()] = req.rawHeaders[i + 1];
    }
    captured.push({
      method: req.method,
      target: req.url,
      headers,
      body_b64: Buffer.concat(chunks).toString('base64'),
    });
    const spec = armedResponse ?? { status: 599, headers: {}, body: '{"code":"not-armed","message":"no response armed"}' };
    const body = decodeBody(spec);
    res.writeHead(spec.status, { 'content-length': body.length, ...(spec.headers ?? {}) });
    res.end(body);
  });
});

function arm(response) {
  armedResponse = response;
  captured = [];
}

function take() {
  const result = captured;
  captured = [];
  armedResponse = null;
  return result;
}

// --- SDK construction -------------------------------------------------------------------------
function makeSdk(config) {
  const sdkConfig = {
    appId: config.appId,
    privateKey: config.privateKey,
    endpoint: config.endpoint ?? `http://127.0.0.1:${server.address().port}`,
    timeout: config.timeout ?? 10000,
  };
  for (const name of ['keyType', 'alipayPublicKey', 'appCertContent', 'alipayPublicCertContent',
    'alipayRootCertContent', 'encryptKey']) {
    if (config[name] !== undefined && config[name] !== null) sdkConfig[name] = config[name];
  }
  return new AlipaySdk(sdkConfig);
}

function outcomeOfError(err) {
  return {
    ok: false,
    code: err.code ?? null,
    name: err.name ?? null,
    message: String(err.message ?? err),
    status: err.responseHttpStatus ?? null,
  };
}

async function curl(sdk, cmd) {
  const options = {};
  if (cmd.body !== undefined && cmd.body !== null) options.body = cmd.body;
  if (cmd.query) options.query = cmd.query;
  if (cmd.appAuthToken) options.appAuthToken = cmd.appAuthToken;
  if (cmd.needEncrypt) options.needEncrypt = true;
  if (cmd.requestId) options.requestId = cmd.requestId;
  let pending;
  try {
    pending = cmd.nonce !== undefined
      ? withPinned(cmd.nonce, cmd.timestamp, () => sdk.curl(cmd.method, cmd.path, options))
      : sdk.curl(cmd.method, cmd.path, options);
    const result = await pending;
    return { ok: true, data: result.data, status: result.responseHttpStatus, traceId: result.traceId };
  } catch (err) {
    return outcomeOfError(err);
  }
}

// --- commands ---------------------------------------------------------------------------------
const commands = {
  hello: async () => ({ sdkVersion, node: process.version, port: server.address().port }),

  // The SDK signs a request and sends it to the capture server, which answers with `response`.
  request: async (cmd) => {
    const sdk = makeSdk(cmd.config);
    arm(cmd.response);
    const outcome = await curl(sdk, cmd);
    const requests = take();
    return { outcome, requests };
  },

  // Arm the capture server for a request someone else (our Python client) is about to make...
  arm: async (cmd) => {
    arm(cmd.response);
    return null;
  },
  // ...and hand over what it received.
  take: async () => take(),

  // The SDK's own client against a real endpoint (our emulator).
  curl: async (cmd) => curl(makeSdk(cmd.config), cmd),

  sn: async (cmd) => antcertutil.getSN(cmd.pem, false),
  root_sn: async (cmd) => antcertutil.getSN(cmd.pem, true),
  cert_public_key: async (cmd) => antcertutil.loadPublicKey(cmd.pem),

  aes_encrypt: async (cmd) => util.aesEncryptText(cmd.text, cmd.key),
  aes_decrypt: async (cmd) => {
    try {
      return { ok: true, text: util.aesDecryptText(cmd.ciphertext, cmd.key) };
    } catch (err) {
      return { ok: false, message: String(err.message ?? err) };
    }
  },

  // signatureV3 / verifySignatureV3 take PEM keys; go through the SDK's formatKey like its
  // constructor does, so bare base64 keys work too.
  sign: async (cmd) => {
    const sdk = makeSdk({ appId: '2021000000000000', privateKey: cmd.privateKey, keyType: cmd.keyType });
    return util.signatureV3(cmd.content, sdk.config.privateKey);
  },
  verify: async (cmd) => {
    const sdk = makeSdk({ appId: '2021000000000000', privateKey: cmd.anyPrivateKey, keyType: cmd.keyType,
      alipayPublicKey: cmd.publicKey });
    try {
      return util.verifySignatureV3(cmd.content, cmd.signature, sdk.config.alipayPublicKey);
    } catch (err) {
      return false;
    }
  },

  notify_check: async (cmd) => {
    const sdk = makeSdk(cmd.config);
    return cmd.raw ? sdk.checkNotifySignV2(cmd.params) : sdk.checkNotifySign(cmd.params);
  },
};

function reply(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

async function handle(line) {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (err) {
    reply({ id: null, ok: false, error: `bad JSON command: ${err.message}` });
    return;
  }
  const handler = commands[cmd.cmd];
  if (!handler) {
    reply({ id: cmd.id ?? null, ok: false, error: `unknown command ${cmd.cmd}` });
    return;
  }
  try {
    reply({ id: cmd.id ?? null, ok: true, result: await handler(cmd) });
  } catch (err) {
    reply({ id: cmd.id ?? null, ok: false, error: `${err.name}: ${err.message}` });
  }
}

server.listen(0, '127.0.0.1', () => {
  reply({ id: 'ready', ok: true, result: { sdkVersion, port: server.address().port } });
  const rl = readline.createInterface({ input: process.stdin, terminal: false });
  // Strictly one command at a time: the capture server state is shared.
  let queue = Promise.resolve();
  rl.on('line', (line) => {
    if (line.trim()) queue = queue.then(() => handle(line));
  });
  // stdin closed: the session is over. Exit without waiting for keep-alive connections to drain.
  rl.on('close', () => {
    queue.then(() => process.exit(0));
  });
});
