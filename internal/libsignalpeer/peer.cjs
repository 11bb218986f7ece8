'use strict';
// peer.cjs: a test peer that runs Signal's official libsignal for Node
// (@signalapp/libsignal-client, loaded from $PARLEY_LIBSIGNAL_NODE_MODULES)
// and answers JSON-lines requests on stdin, one answer per line on stdout:
//
//   {"id":1,"op":"encrypt","client":"alice",...}  ->  {"id":1,"result":{...}}
//                                                 or  {"id":1,"error":"text","code":3,"codeName":"UntrustedIdentity"}
//
// Every byte value is a standard (padded) base64 string. It hosts any number
// of named clients, each with its own in-memory stores. Requests are handled
// one at a time, in order. See peer.go for the list of ops and their shapes.
// Nothing but answers is written to stdout; diagnostics go to stderr.

const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');
const { pathToFileURL } = require('node:url');

const PKG = '@signalapp/libsignal-client';

let S; // the libsignal module, once loaded
let SSMRM; // its SealedSenderMultiRecipientMessage class (a module of its own, not re-exported by index.js)
let ZK; // its zkgroup module (profile keys)
let pkgVersion = '';

async function load() {
  const nm = process.env.PARLEY_LIBSIGNAL_NODE_MODULES;
  if (!nm) throw new Error('PARLEY_LIBSIGNAL_NODE_MODULES is not set (run via scripts/with-libsignal)');
  const dir = path.join(nm, PKG);
  const pj = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  pkgVersion = String(pj.version);
  // The package is an ES module; import() loads it from CommonJS on every Node >= 20.
  S = await import(pathToFileURL(path.join(dir, pj.main || 'dist/index.js')).href);
  SSMRM = (await import(pathToFileURL(path.join(dir, 'dist/SealedSenderMultiRecipientMessage.js')).href)).default;
  ZK = await import(pathToFileURL(path.join(dir, 'dist/zkgroup/index.js')).href);
}

// ---- argument helpers: they throw on bad input, and the op's try/catch answers with an error.

function bad(msg) {
  const e = new Error(msg);
  e.badRequest = true;
  return e;
}

const B64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function bytes(v, what) {
  if (typeof v !== 'string') throw bad(`${what}: want a base64 string`);
  if (!B64.test(v)) throw bad(`${what}: not standard base64`);
  return new Uint8Array(Buffer.from(v, 'base64')); // own ArrayBuffer, not Node's pool
}

function optBytes(v, what) {
  return v === undefined || v === null ? null : bytes(v, what);
}

function b64(u8) {
  return Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength).toString('base64');
}

function int(v, what, min = 0, max = 0xffffffff) {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw bad(`${what}: want an integer in [${min}, ${max}]`);
  }
  return v;
}

// A non-negative safe integer, for timestamps and expirations in milliseconds.
function num(v, what) {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw bad(`${what}: want a non-negative integer`);
  }
  return v;
}

function optStr(v, what) {
  return v === undefined || v === null ? null : str(v, what);
}

function str(v, what) {
  if (typeof v !== 'string' || v === '') throw bad(`${what}: want a non-empty string`);
  return v;
}

function obj(v, what) {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw bad(`${what}: want an object`);
  return v;
}

function address(v, what = 'address') {
  obj(v, what);
  return S.ProtocolAddress.new(str(v.name, `${what}.name`), int(v.deviceId, `${what}.deviceId`, 1, 127));
}

function addrKey(a) {
  return `${a.name()}.${a.deviceId()}`;
}

function publicKey(v, what) {
  return S.PublicKey.deserialize(bytes(v, what));
}

// ---- in-memory stores

const IdentityChange = () => S.IdentityChange;
const Direction = () => S.Direction;

