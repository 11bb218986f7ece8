// decrypt.cjs: reads {"body","privateKey","authSecret"} (base64) on stdin,
// decrypts body (RFC 8291, aes128gcm) with Mozilla's http_ece as the
// receiving client would, and prints {"plaintext"} (base64).
'use strict';
const crypto = require('node:crypto');
const ece = require('http_ece');

let input = '';
process.stdin.on('data', (d) => (input += d));
process.stdin.on('end', () => {
  const req = JSON.parse(input);
  const receiver = crypto.createECDH('prime256v1');
  receiver.setPrivateKey(Buffer.from(req.privateKey, 'base64'));
  const plaintext = ece.decrypt(Buffer.from(req.body, 'base64'), {
    version: 'aes128gcm',
    privateKey: receiver,
    authSecret: Buffer.from(req.authSecret, 'base64').toString('base64url'),
  });
  process.stdout.write(JSON.stringify({ plaintext: plaintext.toString('base64') }));
});
