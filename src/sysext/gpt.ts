import { open } from 'node:fs/promises';
import { UserError } from '../errors.js';

/**
 * A reader for GPT partition tables (UEFI 2.x §5.3) of Discoverable Disk Images, enough to tell
 * what systemd-dissect would see: partition types from the Discoverable Partitions Specification,
 * UUIDs, labels, offsets. Header and entry-array CRC32s are checked, the backup header is not used.
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

/** The GPT of an image file, or undefined when it has none (a bare file system). */
export async function readGpt(path: string, what = path): Promise<GptTable | undefined> {
  for (const sectorSize of [512, 4096]) {
    const hdr = await readAt(path, sectorSize, 512);
    if (hdr.length < 92 || hdr.toString('latin1', 0, 8) !== 'EFI PART') continue;
    const headerSize = hdr.readUInt32LE(12);
    if (headerSize < 92 || headerSize > 512) throw new UserError(`${what}: GPT header size ${headerSize} is invalid`);
    const h = Buffer.from(hdr.subarray(0, headerSize));
    const crc = h.readUInt32LE(16);
    h.writeUInt32LE(0, 16);
    if (crc32(h) !== crc) throw new UserError(`${what}: GPT header checksum mismatch`, 'the image is corrupt');
    const entriesLba = Number(hdr.readBigUInt64LE(72));
    const count = hdr.readUInt32LE(80);
    const entrySize = hdr.readUInt32LE(84);
    if (entrySize < 128 || count > 1024) throw new UserError(`${what}: GPT entry array (${count} × ${entrySize}) is invalid`);
    const entries = await readAt(path, entriesLba * sectorSize, count * entrySize);
    if (entries.length !== count * entrySize) throw new UserError(`${what}: GPT entry array is truncated`);
    if (crc32(entries) !== hdr.readUInt32LE(88)) throw new UserError(`${what}: GPT entry array checksum mismatch`, 'the image is corrupt');
    const partitions: GptPartition[] = [];
    for (let i = 0; i < count; i++) {
      const e = entries.subarray(i * entrySize, (i + 1) * entrySize);
      if (e.subarray(0, 16).every((x) => x === 0)) continue;
      const typeUuid = guidToString(e.subarray(0, 16));
      const first = Number(e.readBigUInt64LE(32));
      const last = Number(e.readBigUInt64LE(40));
      const p: GptPartition = {
        index: i + 1,
        typeUuid,
        uuid: guidToString(e.subarray(16, 32)),
        label: e.toString('utf16le', 56, 128).replace(/\0.*$/s, ''),
        offset: first * sectorSize,
        size: (last - first + 1) * sectorSize,
        attributes: e.readBigUInt64LE(48),
      };
      const dps = describeDpsType(typeUuid);
      if (dps) p.dps = dps;
      partitions.push(p);
    }
    return { sectorSize, diskUuid: guidToString(hdr.subarray(56, 72)), partitions };
  }
  return undefined;
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
    const read = async (offset: number, len: number) => {
      const b = Buffer.alloc(len);
      const { bytesRead } = await fh.read(b, 0, len, offset);
      if (bytesRead !== len) throw new Error(`${path}: short GPT read at ${offset}`);
      return b;
    };
    const primary = await read(sectorSize, sectorSize);
    if (primary.toString('latin1', 0, 8) !== 'EFI PART') throw new Error(`${path}: no GPT header`);
    const backupLba = Number(primary.readBigUInt64LE(32));
    for (const lba of [1, backupLba]) {
      const hdr = await read(lba * sectorSize, sectorSize);
      if (hdr.toString('latin1', 0, 8) !== 'EFI PART') throw new Error(`${path}: no GPT header at LBA ${lba}`);
      const headerSize = hdr.readUInt32LE(12);
      const entriesAt = Number(hdr.readBigUInt64LE(72)) * sectorSize;
      const count = hdr.readUInt32LE(80);
      const entrySize = hdr.readUInt32LE(84);
      const entries = await read(entriesAt, count * entrySize);
      for (const [index, uuid] of uuids) guidToBytes(uuid).copy(entries, (index - 1) * entrySize + 16);
      hdr.writeUInt32LE(crc32(entries), 88);
      hdr.writeUInt32LE(0, 16);
      hdr.writeUInt32LE(crc32(hdr.subarray(0, headerSize)), 16);
      await fh.write(entries, 0, entries.length, entriesAt);
      await fh.write(hdr, 0, sectorSize, lba * sectorSize);
    }
  } finally {
    await fh.close();
  }
}