function makeStores(client) {
  const c = client;

  class Sessions extends S.SessionStore {
    async saveSession(a, rec) { c.sessions.set(addrKey(a), rec.serialize()); }
    async getSession(a) {
      const r = c.sessions.get(addrKey(a));
      return r ? S.SessionRecord.deserialize(r) : null;
    }
    async getExistingSessions(as) {
      return as.map((a) => {
        const r = c.sessions.get(addrKey(a));
        if (!r) throw new Error(`no session for ${addrKey(a)}`);
        return S.SessionRecord.deserialize(r);
      });
    }
  }

  class Identities extends S.IdentityKeyStore {
    async getIdentityKey() { return c.identity.privateKey; }
    async getLocalRegistrationId() { return c.registrationId; }
    async saveIdentity(a, key) {
      const k = addrKey(a);
      const old = c.identities.get(k);
      const replaced = !!old && !old.key.equals(key);
      c.identities.set(k, { key, changed: replaced, saves: (old ? old.saves : 0) + 1 });
      return replaced ? IdentityChange().ReplacedExisting : IdentityChange().NewOrUnchanged;
    }
    async isTrustedIdentity(a, key, direction) {
      const old = c.identities.get(addrKey(a));
      c.lastTrustCheck = { address: addrKey(a), direction };
      if (!old || old.key.equals(key)) return true;
      return c.trust === 'always';
    }
    async getIdentity(a) {
      const r = c.identities.get(addrKey(a));
      return r ? r.key : null;
    }
  }

  class PreKeys extends S.PreKeyStore {
    async savePreKey(id, rec) { c.preKeys.set(id, rec.serialize()); }
    async getPreKey(id) {
      const r = c.preKeys.get(id);
      if (!r) throw new Error(`no one-time pre key with id ${id}`);
      return S.PreKeyRecord.deserialize(r);
    }
    async removePreKey(id) { c.preKeys.delete(id); }
  }

  class SignedPreKeys extends S.SignedPreKeyStore {
    async saveSignedPreKey(id, rec) { c.signedPreKeys.set(id, rec.serialize()); }
    async getSignedPreKey(id) {
      const r = c.signedPreKeys.get(id);
      if (!r) throw new Error(`no signed pre key with id ${id}`);
      return S.SignedPreKeyRecord.deserialize(r);
    }
  }

  class KyberPreKeys extends S.KyberPreKeyStore {
    async saveKyberPreKey(id, rec) { c.kyberPreKeys.set(id, { rec: rec.serialize(), lastResort: false }); }
    async getKyberPreKey(id) {
      const r = c.kyberPreKeys.get(id);
      if (!r) throw new Error(`no kyber pre key with id ${id}`);
      return S.KyberPreKeyRecord.deserialize(r.rec);
    }
    // 0.103 calls this as (kyberPreKeyId, signedPreKeyId, baseKey) once a
    // PreKey message using the key was accepted. One-time keys are removed;
    // last-resort keys stay, but the same (signed pre key, base key) pair may
    // not be used with one twice, as the official apps enforce, so a replayed
    // first message is refused.
    async markKyberPreKeyUsed(id, signedPreKeyId, baseKey) {
      const r = c.kyberPreKeys.get(id);
      if (!r) throw new Error(`no kyber pre key with id ${id}`);
      c.kyberUsed.push(id);
      if (!r.lastResort) {
        c.kyberPreKeys.delete(id);
        return;
      }
      const seen = `${id}:${signedPreKeyId}:${b64(baseKey.serialize())}`;
      if (c.lastResortSeen.has(seen)) {
        throw new Error(`last-resort kyber pre key ${id} reused with the same signed pre key and base key`);
      }
      c.lastResortSeen.add(seen);
    }
  }

  class SenderKeys extends S.SenderKeyStore {
    async saveSenderKey(sender, distributionId, rec) {
      c.senderKeys.set(`${addrKey(sender)}::${distributionId}`, rec.serialize());
    }
    async getSenderKey(sender, distributionId) {
      const r = c.senderKeys.get(`${addrKey(sender)}::${distributionId}`);
      return r ? S.SenderKeyRecord.deserialize(r) : null;
    }
  }

  return {
    sessions: new Sessions(),
    identity: new Identities(),
    preKeys: new PreKeys(),
    signedPreKeys: new SignedPreKeys(),
    kyberPreKeys: new KyberPreKeys(),
    senderKeys: new SenderKeys(),
  };
}

// ---- clients

const clients = new Map();

