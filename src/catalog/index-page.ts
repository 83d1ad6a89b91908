import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { loadBundleSpec } from '../builder/spec.js';
import type { Requires } from '../requires/requires.js';
import { writeFileAtomic } from '../store/oci-layout.js';
import type { CatalogEntryState } from './build.js';
import { discoverBundles } from './discover.js';
import { SourceFolder } from '../layer/source-folder.js';

export interface CatalogIndexEntry {
  name: string;
  version: string;
  description: string;
  type: string;
  platforms: string[];
  source?: string;
  license?: string;
  reference: string;
  digest?: string;
  signatures: string[];
  configKey: string;
  config: Record<string, string>;
  readme: string;
  snippet: string;
  /** What a node must be (bundle.yaml requires:), when the bundle says. */
  requires?: Requires;
}

/** The first prose paragraph of a README (after the title). */
export function readmeExcerpt(text: string): string {
  const paras = text.split(/\n\s*\n/).map((p) => p.trim());
  const first = paras.find((p) => p && !p.startsWith('#') && !p.startsWith('```'));
  return (first ?? '').replace(/\s+/g, ' ').slice(0, 600);
}

export function cloudConfigSnippet(e: { type: string; reference: string; configKey: string; config: Record<string, string> }): string {
  const scheme = e.type === 'run' ? 'run' : 'container';
  const lines = ['#cloud-config', 'bundles:', '  - targets:', `      - ${scheme}://${e.reference}`];
  const keys = Object.entries(e.config);
  if (keys.length) {
    lines.push(`${e.configKey}:`);
    for (const [k, v] of keys) lines.push(`  ${k}: ${JSON.stringify(v)}`);
  }
  return lines.join('\n');
}

export async function catalogIndex(
  catalogDir: string,
  opts: {
    registry?: string;
    state?: Record<string, CatalogEntryState>;
    published?: { registry: string; bundles: Record<string, { version: string; digest: string; references: string[]; signatures: string[] }> };
  } = {},
): Promise<CatalogIndexEntry[]> {
  const out: CatalogIndexEntry[] = [];
  const registry = (opts.registry ?? opts.published?.registry ?? 'REGISTRY/kairos-bundles').replace(/\/$/, '');
  for (const b of await discoverBundles(catalogDir)) {
    const { spec } = await loadBundleSpec(b.dir);
    let readme = '';
    try {
      readme = readmeExcerpt(new SourceFolder(b.dir).readOptional('README.md', join(b.dir, 'README.md'))?.toString('utf8') ?? '');
    } catch {
      /* lint reports it */
    }
    const st = opts.state?.[b.name];
    const pub = opts.published?.registry === registry ? opts.published.bundles[b.name] : undefined;
    const published = pub && pub.version === spec.version ? pub : undefined;
    const reference = `${registry}/${spec.name}:${spec.version}`;
    const entry: CatalogIndexEntry = {
      name: spec.name,
      version: spec.version,
      description: spec.description,
      type: spec.type,
      platforms: spec.platforms,
      ...(spec.source ? { source: spec.source } : {}),
      ...(spec.license ? { license: spec.license } : {}),
      reference,
      ...(published ? { digest: published.digest } : st && st.version === spec.version ? { digest: st.digest } : {}),
      signatures: published && (!st || st.digest === published.digest) ? published.signatures : [],
      configKey: spec.config.key,
      config: spec.config.values,
      readme,
      snippet: '',
      ...(spec.requires ? { requires: spec.requires } : {}),
    };
    entry.snippet = cloudConfigSnippet(entry);
    out.push(entry);
  }
  return out;
}

function escapeForScript(json: string): string {
  return json.replace(/</g, '\\u003c').replace(/>/g, '\\u003e').replace(/&/g, '\\u0026');
}

