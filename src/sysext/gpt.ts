import { open } from 'node:fs/promises';
import { UserError } from '../errors.js';

/**
 * A reader for GPT partition tables (UEFI 2.x §5.3) of Discoverable Disk Images, enough to tell
 * what systemd-dissect would see: partition types from the Discoverable Partitions Specification,
 * UUIDs, labels, offsets. Images are hostile: header fields, entry size and count, CRC32s and LBA
 * ranges are checked before anything is read or allocated from them; the backup header is not used.
 */

/** DPS partition types (from `systemd-id128 show` of systemd 252): `<designator>-<arch>` → type UUID. */
const DPS_TYPES: Record<string, string> = {
  'root-arm': '69dad710-2ce4-4e3c-b16c-21a1d49abed3',
  'root-arm-verity': '7386cdf2-203c-47a9-a498-f2ecce45a2d6',
  'root-arm-verity-sig': '42b0455f-eb11-491d-98d3-56145ba9d037',
  'root-arm64': 'b921b045-1df0-41c3-af44-4c6f280d3fae',
  'root-arm64-verity': 'df3300ce-d69f-4c92-978c-9bfb0f38d820',
  'root-arm64-verity-sig': '6db69de6-29f4-4758-a7a5-962190f00ce3',
  'root-loongarch64': '77055800-792c-4f94-b39a-98c91b762bb6',
  'root-loongarch64-verity': 'f3393b22-e9af-4613-a948-9d3bfbd0c535',
  'root-loongarch64-verity-sig': '5afb67eb-ecc8-4f85-ae8e-ac1e7c50e7d0',
  'root-ppc64-le': 'c31c45e6-3f39-412e-80fb-4809c4980599',
  'root-ppc64-le-verity': '906bd944-4589-4aae-a4e4-dd983917446a',
  'root-ppc64-le-verity-sig': 'd4a236e7-e873-4c07-bf1d-bf6cf7f1c3c6',
  'root-riscv64': '72ec70a6-cf74-40e6-bd49-4bda08e8f224',
  'root-riscv64-verity': 'b6ed5582-440b-4209-b8da-5ff7c419ea3d',
  'root-riscv64-verity-sig': 'efe0f087-ea8d-4469-821a-4c2a96a8386a',
  'root-s390x': '5eead9a9-fe09-4a1e-a1d7-520d00531306',
  'root-s390x-verity': 'b325bfbe-c7be-4ab8-8357-139e652d2f6b',
  'root-s390x-verity-sig': 'c80187a5-73a3-491a-901a-017c3fa953e9',
  'root-x86': '44479540-f297-41b2-9af7-d131d5f0458a',
  'root-x86-64': '4f68bce3-e8cd-4db1-96e7-fbcaf984b709',
  'root-x86-64-verity': '2c7357ed-ebd2-46d9-aec1-23d437ec2bf5',
  'root-x86-64-verity-sig': '41092b05-9fc8-4523-994f-2def0408b176',
  'root-x86-verity': 'd13c5d3b-b5d1-422a-b29f-9454fdc89d76',
  'root-x86-verity-sig': '5996fc05-109c-48de-808b-23fa0830b676',
  'usr-arm': '7d0359a3-02b3-4f0a-865c-654403e70625',
  'usr-arm-verity': 'c215d751-7bcd-4649-be90-6627490a4c05',
  'usr-arm-verity-sig': 'd7ff812f-37d1-4902-a810-d76ba57b975a',
  'usr-arm64': 'b0e01050-ee5f-4390-949a-9101b17104e9',
  'usr-arm64-verity': '6e11a4e7-fbca-4ded-b9e9-e1a512bb664e',
  'usr-arm64-verity-sig': 'c23ce4ff-44bd-4b00-b2d4-b41b3419e02a',
  'usr-loongarch64': 'e611c702-575c-4cbe-9a46-434fa0bf7e3f',
  'usr-loongarch64-verity': 'f46b2c26-59ae-48f0-9106-c50ed47f673d',
  'usr-loongarch64-verity-sig': 'b024f315-d330-444c-8461-44bbde524e99',
  'usr-ppc64-le': '15bb03af-77e7-4d4a-b12b-c0d084f7491c',
  'usr-ppc64-le-verity': 'ee2b9983-21e8-4153-86d9-b6901a54d1ce',
  'usr-ppc64-le-verity-sig': 'c8bfbd1e-268e-4521-8bba-bf314c399557',
  'usr-riscv64': 'beaec34b-8442-439b-a40b-984381ed097d',
  'usr-riscv64-verity': '8f1056be-9b05-47c4-81d6-be53128e5b54',
  'usr-riscv64-verity-sig': 'd2f9000a-7a18-453f-b5cd-4d32f77a7b32',
  'usr-s390x': '8a4f5770-50aa-4ed3-874a-99b710db6fea',
  'usr-s390x-verity': '31741cc4-1a2a-4111-a581-e00b447d2d06',
  'usr-s390x-verity-sig': '3f324816-667b-46ae-86ee-9b0c0c6c11b4',
  'usr-x86': '75250d76-8cc6-458e-bd66-bd47cc81a812',
  'usr-x86-64': '8484680c-9521-48c6-9c11-b0720656f69e',
  'usr-x86-64-verity': '77ff5f63-e7b6-4633-acf4-1565b864c0e6',
  'usr-x86-64-verity-sig': 'e7bb33fb-06cf-4e81-8273-e543b413e2e2',
  'usr-x86-verity': '8f461b0d-14ee-4e81-9aa9-049b6fb97abd',
  'usr-x86-verity-sig': '974a71c0-de41-43c3-be5d-5c5ccd1ad2c0',
};
const BY_UUID = new Map(Object.entries(DPS_TYPES).map(([name, uuid]) => [uuid, name]));