function wipe(c) {
  c.identity = S.IdentityKeyPair.generate();
  c.sessions = new Map(); // "name.device" -> serialized SessionRecord
  c.identities = new Map(); // "name.device" -> {key: PublicKey, changed, saves}
  c.preKeys = new Map(); // id -> serialized PreKeyRecord
  c.signedPreKeys = new Map(); // id -> serialized SignedPreKeyRecord
  c.kyberPreKeys = new Map(); // id -> {rec: serialized KyberPreKeyRecord, lastResort}
  c.lastResortSeen = new Set();
  c.kyberUsed = [];
  c.senderKeys = new Map(); // "name.device::distributionId" -> serialized SenderKeyRecord
  c.stores = makeStores(c);
}

function getClient(req) {
  const name = str(req.client, 'client');
  const c = clients.get(name);
  if (!c) throw bad(`no client named ${JSON.stringify(name)} (newClient first)`);
  return c;
}

function trustMode(v) {
  if (v === undefined || v === null) return 'always';
  if (v !== 'always' && v !== 'tofu') throw bad('trust: want "always" or "tofu"');
  return v;
}

// ---- SessionRecord internals: 0.103 exposes no session version, so the
// serialized record (protobuf RecordStructure from libsignal's storage.proto)
// is read for it: current_session (1) -> SessionStructure.session_version (1).

function pbFields(buf) {
  const out = [];
  let i = 0;
  const varint = () => {
    let v = 0n;
    let shift = 0n;
    for (;;) {
      if (i >= buf.length) throw new Error('truncated varint');
      const b = buf[i++];
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
      shift += 7n;
      if (shift > 63n) throw new Error('varint too long');
    }
  };
  while (i < buf.length) {
    const key = Number(varint());
    const field = key >>> 3;
    const wire = key & 7;
    if (wire === 0) out.push({ field, value: varint() });
    else if (wire === 2) {
      const n = Number(varint());
      if (i + n > buf.length) throw new Error('truncated field');
      out.push({ field, bytes: buf.subarray(i, i + n) });
      i += n;
    } else if (wire === 1) i += 8;
    else if (wire === 5) i += 4;
    else throw new Error(`unsupported wire type ${wire}`);
  }
  return out;
}

function sessionDetails(serialized) {
  const rec = pbFields(serialized);
  const cur = rec.find((f) => f.field === 1 && f.bytes);
  const previous = rec.filter((f) => f.field === 2).length;
  if (!cur) return { version: 0, previousSessions: previous, pqRatchet: false };
  const s = pbFields(cur.bytes);
  const v = s.find((f) => f.field === 1 && f.value !== undefined);
  const pq = s.find((f) => f.field === 15 && f.bytes);
  return {
    version: v ? Number(v.value) : 0,
    previousSessions: previous,
    pqRatchet: !!pq && pq.bytes.length > 0,
  };
}

// ---- UnidentifiedSenderMessageContent from raw bytes. 0.103 builds a
// CiphertextMessage only from a PlaintextContent (CiphertextMessage.from);
// Signal, PreKey and SenderKey messages exist as CiphertextMessages only as
// the results of signalEncrypt/groupEncrypt. So a USMC around given message
// bytes is encoded here the way libsignal's UnidentifiedSenderMessageContent::new
// encodes it (sealed_sender.proto UnidentifiedSenderMessage.Message: type 1,
// senderCertificate 2, content 3, contentHint 4 unless Default, groupId 5
// unless empty; prost writes fields in number order) and then parsed with the
// official UnidentifiedSenderMessageContent.deserialize. For PlaintextContent
// both ways are taken and must agree, which checks this encoder.

// CiphertextMessageType -> UnidentifiedSenderMessage.Message.Type
const usmcProtoType = { 2: 2, 3: 1, 7: 7, 8: 8 };

function pbVarint(out, v) {
  let n = BigInt(v);
  do {
    let b = Number(n & 0x7fn);
    n >>= 7n;
    if (n > 0n) b |= 0x80;
    out.push(b);
  } while (n > 0n);
}

function pbBytesField(out, field, u8) {
  pbVarint(out, (field << 3) | 2);
  pbVarint(out, u8.length);
  for (const b of u8) out.push(b);
}

function pbVarintField(out, field, v) {
  pbVarint(out, field << 3);
  pbVarint(out, v);
}

