//! Wire constants of the NBD protocol (NetworkBlockDevice/nbd `doc/proto.md`). All integers are big-endian.

/// "NBDMAGIC": first 8 bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// "IHAVEOPT": second server magic, and the magic prefixing every client option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic prefixing every option reply.
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of a transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

/// Handshake flag: fixed newstyle supported.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag: the 124 zero bytes after EXPORT_NAME may be omitted.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: client speaks fixed newstyle.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: client does not want the 124 zero bytes.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Option: choose an export, old style (no reply, straight to transmission).
pub const OPT_EXPORT_NAME: u32 = 1;
/// Option: client aborts the handshake.
pub const OPT_ABORT: u32 = 2;
/// Option: list exports.
pub const OPT_LIST: u32 = 3;
/// Option: STARTTLS (not supported).
pub const OPT_STARTTLS: u32 = 5;
/// Option: ask about an export.
pub const OPT_INFO: u32 = 6;
/// Option: ask about an export and enter transmission.
pub const OPT_GO: u32 = 7;
/// Option: structured replies (refused).
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// Option: list metadata contexts (refused).
pub const OPT_LIST_META_CONTEXT: u32 = 9;
/// Option: set metadata contexts (refused).
pub const OPT_SET_META_CONTEXT: u32 = 10;
/// Option: extended headers (refused).
pub const OPT_EXTENDED_HEADERS: u32 = 11;

/// Option reply: final acknowledgement.
pub const REP_ACK: u32 = 1;
/// Option reply: one export of a LIST.
pub const REP_SERVER: u32 = 2;
/// Option reply: one information item of INFO/GO.
pub const REP_INFO: u32 = 3;
/// Error replies have this bit set.
pub const REP_FLAG_ERROR: u32 = 1 << 31;
/// Option not supported.
pub const REP_ERR_UNSUP: u32 = REP_FLAG_ERROR | 1;
/// Refused by policy.
pub const REP_ERR_POLICY: u32 = REP_FLAG_ERROR | 2;
/// Syntactically invalid option.
pub const REP_ERR_INVALID: u32 = REP_FLAG_ERROR | 3;
/// Unknown export.
pub const REP_ERR_UNKNOWN: u32 = REP_FLAG_ERROR | 6;
/// Server shutting down.
pub const REP_ERR_SHUTDOWN: u32 = REP_FLAG_ERROR | 7;
/// Option payload too big.
pub const REP_ERR_TOO_BIG: u32 = REP_FLAG_ERROR | 9;

/// Info item: size and transmission flags (mandatory).
pub const INFO_EXPORT: u16 = 0;
/// Info item: canonical export name.
pub const INFO_NAME: u16 = 1;
/// Info item: human-readable description.
pub const INFO_DESCRIPTION: u16 = 2;
/// Info item: block size constraints.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flag: flags field is meaningful (always set).
pub const TFLAG_HAS_FLAGS: u16 = 1 << 0;
/// Transmission flag: export is read-only.
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
/// Transmission flag: FLUSH supported.
pub const TFLAG_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag: FUA supported.
pub const TFLAG_SEND_FUA: u16 = 1 << 3;
/// Transmission flag: rotational medium.
pub const TFLAG_ROTATIONAL: u16 = 1 << 4;
/// Transmission flag: TRIM supported.
pub const TFLAG_SEND_TRIM: u16 = 1 << 5;
/// Transmission flag: WRITE_ZEROES supported.
pub const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// Transmission flag: a FLUSH on one connection covers writes completed on all.
pub const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// Command: read.
pub const CMD_READ: u16 = 0;
/// Command: write (payload follows the header).
pub const CMD_WRITE: u16 = 1;
/// Command: disconnect (no reply).
pub const CMD_DISC: u16 = 2;
/// Command: flush.
pub const CMD_FLUSH: u16 = 3;
/// Command: trim (discard).
pub const CMD_TRIM: u16 = 4;
/// Command: cache (not advertised).
pub const CMD_CACHE: u16 = 5;
/// Command: write zeroes.
pub const CMD_WRITE_ZEROES: u16 = 6;
/// Command: block status (not advertised).
pub const CMD_BLOCK_STATUS: u16 = 7;

/// Command flag: force unit access.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
/// Command flag (WRITE_ZEROES): do not punch a hole.
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
/// Command flag: don't fragment (structured replies only).
pub const CMD_FLAG_DF: u16 = 1 << 2;
/// Command flag: fast zero (not advertised).
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

/// Largest payload of a READ or WRITE this server accepts (32 MiB, the spec's portable maximum).
pub const MAX_PAYLOAD: u32 = 32 * 1024 * 1024;
/// Preferred block size advertised with INFO_BLOCK_SIZE.
pub const PREFERRED_BLOCK: u32 = 4096;
/// Largest option payload buffered; longer options are skipped and answered with `REP_ERR_TOO_BIG`.
pub const MAX_OPTION_LEN: u32 = 16 * 1024;
/// Size of a transmission request header.
pub const REQUEST_HEADER_LEN: usize = 28;