export type Designator = 'root' | 'usr';
export type Role = 'data' | 'verity' | 'verity-sig';

export interface DpsType {
  designator: Designator;
  role: Role;
  /** systemd architecture name, e.g. x86-64. */
  arch: string;
  /** `root-x86-64-verity` */
  name: string;
}

export function dpsTypeUuid(designator: Designator, arch: string, role: Role): string {
  const name = `${designator}-${arch}${role === 'data' ? '' : `-${role}`}`;
  const u = DPS_TYPES[name];
  if (!u) throw new UserError(`no Discoverable Partitions type for ${name}`);
  return u;
}

export function describeDpsType(uuid: string): DpsType | undefined {
  const name = BY_UUID.get(uuid);
  if (!name) return undefined;
  const m = /^(root|usr)-(.+?)(-verity(-sig)?)?$/.exec(name)!;
  return { designator: m[1] as Designator, arch: m[2]!, role: m[4] ? 'verity-sig' : m[3] ? 'verity' : 'data', name };
}

export interface GptPartition {
  index: number;
  typeUuid: string;
  uuid: string;
  label: string;
  /** Byte offset and size in the image. */
  offset: number;
  size: number;
  attributes: bigint;
  dps?: DpsType;
}

export interface GptTable {
  sectorSize: number;
  diskUuid: string;
  partitions: GptPartition[];
}

/** GPT stores the first three UUID fields little-endian. */
export function guidToString(b: Buffer): string {
  const h = (x: Buffer) => x.toString('hex');
  const le = (s: number, e: number) => h(Buffer.from(b.subarray(s, e)).reverse());
  return `${le(0, 4)}-${le(4, 6)}-${le(6, 8)}-${h(b.subarray(8, 10))}-${h(b.subarray(10, 16))}`;
}

