// signal-sdk-driver.js PARLEY ACCOUNT: drives `PARLEY -a ACCOUNT jsonRpc`
// through signal-sdk's SignalCli class, exactly as a bot would drive
// signal-cli (signal-sdk spawns "<path> -a ACCOUNT jsonRpc" itself).
// The Go test (signalcli_test.go) writes one call per line on stdin,
// {"id":N,"method":"sendMessage","args":[...]}, and reads one JSON line per
// answer ({"id":N,"result":...} or {"id":N,"error":"..."}), per received
// notification ({"event":params}) and per SDK error ({"sdkError":"..."}).
'use strict';
const readline = require('readline');
const { SignalCli } = require('signal-sdk');

const [, , parley, account] = process.argv;
const sdk = new SignalCli(parley, account);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
sdk.on('message', (params) => out({ event: params }));
sdk.on('error', (e) => out({ sdkError: String((e && e.message) || e) }));

(async () => {
  await sdk.connect();
  out({ ready: true });
  for await (const line of readline.createInterface({ input: process.stdin })) {
    const { id, method, args } = JSON.parse(line);
    try {
      out({ id, result: (await sdk[method](...args)) ?? null });
    } catch (e) {
      out({ id, error: String(e.message) });
    }
  }
  await sdk.gracefulShutdown();
})().catch((e) => {
  out({ fatal: String(e) });
  process.exit(1);
});
