//! Named maximums for every quantity the ledger accepts; relations are checked at compile time.

/// Commands the writer takes from the queue into one database transaction.
pub const COMMANDS_PER_BATCH_MAX: usize = 4_096;
/// Transfers in one request (one command); a linked request commits all or none of them.
pub const TRANSFERS_PER_REQUEST_MAX: usize = 1_024;
/// Accounts created by one request.
pub const ACCOUNTS_PER_REQUEST_MAX: usize = 1_024;
/// Transfers a whole writer batch may hold, whatever the commands.
pub const TRANSFERS_PER_BATCH_MAX: usize = 65_536;
pub const ACCOUNT_ID_BYTES_MAX: usize = 128;
/// A client's idempotency key, in characters (the contracts count characters).
pub const IDEMPOTENCY_KEY_CHARS_MAX: usize = 255;
pub const TENANT_BYTES_MAX: usize = 64;
pub const OWNER_BYTES_MAX: usize = 128;
pub const CATEGORY_BYTES_MAX: usize = 128;
pub const DESCRIPTION_BYTES_MAX: usize = 1_024;
pub const METADATA_ENTRIES_MAX: usize = 32;
pub const METADATA_KEY_BYTES_MAX: usize = 64;
pub const METADATA_VALUE_BYTES_MAX: usize = 512;
/// Longest hold: 30 days. A longer reservation is a business process, not a hold.
pub const HOLD_TIMEOUT_SECONDS_MAX: u32 = 30 * 24 * 3_600;
/// How far after its commit time a transfer's `effective_at` may be: a day, for clients'
/// clocks and time zones. The earliest is the Unix epoch (times are microseconds since it).
pub const EFFECTIVE_AT_AHEAD_SECONDS_MAX: i64 = 24 * 3_600;
/// Largest page a list query returns.
pub const PAGE_SIZE_MAX: usize = 1_000;
/// Largest amount of one transfer in minor units (10^15: ten trillion dollars in cents). Far
/// below `i64::MAX`, so no single request can push a balance (say `world:<CUR>`) to the edge of
/// the 64-bit range and block every later transfer; it would take 9,000 such transfers.
pub const AMOUNT_MINOR_MAX: i64 = 1_000_000_000_000_000;

const _: () = assert!(TRANSFERS_PER_REQUEST_MAX <= TRANSFERS_PER_BATCH_MAX);
const _: () = assert!(ACCOUNTS_PER_REQUEST_MAX <= TRANSFERS_PER_BATCH_MAX);