let crcTable: Uint32Array | undefined;
export function crc32(buf: Buffer): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = crcTable[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Up to `len` bytes of a file from `offset` (fewer at its end). */
export async function readAt(path: string, offset: number, len: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(len);
    const { bytesRead } = await fh.read(buf, 0, len, offset);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/**
 * Limits on what a GPT may claim, checked before anything is allocated from its fields: the
 * UEFI spec's entry size (128 × 2^n), a count far above any real table (systemd-repart and fdisk
 * write 128), and so an entry array of at most 4096 × 4096 bytes.
 */
const MAX_ENTRIES = 4096;
const MAX_ENTRY_SIZE = 4096;
const GPT_REVISION = 0x00010000;
const CORRUPT = 'the image is corrupt, or was not made as a disk image; rebuild it with kbundle sysext build';

/** A GPT header whose fields were checked against the spec and the file. */
interface GptHeader {
  sectorSize: number;
  headerSize: number;
  alternateLba: bigint;
  firstUsable: bigint;
  lastUsable: bigint;
  diskUuid: string;
  entriesLba: bigint;
  count: number;
  entrySize: number;
  entriesCrc: number;
  /** The header sector as read. */
  raw: Buffer;
}

function corrupt(what: string, message: string): UserError {
  return new UserError(`${what}: ${message}`, CORRUPT);
}

/**
 * Check a header read at `lba` (a sector of `sectorSize` bytes, starting with "EFI PART") in a file of
 * `fileSize` bytes: revision, size, CRC, its own LBA, the usable area and the entry array's size
 * and place (inside the file, clear of the usable area). Every LBA is compared as a bigint, so
 * values past 2^53 are refused rather than rounded.
 */
function parseHeader(raw: Buffer, lba: bigint, sectorSize: number, fileSize: number, what: string): GptHeader {
  const revision = raw.readUInt32LE(8);
  const headerSize = raw.readUInt32LE(12);
  if (headerSize < 92 || headerSize > sectorSize) throw corrupt(what, `GPT header size ${headerSize} is invalid (92 to ${sectorSize} bytes)`);
  const h = Buffer.from(raw.subarray(0, headerSize));
  const crc = h.readUInt32LE(16);
  h.writeUInt32LE(0, 16);
  if (crc32(h) !== crc) throw corrupt(what, 'GPT header checksum mismatch');
  if (revision !== GPT_REVISION) throw corrupt(what, `GPT header revision 0x${revision.toString(16).padStart(8, '0')} is not 1.0`);
  const myLba = raw.readBigUInt64LE(24);
  if (myLba !== lba) throw corrupt(what, `GPT header at LBA ${lba} says it is at LBA ${myLba}`);
  const sectors = BigInt(Math.floor(fileSize / sectorSize));
  const firstUsable = raw.readBigUInt64LE(40);
  const lastUsable = raw.readBigUInt64LE(48);
  if (lastUsable >= sectors || firstUsable >= sectors) throw corrupt(what, `GPT usable area (LBA ${firstUsable}-${lastUsable}) lies outside the image (${sectors} sectors)`);
  if (firstUsable > lastUsable) throw corrupt(what, `GPT usable area (LBA ${firstUsable}-${lastUsable}) is empty`);
  const count = raw.readUInt32LE(80);
  const entrySize = raw.readUInt32LE(84);
  if (entrySize < 128 || entrySize > MAX_ENTRY_SIZE || (entrySize & (entrySize - 1)) !== 0) {
    throw corrupt(what, `GPT partition entry size ${entrySize} is invalid (128 × 2^n bytes, at most ${MAX_ENTRY_SIZE})`);
  }
  if (count > MAX_ENTRIES) throw corrupt(what, `GPT partition entry count ${count} is over the limit of ${MAX_ENTRIES}`);
  const entriesLba = raw.readBigUInt64LE(72);
  const bytes = count * entrySize;
  const end = entriesLba + BigInt(Math.ceil(bytes / sectorSize)); // one past the array's last sector
  if (entriesLba < 2n || end > sectors) throw corrupt(what, `GPT partition entry array (LBA ${entriesLba}, ${bytes} bytes) lies outside the image (${sectors} sectors)`);
  if (bytes > 0 && entriesLba <= lastUsable && end > firstUsable) {
    throw corrupt(what, `GPT partition entry array (LBA ${entriesLba}, ${bytes} bytes) overlaps the usable area (LBA ${firstUsable}-${lastUsable})`);
  }
  return {
    sectorSize,
    headerSize,
    alternateLba: raw.readBigUInt64LE(32),
    firstUsable,
    lastUsable,
    diskUuid: guidToString(raw.subarray(56, 72)),
    entriesLba,
    count,
    entrySize,
    entriesCrc: raw.readUInt32LE(88),
    raw,
  };
}

type FileHandle = Awaited<ReturnType<typeof open>>;

async function readExactly(fh: FileHandle, offset: number, len: number, what: string, part: string): Promise<Buffer> {
  const b = Buffer.alloc(len);
  const { bytesRead } = await fh.read(b, 0, len, offset);
  if (bytesRead !== len) throw corrupt(what, `${part} is truncated`);
  return b;
}

/** The checked header at `lba`, or undefined when there is no "EFI PART" there. */
async function readHeader(fh: FileHandle, lba: bigint, sectorSize: number, fileSize: number, what: string): Promise<GptHeader | undefined> {
  if (BigInt(fileSize) < (lba + 1n) * BigInt(sectorSize)) return undefined;
  const raw = await readExactly(fh, Number(lba) * sectorSize, sectorSize, what, 'the GPT header');
  if (raw.toString('latin1', 0, 8) !== 'EFI PART') return undefined;
  return parseHeader(raw, lba, sectorSize, fileSize, what);
}

/** The entry array of a checked header, its CRC checked. */
async function readEntries(fh: FileHandle, h: GptHeader, what: string): Promise<Buffer> {
  const entries = await readExactly(fh, Number(h.entriesLba) * h.sectorSize, h.count * h.entrySize, what, 'the GPT partition entry array');
  if (crc32(entries) !== h.entriesCrc) throw corrupt(what, 'GPT partition entry array checksum mismatch');
  return entries;
}

/** The partitions of a checked table: each inside the usable area, none overlapping another. */
function parsePartitions(entries: Buffer, h: GptHeader, what: string): GptPartition[] {
  const partitions: GptPartition[] = [];
  const ranges: { index: number; first: bigint; last: bigint }[] = [];
  for (let i = 0; i < h.count; i++) {
    const e = entries.subarray(i * h.entrySize, (i + 1) * h.entrySize);
    if (e.subarray(0, 16).every((x) => x === 0)) continue;
    const first = e.readBigUInt64LE(32);
    const last = e.readBigUInt64LE(40);
    const at = `GPT partition ${i + 1} (LBA ${first}-${last})`;
    if (first > last) throw corrupt(what, `${at} ends before it starts`);
    if (first < h.firstUsable || last > h.lastUsable) throw corrupt(what, `${at} lies outside the usable area (LBA ${h.firstUsable}-${h.lastUsable})`);
    for (const r of ranges) {
      if (first <= r.last && r.first <= last) throw corrupt(what, `GPT partitions ${r.index} (LBA ${r.first}-${r.last}) and ${i + 1} (LBA ${first}-${last}) overlap`);
    }
    ranges.push({ index: i + 1, first, last });
    const typeUuid = guidToString(e.subarray(0, 16));
    const p: GptPartition = {
      index: i + 1,
      typeUuid,
      uuid: guidToString(e.subarray(16, 32)),
      label: e.toString('utf16le', 56, 128).replace(/\0.*$/s, ''),
      // Inside the usable area, so inside the file: safe as numbers.
      offset: Number(first) * h.sectorSize,
      size: Number(last - first + 1n) * h.sectorSize,
      attributes: e.readBigUInt64LE(48),
    };
    const dps = describeDpsType(typeUuid);
    if (dps) p.dps = dps;
    partitions.push(p);
  }
  return partitions;
}

/**
 * The GPT of an image file, or undefined when it has none (a bare file system). The image is
 * hostile: every field of the primary header and entry array is checked (parseHeader,
 * parsePartitions) before it sizes a read or an allocation, and a lie is a UserError naming `what`.
 */
export async function readGpt(path: string, what = path): Promise<GptTable | undefined> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    for (const sectorSize of [512, 4096]) {
      const h = await readHeader(fh, 1n, sectorSize, size, what);
      if (!h) continue;
      const entries = await readEntries(fh, h, what);
      return { sectorSize, diskUuid: h.diskUuid, partitions: parsePartitions(entries, h, what) };
    }
    return undefined;
  } finally {
    await fh.close();
  }
}