function encodeUsmc(type, certificate, contents, contentHint, groupId) {
  const out = [];
  pbVarintField(out, 1, usmcProtoType[type]);
  pbBytesField(out, 2, certificate);
  pbBytesField(out, 3, contents);
  if (contentHint !== 0) pbVarintField(out, 4, contentHint);
  if (groupId && groupId.length > 0) pbBytesField(out, 5, groupId);
  return new Uint8Array(out);
}

function usmcFromRaw(type, contents, certBytes, contentHint, groupId) {
  if (!(type in usmcProtoType)) throw bad(`type ${type}: want 2 (Whisper), 3 (PreKey), 7 (SenderKey) or 8 (Plaintext)`);
  // The contents must be a message of that type, as in a CiphertextMessage.
  let plaintext = null;
  if (type === S.CiphertextMessageType.Whisper) S.SignalMessage.deserialize(contents);
  else if (type === S.CiphertextMessageType.PreKey) S.PreKeySignalMessage.deserialize(contents);
  else if (type === S.CiphertextMessageType.SenderKey) S.SenderKeyMessage.deserialize(contents);
  else plaintext = S.PlaintextContent.deserialize(contents);
  const cert = S.SenderCertificate.deserialize(certBytes);
  const usmc = S.UnidentifiedSenderMessageContent.deserialize(
    encodeUsmc(type, cert.serialize(), contents, contentHint, groupId));
  if (plaintext) {
    const official = S.UnidentifiedSenderMessageContent.new(
      S.CiphertextMessage.from(plaintext), cert, contentHint, groupId);
    if (Buffer.compare(Buffer.from(official.serialize()), Buffer.from(usmc.serialize())) !== 0) {
      throw new Error('peer: UnidentifiedSenderMessageContent encoding differs from libsignal\'s');
    }
    return official;
  }
  return usmc;
}

function usmcResult(usmc) {
  const g = usmc.groupId();
  return {
    type: usmc.msgType(),
    contents: b64(usmc.contents()),
    senderCertificate: b64(usmc.senderCertificate().serialize()),
    contentHint: usmc.contentHint(),
    groupId: g === null || g === undefined ? null : b64(g),
  };
}

// ---- ops

