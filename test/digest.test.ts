/**
 * Digest strings (src/oci/digest.ts): parseDigest accepts sha256 and sha512 in the image-spec form
 * and says what is wrong otherwise; isDigest answers the same question without an error object.
 */
import { describe, expect, it } from 'vitest';
import { isKbError, UserError } from '../src/errors.js';
import { isDigest, parseDigest } from '../src/oci/digest.js';

const hex64 = 'a'.repeat(64);
const hex128 = '0123456789abcdef'.repeat(8);

describe('parseDigest and isDigest', () => {
  it('accept sha256 and sha512 with their lengths of lowercase hex', () => {
    expect(parseDigest(`sha256:${hex64}`)).toEqual({ algorithm: 'sha256', hex: hex64 });
    expect(parseDigest(`sha512:${hex128}`)).toEqual({ algorithm: 'sha512', hex: hex128 });
    expect(isDigest(`sha256:${hex64}`)).toBe(true);
    expect(isDigest(`sha512:${hex128}`)).toBe(true);
  });

  it('refuse the rest with a message naming the field and what is expected, and isDigest says false for each', () => {
    const bad: [string, RegExp, 'user' | 'UNSUPPORTED'][] = [
      ['latest', /layer: "latest" is not a digest \(expected sha256:<64 hex>\)/, 'user'],
      [`sha256:${hex64}:x`, /is not a digest/, 'user'],
      [`md5:${'a'.repeat(32)}`, /layer: unsupported digest algorithm "md5" \(sha256 and sha512 are supported\)/, 'UNSUPPORTED'],
      [`sha256:${'A'.repeat(64)}`, /layer: "sha256:A+" must be sha256: followed by 64 lowercase hex characters/, 'user'],
      [`sha256:${hex64.slice(1)}`, /must be sha256: followed by 64/, 'user'],
      [`sha512:${hex64}`, /must be sha512: followed by 128/, 'user'],
      ['', /is not a digest/, 'user'],
    ];
    for (const [s, message, kind] of bad) {
      expect(isDigest(s), s).toBe(false);
      let err: unknown;
      try {
        parseDigest(s, 'layer');
      } catch (e) {
        err = e;
      }
      expect(String(err), s).toMatch(message);
      expect(kind === 'user' ? err instanceof UserError : isKbError(err, 'UNSUPPORTED'), s).toBe(true);
    }
  });
});
