/**
 * A TUF repository on 127.0.0.1 for `kbundle trust update` tests: metadata written with
 * @tufjs/models (the models tuf-js itself verifies with), signed with Ed25519 keys made here,
 * served from memory so a test can put any file — an expired timestamp, an older version, a
 * tampered target — at any path.
 *
 *   const repo = await startTufRepo({ 'trusted_root.json': bytes });
 *   kbundle trust update --mirror repo.url --tuf-root <repo.rootJson() in a file>
 *   repo.publish({ timestampExpires: new Date(0) })   // next refresh sees an expired timestamp
 *   repo.serve('timestamp.json', repo.history.timestamp[0]!)   // roll back
 *
 * Consistent snapshots as Sigstore's repository uses them: `N.root.json`, `N.snapshot.json`,
 * `N.targets.json`, `targets/<sha256>.<name>`, and an unversioned `timestamp.json`.
 */
import { createHash, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { Metadata, MetadataKind, Signature } from '@tufjs/models';

type Role = 'root' | 'timestamp' | 'snapshot' | 'targets';
const ROLES: Role[] = ['root', 'timestamp', 'snapshot', 'targets'];

interface TufKey {
  id: string;
  priv: KeyObject;
  json: { keytype: string; scheme: string; keyval: { public: string } };
}

function newKey(): TufKey {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(12).toString('hex');
  const json = { keytype: 'ed25519', scheme: 'ed25519', keyval: { public: raw } };
  return { id: createHash('sha256').update(JSON.stringify(json)).digest('hex'), priv: privateKey, json };
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const inDays = (d: number) => new Date(Date.now() + d * 86_400_000);
const iso = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');

function signed(kind: MetadataKind, body: Record<string, unknown>, keys: TufKey[]): Buffer {
  const md = Metadata.fromJSON(kind as any, { signed: body, signatures: [] } as any);
  for (const k of keys) md.sign((data) => new Signature({ keyID: k.id, sig: sign(null, data, k.priv).toString('hex') }), true);
  return Buffer.from(JSON.stringify(md.toJSON()));
}

export interface PublishOptions {
  timestampExpires?: Date;
  snapshotExpires?: Date;
  targetsExpires?: Date;
}

export interface TufRepo {
  url: string;
  /** Paths requested, in order. */
  requests: string[];
  /** Signed metadata as published, oldest first (for rollback tests). */
  history: Record<Role, Buffer[]>;
  /** The current root.json (what a client is seeded with out of band). */
  rootJson(): Buffer;
  /** Set or replace a target and publish new targets, snapshot and timestamp versions. */
  setTarget(name: string, bytes: Buffer, opts?: PublishOptions): void;
  /** New timestamp (and snapshot, targets) versions signed with the current keys. */
  publish(opts?: PublishOptions): void;
  /** New root version with fresh keys for `roles`; signed by the old and new root keys unless told otherwise. */
  rotateRoot(roles: Role[], opts?: { signWithOldRoot?: boolean; signWithNewRoot?: boolean; expires?: Date }): void;
  /** Serve these bytes at this path (relative to the repository URL), replacing what is there. */
  serve(path: string, bytes: Buffer): void;
  stop(): Promise<void>;
}

export async function startTufRepo(targets: Record<string, Buffer>): Promise<TufRepo> {
  const files = new Map<string, Buffer>();
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    const path = decodeURIComponent((req.url ?? '/').split('?')[0]!.replace(/^\//, ''));
    requests.push(path);
    const body = files.get(path);
    if (req.method !== 'GET' || !body) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length }).end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;

  const keys: Record<Role, TufKey> = { root: newKey(), timestamp: newKey(), snapshot: newKey(), targets: newKey() };
  const versions: Record<Role, number> = { root: 0, timestamp: 0, snapshot: 0, targets: 0 };
  const history: Record<Role, Buffer[]> = { root: [], timestamp: [], snapshot: [], targets: [] };
  const content = new Map<string, Buffer>(Object.entries(targets));
  let rootBytes: Buffer = Buffer.alloc(0);

  const rootBody = (expires: Date) => ({
    _type: 'root',
    spec_version: '1.0.31',
    version: versions.root,
    expires: iso(expires),
    consistent_snapshot: true,
    keys: Object.fromEntries(ROLES.map((r) => [keys[r].id, keys[r].json])),
    roles: Object.fromEntries(ROLES.map((r) => [r, { keyids: [keys[r].id], threshold: 1 }])),
  });

  const writeRoot = (signers: TufKey[], expires = inDays(365)) => {
    versions.root += 1;
    rootBytes = signed(MetadataKind.Root, rootBody(expires), signers);
    history.root.push(rootBytes);
    files.set(`${versions.root}.root.json`, rootBytes);
    files.set('root.json', rootBytes);
  };

  const publish = (opts: PublishOptions = {}) => {
    versions.targets += 1;
    const targetEntries: Record<string, unknown> = {};
    for (const [name, bytes] of content) {
      targetEntries[name] = { length: bytes.length, hashes: { sha256: sha256(bytes) } };
      files.set(`targets/${sha256(bytes)}.${name}`, bytes);
    }
    const targetsBytes = signed(
      MetadataKind.Targets,
      { _type: 'targets', spec_version: '1.0.31', version: versions.targets, expires: iso(opts.targetsExpires ?? inDays(30)), targets: targetEntries },
      [keys.targets],
    );
    history.targets.push(targetsBytes);
    files.set(`${versions.targets}.targets.json`, targetsBytes);

    versions.snapshot += 1;
    const snapshotBytes = signed(
      MetadataKind.Snapshot,
      { _type: 'snapshot', spec_version: '1.0.31', version: versions.snapshot, expires: iso(opts.snapshotExpires ?? inDays(7)), meta: { 'targets.json': { version: versions.targets } } },
      [keys.snapshot],
    );
    history.snapshot.push(snapshotBytes);
    files.set(`${versions.snapshot}.snapshot.json`, snapshotBytes);

    versions.timestamp += 1;
    const timestampBytes = signed(
      MetadataKind.Timestamp,
      {
        _type: 'timestamp',
        spec_version: '1.0.31',
        version: versions.timestamp,
        expires: iso(opts.timestampExpires ?? inDays(1)),
        meta: { 'snapshot.json': { version: versions.snapshot, length: snapshotBytes.length, hashes: { sha256: sha256(snapshotBytes) } } },
      },
      [keys.timestamp],
    );
    history.timestamp.push(timestampBytes);
    files.set('timestamp.json', timestampBytes);
  };

  writeRoot([keys.root]);
  publish();

  return {
    url,
    requests,
    history,
    rootJson: () => rootBytes,
    setTarget(name, bytes, opts) {
      content.set(name, bytes);
      publish(opts);
    },
    publish,
    rotateRoot(roles, opts = {}) {
      const oldRoot = keys.root;
      for (const r of roles) keys[r] = newKey();
      const signers = [...(opts.signWithOldRoot === false ? [] : [oldRoot]), ...(opts.signWithNewRoot === false || keys.root === oldRoot ? [] : [keys.root])];
      writeRoot(signers, opts.expires);
    },
    serve(path, bytes) {
      files.set(path, bytes);
    },
    async stop() {
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeAllConnections();
      await closed;
    },
  };
}
