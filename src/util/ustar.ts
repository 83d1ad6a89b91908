/**
 * Where a ustar header block keeps each field (POSIX.1-1988 ustar, as tar-stream and Go's
 * archive/tar lay it out): the one definition the layer writer (src/layer/tar-header.ts) and the
 * tar reader (src/util/tar-reader.ts) both use. Offsets in bytes from the start of the 512-byte
 * block; the lengths are those of the fields that are not one byte.
 */
export const BLOCK = 512;
export const NAME = 0;
export const NAME_LENGTH = 100;
export const MODE = 100;
export const UID = 108;
export const GID = 116;
/** mode, uid, gid, checksum, devmajor, devminor: 8 bytes each. */
export const SMALL_NUMBER_LENGTH = 8;
export const SIZE = 124;
export const MTIME = 136;
/** size and mtime: 12 bytes each. */
export const LARGE_NUMBER_LENGTH = 12;
export const CHECKSUM = 148;
export const TYPEFLAG = 156;
export const LINKNAME = 157;
export const LINKNAME_LENGTH = 100;
export const MAGIC = 257;
export const UNAME = 265;
export const GNAME = 297;
/** uname and gname: 32 bytes each. */
export const OWNER_NAME_LENGTH = 32;
export const DEVMAJOR = 329;
export const DEVMINOR = 337;
export const PREFIX = 345;
export const PREFIX_LENGTH = 155;