/** The file system magic at the start of a region: squashfs, erofs, ext4, btrfs, xfs, vfat or unknown. */
export async function probeFilesystem(path: string, offset: number): Promise<string | undefined> {
  const b = await readAt(path, offset, 2048);
  if (b.length >= 4 && b.toString('latin1', 0, 4) === 'hsqs') return 'squashfs';
  if (b.length >= 1028 && b.readUInt32LE(1024) === 0xe0f5e1e2) return 'erofs';
  if (b.length >= 1082 && b.readUInt16LE(1080) === 0xef53) return 'ext4';
  if (b.length >= 4 && b.toString('latin1', 0, 4) === 'XFSB') return 'xfs';
  const far = await readAt(path, offset + 0x10040, 8);
  if (far.toString('latin1') === '_BHRfS_M') return 'btrfs';
  if (b.length >= 512 && b[510] === 0x55 && b[511] === 0xaa && /FAT/.test(b.toString('latin1', 54, 90))) return 'vfat';
  return undefined;
}

/** The 16 on-disk bytes of a UUID in a GPT (first three fields little-endian). */
export function guidToBytes(uuid: string): Buffer {
  const h = Buffer.from(uuid.replace(/-/g, ''), 'hex');
  if (h.length !== 16) throw new Error(`not a UUID: ${uuid}`);
  return Buffer.concat([Buffer.from(h.subarray(0, 4)).reverse(), Buffer.from(h.subarray(4, 6)).reverse(), Buffer.from(h.subarray(6, 8)).reverse(), h.subarray(8, 16)]);
}

