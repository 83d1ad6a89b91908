import { describe, expect, it } from 'vitest';
import { jsonErrorOffset } from '../src/util/json-error-offset.js';

describe('jsonErrorOffset', () => {
  it('points at the first character that cannot continue the text', () => {
    expect(jsonErrorOffset('{"a": 1,}')).toBe(8);
    expect(jsonErrorOffset('{\n  "default": [ {"type": "reject"} ]\n  "x": 1\n}')).toBe(40);
    expect(jsonErrorOffset("{'a': 1}")).toBe(1);
    expect(jsonErrorOffset('[1, 2] 3')).toBe(7);
    expect(jsonErrorOffset('{"a": tru}')).toBe(9);
    expect(jsonErrorOffset('"\\x"')).toBe(2);
    expect(jsonErrorOffset('01')).toBe(1);
  });

  it('gives the length for a valid text or one that ends early', () => {
    for (const t of ['{}', '[]', '{"a": [1, -2.5e+3, true, false, null, "\\u00e9\\n"]}', ' 0 ', '{"a": [1, 2', '"abc']) expect(jsonErrorOffset(t)).toBe(t.length);
  });

  it('agrees with JSON.parse on mutated documents', () => {
    const base = JSON.stringify({ default: [{ type: 'sigstoreSigned', keyPath: '/k.pub', signedIdentity: { type: 'matchRepository' } }], n: [1, 2.5, -3e2, null, true] }, null, 2);
    let seed = 7;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    const alphabet = '{}[]",:0-.eE tfn\\a\n';
    for (let k = 0; k < 2000; k++) {
      const at = rand(base.length);
      const t = base.slice(0, at) + alphabet[rand(alphabet.length)] + base.slice(at + rand(2));
      let ok = true;
      try {
        JSON.parse(t);
      } catch {
        ok = false;
      }
      const off = jsonErrorOffset(t);
      if (ok) expect(off, t).toBe(t.length);
      // Everything before the offset is a valid beginning: the error is at the offset, not earlier.
      else expect(jsonErrorOffset(t.slice(0, off)), t).toBe(off);
    }
  });
});
