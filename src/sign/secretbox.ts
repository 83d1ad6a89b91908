/**
 * NaCl secretbox (XSalsa20-Poly1305), as go-securesystemslib's `encrypted` package uses it for
 * cosign's `ENCRYPTED SIGSTORE PRIVATE KEY` files. node:crypto has neither XSalsa20 nor a bare
 * Poly1305, so both are implemented here (D. J. Bernstein's reference definitions). Only small
 * messages (a PKCS#8 key) go through it, so clarity beats speed: Poly1305 uses BigInt.
 */
import { timingSafeEqual } from 'node:crypto';

const SIGMA = [0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]; // "expand 32-byte k"

function rotl(v: number, c: number): number {
  return ((v << c) | (v >>> (32 - c))) >>> 0;
}

function u32le(b: Uint8Array, off: number): number {
  return (b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16) | (b[off + 3]! << 24)) >>> 0;
}

/** 20 Salsa20 rounds over the state in place. */
function rounds(x: Uint32Array): void {
  const qr = (a: number, b: number, c: number, d: number): void => {
    x[b] = (x[b]! ^ rotl((x[a]! + x[d]!) >>> 0, 7)) >>> 0;
    x[c] = (x[c]! ^ rotl((x[b]! + x[a]!) >>> 0, 9)) >>> 0;
    x[d] = (x[d]! ^ rotl((x[c]! + x[b]!) >>> 0, 13)) >>> 0;
    x[a] = (x[a]! ^ rotl((x[d]! + x[c]!) >>> 0, 18)) >>> 0;
  };
  for (let i = 0; i < 20; i += 2) {
    qr(0, 4, 8, 12);
    qr(5, 9, 13, 1);
    qr(10, 14, 2, 6);
    qr(15, 3, 7, 11);
    qr(0, 1, 2, 3);
    qr(5, 6, 7, 4);
    qr(10, 11, 8, 9);
    qr(15, 12, 13, 14);
  }
}

function initState(key: Uint8Array, in16: Uint8Array): Uint32Array {
  const s = new Uint32Array(16);
  s[0] = SIGMA[0]!;
  s[5] = SIGMA[1]!;
  s[10] = SIGMA[2]!;
  s[15] = SIGMA[3]!;
  for (let i = 0; i < 4; i++) {
    s[1 + i] = u32le(key, i * 4);
    s[11 + i] = u32le(key, 16 + i * 4);
    s[6 + i] = u32le(in16, i * 4);
  }
  return s;
}

/** HSalsa20: derives the XSalsa20 subkey from the key and the first 16 nonce bytes. */
export function hsalsa20(key: Uint8Array, nonce16: Uint8Array): Uint8Array {
  const x = initState(key, nonce16);
  rounds(x);
  const out = new Uint8Array(32);
  const words = [x[0]!, x[5]!, x[10]!, x[15]!, x[6]!, x[7]!, x[8]!, x[9]!];
  words.forEach((w, i) => {
    out[i * 4] = w & 0xff;
    out[i * 4 + 1] = (w >>> 8) & 0xff;
    out[i * 4 + 2] = (w >>> 16) & 0xff;
    out[i * 4 + 3] = (w >>> 24) & 0xff;
  });
  return out;
}

/** XSalsa20 keystream of `length` bytes. */
export function xsalsa20Stream(key: Uint8Array, nonce: Uint8Array, length: number): Uint8Array {
  if (key.length !== 32 || nonce.length !== 24) throw new Error('xsalsa20: key must be 32 bytes and nonce 24 bytes');
  const subkey = hsalsa20(key, nonce.subarray(0, 16));
  const out = new Uint8Array(length);
  const block = new Uint8Array(16);
  block.set(nonce.subarray(16, 24), 0);
  let counter = 0n;
  for (let off = 0; off < length; off += 64) {
    for (let i = 0; i < 8; i++) block[8 + i] = Number((counter >> BigInt(8 * i)) & 0xffn);
    const input = initState(subkey, block);
    const x = Uint32Array.from(input);
    rounds(x);
    for (let i = 0; i < 16; i++) {
      const w = (x[i]! + input[i]!) >>> 0;
      for (let j = 0; j < 4; j++) {
        const p = off + i * 4 + j;
        if (p < length) out[p] = (w >>> (8 * j)) & 0xff;
      }
    }
    counter++;
  }
  return out;
}

function leToBig(b: Uint8Array): bigint {
  let n = 0n;
  for (let i = b.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(b[i]!);
  return n;
}

/** Poly1305 one-time authenticator (RFC 8439 §2.5). */
export function poly1305(key: Uint8Array, msg: Uint8Array): Uint8Array {
  const P = (1n << 130n) - 5n;
  const r = leToBig(key.subarray(0, 16)) & 0x0ffffffc0ffffffc0ffffffc0fffffffn;
  const s = leToBig(key.subarray(16, 32));
  let acc = 0n;
  for (let off = 0; off < msg.length; off += 16) {
    const chunk = msg.subarray(off, Math.min(off + 16, msg.length));
    const n = leToBig(chunk) + (1n << BigInt(8 * chunk.length));
    acc = ((acc + n) * r) % P;
  }
  acc = (acc + s) & ((1n << 128n) - 1n);
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) out[i] = Number((acc >> BigInt(8 * i)) & 0xffn);
  return out;
}

/** `crypto_secretbox`: returns tag(16) || ciphertext. */
export function secretboxSeal(msg: Uint8Array, nonce: Uint8Array, key: Uint8Array): Buffer {
  const stream = xsalsa20Stream(key, nonce, 32 + msg.length);
  const c = new Uint8Array(msg.length);
  for (let i = 0; i < msg.length; i++) c[i] = msg[i]! ^ stream[32 + i]!;
  const tag = poly1305(stream.subarray(0, 32), c);
  return Buffer.concat([tag, c]);
}

/** `crypto_secretbox_open`: undefined when the box does not authenticate (wrong key or tampered). */
export function secretboxOpen(box: Uint8Array, nonce: Uint8Array, key: Uint8Array): Buffer | undefined {
  if (box.length < 16) return undefined;
  const tag = box.subarray(0, 16);
  const c = box.subarray(16);
  const stream = xsalsa20Stream(key, nonce, 32 + c.length);
  const want = poly1305(stream.subarray(0, 32), c);
  if (!timingSafeEqual(Buffer.from(tag), Buffer.from(want))) return undefined;
  const m = Buffer.alloc(c.length);
  for (let i = 0; i < c.length; i++) m[i] = c[i]! ^ stream[32 + i]!;
  return m;
}