/**
 * Set the unique UUIDs of partitions (1-based index → UUID) in both the primary and the backup
 * GPT, with their entry-array and header CRC32s: the rewrite systemd-repart would have done had it
 * known the UUIDs up front.
 */
export async function setPartitionUuids(path: string, uuids: Map<number, string>, sectorSize = 512): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    const { size } = await fh.stat();
    const primary = await readHeader(fh, 1n, sectorSize, size, path);
    if (!primary) throw new Error(`${path}: no GPT header`);
    for (const lba of [1n, primary.alternateLba]) {
      const hdr = await readHeader(fh, lba, sectorSize, size, path);
      if (!hdr) throw new Error(`${path}: no GPT header at LBA ${lba}`);
      const entries = await readEntries(fh, hdr, path);
      for (const [index, uuid] of uuids) {
        if (index < 1 || index > hdr.count) throw new Error(`${path}: no GPT partition ${index}`);
        guidToBytes(uuid).copy(entries, (index - 1) * hdr.entrySize + 16);
      }
      const raw = hdr.raw;
      raw.writeUInt32LE(crc32(entries), 88);
      raw.writeUInt32LE(0, 16);
      raw.writeUInt32LE(crc32(raw.subarray(0, hdr.headerSize)), 16);
      await fh.write(entries, 0, entries.length, Number(hdr.entriesLba) * sectorSize);
      await fh.write(raw, 0, sectorSize, Number(lba) * sectorSize);
    }
  } finally {
    await fh.close();
  }
}