/** A static, dependency-free page: search and type filter over the embedded index. */
export function renderCatalogPage(entries: CatalogIndexEntry[]): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Kairos bundle catalog</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1d2433; }
  header { background: #1d2433; color: #fff; padding: 1rem 2rem; }
  header h1 { margin: 0; font-size: 1.4rem; }
  .controls { display: flex; gap: .75rem; padding: 1rem 2rem; flex-wrap: wrap; }
  .controls input, .controls select { font-size: 1rem; padding: .4rem .6rem; border: 1px solid #c5cad3; border-radius: 6px; }
  .controls input { flex: 1; min-width: 14rem; }
  main { display: grid; grid-template-columns: repeat(auto-fill, minmax(24rem, 1fr)); gap: 1rem; padding: 0 2rem 2rem; }
  article { background: #fff; border: 1px solid #dde1e7; border-radius: 8px; padding: 1rem; }
  article h2 { margin: 0 0 .25rem; font-size: 1.1rem; }
  .meta { color: #5b6475; font-size: .85rem; }
  .badge { display: inline-block; background: #e7ecf5; border-radius: 4px; padding: 0 .4rem; margin-right: .3rem; }
  pre { background: #f0f2f5; padding: .6rem; border-radius: 6px; overflow-x: auto; font-size: .8rem; }
  button { cursor: pointer; border: 1px solid #c5cad3; background: #fff; border-radius: 6px; padding: .25rem .6rem; }
  .empty { padding: 2rem; color: #5b6475; }
  .requires { font-size: .85rem; color: #7a4b00; }
  code.digest { font-size: .75rem; word-break: break-all; }
</style>
</head>
<body>
<header><h1>Kairos bundle catalog</h1><div class="meta" id="count"></div></header>
<div class="controls">
  <input id="search" type="search" placeholder="Search bundles (name, description, config keys)" aria-label="Search bundles">
  <select id="type" aria-label="Bundle type"><option value="">All types</option><option value="run">run</option><option value="container">container</option><option value="sysext">sysext</option><option value="confext">confext</option></select>
</div>
<main id="list"></main>
<div class="empty" id="empty" hidden>No bundle matches.</div>
<script id="catalog-data" type="application/json">${escapeForScript(JSON.stringify(entries))}</script>
<script>
  const bundles = JSON.parse(document.getElementById('catalog-data').textContent);
  const list = document.getElementById('list');
  const el = (tag, attrs, ...kids) => { const e = document.createElement(tag); Object.assign(e, attrs || {}); for (const k of kids) e.append(k); return e; };
  function requiresText(r) {
    const p = [];
    if (r.kairos) p.push('Kairos ' + r.kairos);
    for (const k of ['flavor', 'family', 'arch']) if (r[k]) p.push(k + ' ' + r[k].join(', '));
    if (r.k8s) p.push([(r.k8s.distribution || []).join(' or ') || 'Kubernetes', r.k8s.version || ''].join(' ').trim());
    if (r.systemd) p.push('systemd >= ' + r.systemd);
    if (r.trustedBoot !== undefined) p.push(r.trustedBoot ? 'Trusted Boot' : 'no Trusted Boot');
    return p.join('; ');
  }
  function card(b) {
    const pre = el('pre', { className: 'snippet' }, b.snippet);
    const copy = el('button', { type: 'button', className: 'copy', textContent: 'Copy cloud-config' });
    copy.addEventListener('click', async () => {
      try { await navigator.clipboard.writeText(b.snippet); copy.textContent = 'Copied'; }
      catch { const r = document.createRange(); r.selectNodeContents(pre); getSelection().removeAllRanges(); getSelection().addRange(r); copy.textContent = 'Selected: press Ctrl+C'; }
    });
    const meta = el('div', { className: 'meta' }, el('span', { className: 'badge', textContent: b.type }), ...b.platforms.map((p) => el('span', { className: 'badge', textContent: p })));
    const art = el('article', { className: 'bundle' }, el('h2', { textContent: b.name + ' ' + b.version }), meta, el('p', { textContent: b.description }));
    art.dataset.name = b.name;
    art.dataset.type = b.type;
    if (b.readme) art.append(el('p', { className: 'meta', textContent: b.readme }));
    if (b.requires) art.append(el('p', { className: 'requires', textContent: 'Requires: ' + requiresText(b.requires) }));
    if (b.digest) art.append(el('code', { className: 'digest', textContent: b.digest }));
    art.append(pre, copy);
    return art;
  }
  const cards = bundles.map((b) => ({ b, node: card(b) }));
  for (const c of cards) list.append(c.node);
  function apply() {
    const q = document.getElementById('search').value.trim().toLowerCase();
    const t = document.getElementById('type').value;
    let shown = 0;
    for (const { b, node } of cards) {
      const hay = [b.name, b.description, b.readme, b.configKey, ...Object.keys(b.config)].join(' ').toLowerCase();
      const ok = (!t || b.type === t) && (!q || q.split(/\\s+/).every((w) => hay.includes(w)));
      node.hidden = !ok;
      if (ok) shown++;
    }
    document.getElementById('count').textContent = shown + ' of ' + bundles.length + ' bundles';
    document.getElementById('empty').hidden = shown !== 0;
  }
  document.getElementById('search').addEventListener('input', apply);
  document.getElementById('type').addEventListener('change', apply);
  apply();
</script>
</body>
</html>
`;
}

export async function writeCatalogIndex(outDir: string, entries: CatalogIndexEntry[]): Promise<{ json: string; html: string }> {
  await mkdir(outDir, { recursive: true });
  const json = join(outDir, 'index.json');
  const html = join(outDir, 'index.html');
  await writeFileAtomic(json, JSON.stringify({ schemaVersion: 1, bundles: entries }, null, 2) + '\n');
  await writeFileAtomic(html, renderCatalogPage(entries));
  return { json, html };
}