const ops = {
  async ping() {
    return { version: pkgVersion, node: process.versions.node };
  },

  async newClient(req) {
    const name = str(req.client, 'client');
    if (clients.has(name)) throw bad(`client ${JSON.stringify(name)} exists`);
    const c = {
      name,
      addressName: req.name === undefined || req.name === null ? name : str(req.name, 'name'),
      registrationId: int(req.registrationId, 'registrationId', 1, 0x3fff),
      deviceId: int(req.deviceId, 'deviceId', 1, 127),
      trust: trustMode(req.trust),
      nextPreKeyId: 1,
      nextSignedPreKeyId: 1,
      nextKyberPreKeyId: 1,
    };
    wipe(c);
    c.local = S.ProtocolAddress.new(c.addressName, c.deviceId);
    clients.set(name, c);
    return { identityKey: b64(c.identity.publicKey.serialize()) };
  },

  async reinstall(req) {
    const c = getClient(req);
    if (req.registrationId !== undefined && req.registrationId !== null) {
      c.registrationId = int(req.registrationId, 'registrationId', 1, 0x3fff);
    }
    wipe(c);
    return { identityKey: b64(c.identity.publicKey.serialize()) };
  },

  // An app learns its account id (its own address name) only once it has
  // registered with the keys it generated: the name changes, the identity
  // and the stores stay.
  async setAddressName(req) {
    const c = getClient(req);
    c.addressName = str(req.name, 'name');
    c.local = S.ProtocolAddress.new(c.addressName, c.deviceId);
    return {};
  },

  async setTrust(req) {
    const c = getClient(req);
    c.trust = trustMode(req.trust);
    return {};
  },

  async generateKeys(req) {
    const c = getClient(req);
    const count = int(req.count ?? 0, 'count', 0, 1000);
    const priv = c.identity.privateKey;
    const now = Date.now();

    const spkId = c.nextSignedPreKeyId++;
    const spk = S.PrivateKey.generate();
    const spkSig = priv.sign(spk.getPublicKey().serialize());
    c.signedPreKeys.set(spkId, S.SignedPreKeyRecord.new(spkId, now, spk.getPublicKey(), spk, spkSig).serialize());

    const kyber = () => {
      const id = c.nextKyberPreKeyId++;
      const kp = S.KEMKeyPair.generate();
      const pub = kp.getPublicKey().serialize();
      const sig = priv.sign(pub);
      const rec = S.KyberPreKeyRecord.new(id, now, kp, sig);
      return { id, rec, pub, sig };
    };

    const lr = kyber();
    c.kyberPreKeys.set(lr.id, { rec: lr.rec.serialize(), lastResort: true });

    const preKeys = [];
    const kyberPreKeys = [];
    for (let i = 0; i < count; i++) {
      const id = c.nextPreKeyId++;
      const k = S.PrivateKey.generate();
      c.preKeys.set(id, S.PreKeyRecord.new(id, k.getPublicKey(), k).serialize());
      preKeys.push({ id, publicKey: b64(k.getPublicKey().serialize()) });
    }
    for (let i = 0; i < count; i++) {
      const k = kyber();
      c.kyberPreKeys.set(k.id, { rec: k.rec.serialize(), lastResort: false });
      kyberPreKeys.push({ id: k.id, publicKey: b64(k.pub), signature: b64(k.sig) });
    }

    return {
      identityKey: b64(c.identity.publicKey.serialize()),
      registrationId: c.registrationId,
      deviceId: c.deviceId,
      signedPreKey: { id: spkId, publicKey: b64(spk.getPublicKey().serialize()), signature: b64(spkSig) },
      lastResortKyberPreKey: { id: lr.id, publicKey: b64(lr.pub), signature: b64(lr.sig) },
      preKeys,
      kyberPreKeys,
    };
  },

  async keyState(req) {
    const c = getClient(req);
    const ids = (m) => [...m.keys()].sort((a, b) => a - b);
    return {
      preKeyIds: ids(c.preKeys),
      signedPreKeyIds: ids(c.signedPreKeys),
      kyberPreKeyIds: ids(new Map([...c.kyberPreKeys].filter(([, v]) => !v.lastResort))),
      lastResortKyberPreKeyIds: ids(new Map([...c.kyberPreKeys].filter(([, v]) => v.lastResort))),
      kyberUsed: c.kyberUsed.slice(),
    };
  },

  async processBundle(req) {
    const c = getClient(req);
    const addr = address(req.address);
    const b = obj(req.bundle, 'bundle');
    const hasPreKey = b.preKey !== undefined && b.preKey !== null;
    const bundle = S.PreKeyBundle.new(
      int(b.registrationId, 'bundle.registrationId'),
      int(b.deviceId ?? addr.deviceId(), 'bundle.deviceId'),
      hasPreKey ? int(b.preKeyId, 'bundle.preKeyId') : null,
      hasPreKey ? publicKey(b.preKey, 'bundle.preKey') : null,
      int(b.signedPreKeyId, 'bundle.signedPreKeyId'),
      publicKey(b.signedPreKey, 'bundle.signedPreKey'),
      bytes(b.signedPreKeySignature, 'bundle.signedPreKeySignature'),
      publicKey(b.identityKey, 'bundle.identityKey'),
      int(b.kyberPreKeyId, 'bundle.kyberPreKeyId'),
      S.KEMPublicKey.deserialize(bytes(b.kyberPreKey, 'bundle.kyberPreKey')),
      bytes(b.kyberPreKeySignature, 'bundle.kyberPreKeySignature'),
    );
    await S.processPreKeyBundle(bundle, addr, c.local, c.stores.sessions, c.stores.identity);
    return {};
  },

  async encrypt(req) {
    const c = getClient(req);
    const addr = address(req.address);
    const msg = await S.signalEncrypt(
      bytes(req.plaintext, 'plaintext'), addr, c.local, c.stores.sessions, c.stores.identity);
    return { type: msg.type(), body: b64(msg.serialize()) };
  },

  async decrypt(req) {
    const c = getClient(req);
    const addr = address(req.address);
    const type = int(req.type, 'type', 0, 255);
    const body = bytes(req.body, 'body');
    let pt;
    if (type === S.CiphertextMessageType.PreKey) {
      pt = await S.signalDecryptPreKey(
        S.PreKeySignalMessage.deserialize(body), addr, c.local, c.stores.sessions, c.stores.identity,
        c.stores.preKeys, c.stores.signedPreKeys, c.stores.kyberPreKeys);
    } else if (type === S.CiphertextMessageType.Whisper) {
      pt = await S.signalDecrypt(S.SignalMessage.deserialize(body), addr, c.local, c.stores.sessions, c.stores.identity);
    } else {
      throw bad(`type ${type}: want 2 (Whisper) or 3 (PreKey)`);
    }
    return { plaintext: b64(pt) };
  },

  async sessionInfo(req) {
    const c = getClient(req);
    const addr = address(req.address);
    const raw = c.sessions.get(addrKey(addr));
    if (!raw) {
      return {
        exists: false, version: 0, remoteRegistrationId: 0, localRegistrationId: 0,
        hasCurrentState: false, previousSessions: 0, pqRatchet: false,
      };
    }
    const rec = S.SessionRecord.deserialize(raw);
    const has = rec.hasCurrentState();
    const d = sessionDetails(raw);
    let remote = 0;
    let local = 0;
    try { remote = rec.remoteRegistrationId(); } catch { /* no current state */ }
    try { local = rec.localRegistrationId(); } catch { /* no current state */ }
    return {
      exists: true,
      version: d.version,
      remoteRegistrationId: remote,
      localRegistrationId: local,
      hasCurrentState: has,
      previousSessions: d.previousSessions,
      pqRatchet: d.pqRatchet,
    };
  },

  async archiveSession(req) {
    const c = getClient(req);
    const k = addrKey(address(req.address));
    const raw = c.sessions.get(k);
    if (raw) {
      const rec = S.SessionRecord.deserialize(raw);
      rec.archiveCurrentState();
      c.sessions.set(k, rec.serialize());
    }
    return {};
  },

  async deleteSession(req) {
    const c = getClient(req);
    c.sessions.delete(addrKey(address(req.address)));
    return {};
  },

  async identity(req) {
    const c = getClient(req);
    const r = c.identities.get(addrKey(address(req.address)));
    if (!r) return { identityKey: null, changed: false, saves: 0 };
    return { identityKey: b64(r.key.serialize()), changed: r.changed, saves: r.saves };
  },

  async saveIdentity(req) {
    const c = getClient(req);
    const res = await c.stores.identity.saveIdentity(address(req.address), publicKey(req.identityKey, 'identityKey'));
    return { changed: res === S.IdentityChange.ReplacedExisting };
  },

  async createDistribution(req) {
    const c = getClient(req);
    const sender = address(req.sender, 'sender');
    const m = await S.SenderKeyDistributionMessage.create(sender, str(req.distributionId, 'distributionId'), c.stores.senderKeys);
    return { message: b64(m.serialize()), distributionId: m.distributionId(), chainId: m.chainId(), iteration: m.iteration() };
  },

  async processDistribution(req) {
    const c = getClient(req);
    const sender = address(req.sender, 'sender');
    const m = S.SenderKeyDistributionMessage.deserialize(bytes(req.message, 'message'));
    await S.processSenderKeyDistributionMessage(sender, m, c.stores.senderKeys);
    return { distributionId: m.distributionId() };
  },

  async groupEncrypt(req) {
    const c = getClient(req);
    const sender = address(req.sender, 'sender');
    const m = await S.groupEncrypt(sender, str(req.distributionId, 'distributionId'), c.stores.senderKeys,
      bytes(req.plaintext, 'plaintext'));
    return { type: m.type(), body: b64(m.serialize()) };
  },

  async groupDecrypt(req) {
    const c = getClient(req);
    const sender = address(req.sender, 'sender');
    const pt = await S.groupDecrypt(sender, c.stores.senderKeys, bytes(req.body, 'body'));
    return { plaintext: b64(pt) };
  },

  async fingerprint(req) {
    const f = S.Fingerprint.new(
      int(req.iterations, 'iterations', 1, 0xffffffff),
      int(req.version, 'version', 0, 0xffffffff),
      bytes(req.localId, 'localId'),
      publicKey(req.localKey, 'localKey'),
      bytes(req.remoteId, 'remoteId'),
      publicKey(req.remoteKey, 'remoteKey'),
    );
    return {
      displayable: f.displayableFingerprint().toString(),
      scannable: b64(f.scannableFingerprint().toBuffer()),
    };
  },

  // ---- sealed sender

  async newKeyPair() {
    const k = S.PrivateKey.generate();
    return { publicKey: b64(k.getPublicKey().serialize()), privateKey: b64(k.serialize()) };
  },

  async newServerCertificate(req) {
    const cert = S.ServerCertificate.new(
      int(req.keyId, 'keyId'),
      publicKey(req.serverKey, 'serverKey'),
      S.PrivateKey.deserialize(bytes(req.trustRootPrivate, 'trustRootPrivate')),
    );
    return { certificate: b64(cert.serialize()) };
  },

  async newSenderCertificate(req) {
    const cert = S.SenderCertificate.new(
      str(req.senderUuid, 'senderUuid'),
      optStr(req.senderE164, 'senderE164'),
      int(req.senderDeviceId, 'senderDeviceId', 1, 127),
      publicKey(req.senderKey, 'senderKey'),
      num(req.expiration, 'expiration'),
      S.ServerCertificate.deserialize(bytes(req.serverCertificate, 'serverCertificate')),
      S.PrivateKey.deserialize(bytes(req.serverPrivate, 'serverPrivate')),
    );
    return { certificate: b64(cert.serialize()) };
  },

  async validateSenderCertificate(req) {
    const cert = S.SenderCertificate.deserialize(bytes(req.certificate, 'certificate'));
    const valid = cert.validate(publicKey(req.trustRoot, 'trustRoot'), num(req.time, 'time'));
    const server = cert.serverCertificate();
    return {
      valid,
      senderUuid: cert.senderUuid(),
      senderE164: cert.senderE164() ?? null,
      senderDeviceId: cert.senderDeviceId(),
      expiration: Number(cert.expiration()),
      key: b64(cert.key().serialize()),
      serverKeyId: server.keyId(),
      serverKey: b64(server.key().serialize()),
    };
  },

  async sealedEncrypt(req) {
    const c = getClient(req);
    const body = await S.sealedSenderEncryptMessage(
      bytes(req.plaintext, 'plaintext'), address(req.address),
      S.SenderCertificate.deserialize(bytes(req.senderCertificate, 'senderCertificate')),
      c.stores.sessions, c.stores.identity);
    return { body: b64(body) };
  },

  async sealedDecrypt(req) {
    const c = getClient(req);
    const r = await S.sealedSenderDecryptMessage(
      bytes(req.body, 'body'), publicKey(req.trustRoot, 'trustRoot'), num(req.timestamp, 'timestamp'),
      optStr(req.localE164, 'localE164'), str(req.localUuid, 'localUuid'),
      int(req.localDeviceId, 'localDeviceId', 1, 127),
      c.stores.sessions, c.stores.identity, c.stores.preKeys, c.stores.signedPreKeys, c.stores.kyberPreKeys);
    return {
      senderUuid: r.senderUuid(),
      senderE164: r.senderE164() ?? null,
      deviceId: r.deviceId(),
      plaintext: b64(r.message()),
    };
  },

  async sealedDecryptToUsmc(req) {
    const c = getClient(req);
    return usmcResult(await S.sealedSenderDecryptToUsmc(bytes(req.body, 'body'), c.stores.identity));
  },

  async sealedEncryptUsmc(req) {
    const c = getClient(req);
    const addr = address(req.address);
    const usmc = usmcFromRaw(
      int(req.type, 'type', 0, 255), bytes(req.contents, 'contents'),
      bytes(req.senderCertificate, 'senderCertificate'), int(req.contentHint ?? 0, 'contentHint'),
      optBytes(req.groupId, 'groupId'));
    return { body: b64(await S.sealedSenderEncrypt(usmc, addr, c.stores.identity)) };
  },

  async multiRecipientEncrypt(req) {
    const c = getClient(req);
    if (!Array.isArray(req.recipients)) throw bad('recipients: want an array of addresses');
    const recipients = req.recipients.map((a, i) => address(a, `recipients[${i}]`));
    const excluded = req.excluded === undefined || req.excluded === null ? [] : req.excluded;
    if (!Array.isArray(excluded)) throw bad('excluded: want an array of service id strings');
    const excludedIds = excluded.map((s, i) => S.ServiceId.parseFromServiceIdString(str(s, `excluded[${i}]`)));
    const msg = await S.groupEncrypt(c.local, str(req.distributionId, 'distributionId'), c.stores.senderKeys,
      bytes(req.plaintext, 'plaintext'));
    const usmc = S.UnidentifiedSenderMessageContent.new(
      msg, S.SenderCertificate.deserialize(bytes(req.senderCertificate, 'senderCertificate')),
      int(req.contentHint ?? 0, 'contentHint'), optBytes(req.groupId, 'groupId'));
    const body = await S.sealedSenderMultiRecipientEncrypt({
      content: usmc,
      recipients,
      excludedRecipients: excludedIds,
      identityStore: c.stores.identity,
      sessionStore: c.stores.sessions,
    });
    return { body: b64(body) };
  },

  async multiRecipientParse(req) {
    const m = new SSMRM(bytes(req.body, 'body'));
    const recipients = Object.entries(m.recipientsByServiceIdString()).map(([serviceId, r]) => ({
      serviceId,
      devices: r.deviceIds.map((d, i) => ({ deviceId: d, registrationId: r.registrationIds[i] })),
      message: b64(m.messageForRecipient(r)),
    }));
    return { recipients, excluded: [...m.excludedRecipientServiceIdStrings()] };
  },

  async multiRecipientForSingle(req) {
    return { message: b64(S.sealedSenderMultiRecipientMessageForSingleRecipient(bytes(req.body, 'body'))) };
  },

  async deriveAccessKey(req) {
    return { accessKey: b64(new ZK.ProfileKey(bytes(req.profileKey, 'profileKey')).deriveAccessKey()) };
  },
};

