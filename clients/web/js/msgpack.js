// A compact MessagePack codec for the waveform frames (docs/protocol-waveforms.md).
// Written for medstream: no dependency, nothing fetched. Covers the whole format except ext types
// (which the waveform wire never uses; decoding one throws).

const utf8d = new TextDecoder();
const utf8e = new TextEncoder();

/** Decode one msgpack value from `bytes` (Uint8Array or ArrayBuffer). Throws on malformed input. */
export function decode(bytes) {
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const view = new DataView(u8.buffer, u8.byteOffset, u8.byteLength);
  let pos = 0;

  const need = (n) => {
    if (pos + n > u8.length) throw new Error(`msgpack: truncated at byte ${pos}, need ${n} more`);
  };
  const str = (n) => { need(n); const s = utf8d.decode(u8.subarray(pos, pos + n)); pos += n; return s; };
  // bin values are copied so typed-array views over them are aligned and outlive the frame
  const bin = (n) => { need(n); const b = u8.slice(pos, pos + n); pos += n; return b; };
  const arr = (n) => { const a = new Array(n); for (let i = 0; i < n; i++) a[i] = value(); return a; };
  // Keys must be strings (as Python's msgpack requires by default), and never `__proto__`:
  // `m["__proto__"] = v` would replace the decoded object's prototype with whatever a peer sent.
  const map = (n) => {
    const m = {};
    for (let i = 0; i < n; i++) {
      const k = value();
      if (typeof k !== "string") throw new Error(`msgpack: map key must be a string, got ${typeof k}`);
      if (k === "__proto__") throw new Error("msgpack: map key __proto__ refused");
      m[k] = value();
    }
    return m;
  };
  const u = (n) => {
    need(n);
    let v;
    if (n === 1) v = view.getUint8(pos);
    else if (n === 2) v = view.getUint16(pos);
    else if (n === 4) v = view.getUint32(pos);
    else v = Number(view.getBigUint64(pos));
    pos += n;
    return v;
  };
  const s = (n) => {
    need(n);
    let v;
    if (n === 1) v = view.getInt8(pos);
    else if (n === 2) v = view.getInt16(pos);
    else if (n === 4) v = view.getInt32(pos);
    else v = Number(view.getBigInt64(pos));
    pos += n;
    return v;
  };

  function value() {
    need(1);
    const b = u8[pos++];
    if (b <= 0x7f) return b;
    if (b >= 0xe0) return b - 0x100;
    if ((b & 0xf0) === 0x80) return map(b & 0x0f);
    if ((b & 0xf0) === 0x90) return arr(b & 0x0f);
    if ((b & 0xe0) === 0xa0) return str(b & 0x1f);
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return bin(u(1));
      case 0xc5: return bin(u(2));
      case 0xc6: return bin(u(4));
      case 0xca: { need(4); const v = view.getFloat32(pos); pos += 4; return v; }
      case 0xcb: { need(8); const v = view.getFloat64(pos); pos += 8; return v; }
      case 0xcc: return u(1);
      case 0xcd: return u(2);
      case 0xce: return u(4);
      case 0xcf: return u(8);
      case 0xd0: return s(1);
      case 0xd1: return s(2);
      case 0xd2: return s(4);
      case 0xd3: return s(8);
      case 0xd9: return str(u(1));
      case 0xda: return str(u(2));
      case 0xdb: return str(u(4));
      case 0xdc: return arr(u(2));
      case 0xdd: return arr(u(4));
      case 0xde: return map(u(2));
      case 0xdf: return map(u(4));
      default: throw new Error(`msgpack: unsupported type byte 0x${b.toString(16)} at ${pos - 1}`);
    }
  }

  const out = value();
  if (pos !== u8.length) throw new Error(`msgpack: ${u8.length - pos} trailing bytes`);
  return out;
}

/** Encode a JS value (null, boolean, number, string, Uint8Array, array, plain object). */
export function encode(value) {
  const parts = [];
  let size = 0;
  const push = (a) => { parts.push(a); size += a.length; };
  const head = (b, n, width) => {
    const a = new Uint8Array(1 + width);
    a[0] = b;
    const v = new DataView(a.buffer);
    if (width === 1) v.setUint8(1, n);
    else if (width === 2) v.setUint16(1, n);
    else if (width === 4) v.setUint32(1, n);
    push(a);
  };
  const sized = (n, fix, fixMax, b8, b16, b32) => {
    if (fix !== null && n <= fixMax) push(Uint8Array.of(fix | n));
    else if (b8 !== null && n < 0x100) head(b8, n, 1);
    else if (n < 0x10000) head(b16, n, 2);
    else head(b32, n, 4);
  };

  function put(x) {
    if (x === null || x === undefined) push(Uint8Array.of(0xc0));
    else if (x === true) push(Uint8Array.of(0xc3));
    else if (x === false) push(Uint8Array.of(0xc2));
    else if (typeof x === "number") {
      if (Number.isInteger(x) && x >= -0x80000000 && x <= 0xffffffff) {
        if (x >= 0 && x <= 0x7f) push(Uint8Array.of(x));
        else if (x < 0 && x >= -32) push(Uint8Array.of(x & 0xff));
        else if (x >= 0) head(0xce, x, 4);
        else { const a = new Uint8Array(5); a[0] = 0xd2; new DataView(a.buffer).setInt32(1, x); push(a); }
      } else {
        const a = new Uint8Array(9); a[0] = 0xcb; new DataView(a.buffer).setFloat64(1, x); push(a);
      }
    } else if (typeof x === "string") {
      const b = utf8e.encode(x);
      sized(b.length, 0xa0, 31, 0xd9, 0xda, 0xdb);
      push(b);
    } else if (x instanceof Uint8Array) {
      sized(x.length, null, 0, 0xc4, 0xc5, 0xc6);
      push(x);
    } else if (Array.isArray(x)) {
      sized(x.length, 0x90, 15, null, 0xdc, 0xdd);
      x.forEach(put);
    } else if (typeof x === "object") {
      const keys = Object.keys(x).filter((k) => x[k] !== undefined);
      sized(keys.length, 0x80, 15, null, 0xde, 0xdf);
      for (const k of keys) { put(k); put(x[k]); }
    } else {
      throw new Error(`msgpack: cannot encode ${typeof x}`);
    }
  }

  put(value);
  const out = new Uint8Array(size);
  let off = 0;
  for (const p of parts) { out.set(p, off); off += p.length; }
  return out;
}
