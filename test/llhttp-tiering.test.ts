/**
 * src/registry/llhttp-tiering.ts raises V8's wasm tiering budget at run time, not at start-up,
 * because V8 accepts a code cache only under the flags the process started with: Node's cache of
 * its built-in modules (and the node executable's of the CLI) must stay valid after the raise.
 * This checks that assumption on the Node running the tests, with a cache made before the raise.
 */
import { Script } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { raiseLlhttpTieringBudget } from '../src/registry/llhttp-tiering.js';
import { undici } from '../src/registry/undici-lazy.js';

describe('raising the llhttp tiering budget', () => {
  it('leaves code caches made before it valid, and is done when undici is loaded', async () => {
    const source = 'function add(a, b) { return a + b; } add(1, 2);';
    const cachedData = new Script(source).createCachedData();
    expect(new Script(source, { cachedData }).cachedDataRejected).toBe(false);
    const api = await undici();
    expect(typeof api.request).toBe('function');
    raiseLlhttpTieringBudget(); // a second call changes nothing
    expect(new Script(source, { cachedData }).cachedDataRejected).toBe(false);
  });
});