// ---- the loop

function errorAnswer(id, e) {
  const out = { id, error: '' };
  if (e instanceof Error) {
    out.error = e.message || String(e);
    if (e instanceof S.LibSignalErrorBase || (typeof e.code === 'number' && typeof e.operation === 'string')) {
      out.code = e.code;
      if (S.ErrorCode && S.ErrorCode[e.code] !== undefined) out.codeName = S.ErrorCode[e.code];
      if (e.operation) out.operation = e.operation;
    } else if (e.badRequest) {
      out.codeName = 'BadRequest';
    } else if (e.name && e.name !== 'Error') {
      out.codeName = e.name;
    }
  } else {
    out.error = String(e);
  }
  return out;
}

function send(o) {
  process.stdout.write(JSON.stringify(o) + '\n');
}

async function handle(line) {
  let req;
  try {
    req = JSON.parse(line);
  } catch (e) {
    send({ id: null, error: `bad request: not JSON: ${e.message}`, codeName: 'BadRequest' });
    return;
  }
  const id = req !== null && typeof req === 'object' && 'id' in req ? req.id : null;
  try {
    obj(req, 'request');
    if (typeof req.op !== 'string' || !Object.prototype.hasOwnProperty.call(ops, req.op)) {
      throw bad(`unknown op ${JSON.stringify(req.op)}`);
    }
    send({ id, result: await ops[req.op](req) });
  } catch (e) {
    send(errorAnswer(id, e));
  }
}

process.on('uncaughtException', (e) => { process.stderr.write(`peer: uncaught: ${e && e.stack || e}\n`); });
process.on('unhandledRejection', (e) => { process.stderr.write(`peer: unhandled rejection: ${e && e.stack || e}\n`); });

async function main() {
  try {
    await load();
  } catch (e) {
    process.stderr.write(`peer: cannot load ${PKG}: ${e && e.stack || e}\n`);
    process.exit(2);
  }
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  let chain = Promise.resolve();
  rl.on('line', (line) => {
    if (line.trim() === '') return;
    chain = chain.then(() => handle(line));
  });
  rl.on('close', () => { chain.then(() => process.exit(0)); });
}

main();
