/**
 * The folder layering of src/: every folder is one job, and the folders form a graph without
 * cycles (static, dynamic and type-only imports all count: a cycle through types still means two
 * folders that cannot be understood or moved apart). Entry points — the files Node or the node
 * executable start — sit above everything and may import any folder.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from './helpers/exec.js';

const SRC = join(REPO_ROOT, 'src');
const ENTRY_POINTS = new Set(['cli/kbundle.cts', 'sea/entry.ts', 'sea/loader.ts']);
const IMPORT_RE = /(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s+)'(\.{1,2}\/[^']+)'/gm;

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sourceFiles(join(dir, e.name)) : /\.c?ts$/.test(e.name) ? [join(dir, e.name)] : []));
}

/** Top-level folder of a file under src/ (files directly in src/ are shared leaves: no folder). */
function folderOf(file: string): string | undefined {
  const parts = relative(SRC, file).split('/');
  return parts.length > 1 ? parts[0] : undefined;
}

/** folder → folder → the files that make the edge. */
function folderGraph(): Map<string, Map<string, Set<string>>> {
  const graph = new Map<string, Map<string, Set<string>>>();
  for (const file of sourceFiles(SRC)) {
    const rel = relative(SRC, file);
    const from = folderOf(file);
    if (!from || ENTRY_POINTS.has(rel)) continue;
    for (const m of readFileSync(file, 'utf8').matchAll(IMPORT_RE)) {
      const target = resolve(dirname(file), m[1]!.replace(/\.(c?)js$/, '.$1ts'));
      const to = folderOf(target);
      if (!to || to === from || !target.startsWith(SRC)) continue;
      const edges = graph.get(from) ?? new Map<string, Set<string>>();
      graph.set(from, edges);
      const files = edges.get(to) ?? new Set<string>();
      edges.set(to, files);
      files.add(rel);
    }
  }
  return graph;
}

/** One cycle of the graph as a path (a → b → … → a), or undefined. */
function findCycle(graph: Map<string, Map<string, Set<string>>>): string[] | undefined {
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (node: string): string[] | undefined => {
    if (state.get(node) === 'done') return undefined;
    if (state.get(node) === 'open') return [...stack.slice(stack.indexOf(node)), node];
    state.set(node, 'open');
    stack.push(node);
    for (const next of graph.get(node)?.keys() ?? []) {
      const cycle = visit(next);
      if (cycle) return cycle;
    }
    stack.pop();
    state.set(node, 'done');
    return undefined;
  };
  for (const node of graph.keys()) {
    const cycle = visit(node);
    if (cycle) return cycle;
  }
  return undefined;
}

describe('src/ folder layering', () => {
  const graph = folderGraph();

  it('sees the imports it judges (the scanner finds known edges of every import form)', () => {
    expect(graph.get('cli')?.has('builder')).toBe(true); // static import
    expect([...(graph.get('builder')?.get('sysext') ?? [])]).toContain('builder/sysext-image.ts'); // type and value imports
    expect(graph.get('policy')?.has('verify')).toBe(true); // dynamic import()
  });

  it('has no cycle between folders: bundle-type dispatch (builder) sits above sysext, Kairos node facts (kairos) below both', () => {
    const cycle = findCycle(graph);
    const explain = cycle?.slice(1).map((to, i) => `${cycle[i]} → ${to} (${[...graph.get(cycle[i]!)!.get(to)!].join(', ')})`);
    expect(explain).toBeUndefined();
  });

  it('keeps sysext, builder and the node-facts folder in that order', () => {
    expect(graph.get('sysext')?.has('builder') ?? false).toBe(false);
    expect(graph.get('kairos') === undefined || [...graph.get('kairos')!.keys()].every((f) => !['sysext', 'builder', 'state', 'requires', 'rollout'].includes(f))).toBe(true);
  });
});
