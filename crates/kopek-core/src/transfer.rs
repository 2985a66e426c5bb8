//! Transfers (requests to move money), their stored records, entries and fingerprints.

use crate::account::{Metadata, NewAccount, validate_metadata};
use crate::error::{ErrorCode, Rejection};
use crate::fx::{FxLeg, FxTerms};
use crate::ids::{AccountId, IdempotencyKey, Tenant, TransferId};
use crate::limits;
use crate::money::{Amount, Currency};
use crate::time::Timestamp;

/// What a transfer is for. It never changes the rules of a movement except that deposits
/// and withdrawals must go through `world:<CUR>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TransferKind {
    Transfer,
    Deposit,
    Withdrawal,
    Payment,
    Purchase,
    Fee,
    Reversal,
    FxLeg,
}

impl TransferKind {
    pub const ALL: [TransferKind; 8] = [
        TransferKind::Transfer,
        TransferKind::Deposit,
        TransferKind::Withdrawal,
        TransferKind::Payment,
        TransferKind::Purchase,
        TransferKind::Fee,
        TransferKind::Reversal,
        TransferKind::FxLeg,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TransferKind::Transfer => "transfer",
            TransferKind::Deposit => "deposit",
            TransferKind::Withdrawal => "withdrawal",
            TransferKind::Payment => "payment",
            TransferKind::Purchase => "purchase",
            TransferKind::Fee => "fee",
            TransferKind::Reversal => "reversal",
            TransferKind::FxLeg => "fx_leg",
        }
    }

    pub fn parse(text: &str) -> Option<TransferKind> {
        TransferKind::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// The money movement a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Movement {
    /// Move `amount` from the debit account to the credit account; with `hold`, only reserve
    /// it until captured, voided or expired.
    Move {
        debit_account: AccountId,
        credit_account: AccountId,
        /// The requested amount in minor units; not positive is a recorded `INVALID_AMOUNT`.
        amount: i64,
        currency: Currency,
        hold: Option<Hold>,
    },
    /// Move money between accounts of two currencies at the terms of `terms`: a linked set
    /// of legs through the liquidity accounts (see `apply`). With `hold`, every leg is held.
    Exchange {
        debit_account: AccountId,
        credit_account: AccountId,
        terms: FxTerms,
        hold: Option<Hold>,
    },
    /// Post a held transfer, fully (`amount: None`) or partially; the rest is released.
    Capture { pending_id: TransferId, amount: Option<Amount> },
    /// Release a held transfer without moving money.
    Void { pending_id: TransferId },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hold {
    /// Seconds until the hold expires; `None` holds until captured or voided.
    pub timeout_seconds: Option<u32>,
}

/// Free text that travels with a transfer but does not decide the movement.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Details {
    pub category: String,
    pub description: String,
    pub metadata: Metadata,
}

impl Details {
    pub fn validate(&self) -> Result<(), Rejection> {
        if self.category.len() > limits::CATEGORY_BYTES_MAX {
            return Err(Rejection::invalid(format!(
                "category must be at most {} bytes",
                limits::CATEGORY_BYTES_MAX
            )));
        }
        if self.description.len() > limits::DESCRIPTION_BYTES_MAX {
            return Err(Rejection::invalid(format!(
                "description must be at most {} bytes",
                limits::DESCRIPTION_BYTES_MAX
            )));
        }
        validate_metadata(&self.metadata)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferRequest {
    pub idempotency_key: IdempotencyKey,
    pub kind: TransferKind,
    pub movement: Movement,
    pub details: Details,
    /// When the movement happened for the client; `None` is the commit time.
    pub effective_at: Option<Timestamp>,
    /// Accounts of this movement to open if they do not exist yet, atomically with it (a
    /// customer's account opened by their first deposit). At most two; not in the fingerprint.
    pub open_if_missing: Vec<NewAccount>,
    /// Request content a surface counts as part of the request beyond the movement (the
    /// streaming contract's timestamp and category text): it must match too for a replay.
    /// Empty for most requests.
    pub fingerprint_extra: String,
}

impl TransferRequest {
    /// Bounds on the request's own fields; a failure here is bad input and is not recorded.
    pub fn validate(&self) -> Result<(), Rejection> {
        let hold = match &self.movement {
            Movement::Move { hold, .. } | Movement::Exchange { hold, .. } => *hold,
            Movement::Capture { .. } | Movement::Void { .. } => None,
        };
        if let Some(Hold { timeout_seconds: Some(seconds) }) = hold
            && (seconds == 0 || seconds > limits::HOLD_TIMEOUT_SECONDS_MAX)
        {
            return Err(Rejection::invalid(format!(
                "hold timeout must be 1 to {} seconds",
                limits::HOLD_TIMEOUT_SECONDS_MAX
            )));
        }
        if !self.open_if_missing.is_empty() {
            let Movement::Move { debit_account, credit_account, .. } = &self.movement else {
                return Err(Rejection::invalid("only a move can open accounts"));
            };
            if self.open_if_missing.len() > 2 {
                return Err(Rejection::invalid("a transfer opens at most its two accounts"));
            }
            for account in &self.open_if_missing {
                account.validate()?;
                let own = account.id == *debit_account || account.id == *credit_account;
                if !own || account.id.is_world() {
                    return Err(Rejection::invalid(format!(
                        "a transfer cannot open account {}",
                        account.id.name()
                    )));
                }
            }
        }
        self.details.validate()
    }

    /// The fingerprint of this request as a member of a linked request: a key used alone
    /// and then inside a linked request (or the other way round) is a reuse, not a replay.
    pub fn fingerprint_linked(&self) -> Fingerprint {
        let mut hasher = FingerprintHasher::default();
        self.write_canonical(&mut hasher);
        hasher.text("|linked");
        hasher.finish()
    }

    /// The hash of the canonical text of the fields that decide the money movement. Two
    /// requests with one idempotency key are the same request exactly when their fingerprints
    /// are equal. Free text, metadata and the effective time are left out, as Stripe and the
    /// contracts do. The text is streamed into the hash, never built.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut hasher = FingerprintHasher::default();
        self.write_canonical(&mut hasher);
        hasher.finish()
    }

    /// The canonical text, as fingerprints before they were hashed stored it (`v1|...`):
    /// its bytes may never change, or a retry of an older request would no longer match.
    fn write_canonical(&self, out: &mut FingerprintHasher) {
        use std::fmt::Write as _;
        let kind = self.kind.as_str();
        // Accounts by name: the key scope is the tenant already, and fingerprints recorded
        // before ids belonged to tenants name them so. Writing to a hash cannot fail.
        let _ = match &self.movement {
            Movement::Move { debit_account, credit_account, amount, currency, hold } => {
                let (debit_account, credit_account) = (debit_account.name(), credit_account.name());
                write!(
                    out,
                    "v1|{kind}|{}|{debit_account}|{credit_account}|{amount}|{currency}",
                    HoldText(*hold)
                )
            }
            Movement::Exchange { debit_account, credit_account, terms, hold } => {
                let (debit_account, credit_account) = (debit_account.name(), credit_account.name());
                let _ = write!(
                    out,
                    "v1|{kind}|{}|{debit_account}|{credit_account}|fx:",
                    HoldText(*hold)
                );
                // A market-priced request is the same request whatever the rate did since.
                match terms {
                    FxTerms::Quote(id) => write!(out, "quote:{id}"),
                    FxTerms::Market(terms) => write!(
                        out,
                        "market:{}:{}:{}:{}",
                        terms.side.as_str(),
                        terms.requested_amount(),
                        terms.from,
                        terms.to
                    ),
                }
            }
            Movement::Capture { pending_id, amount: Some(amount) } => {
                write!(out, "v1|{kind}|capture|{pending_id}|{}", amount.minor())
            }
            Movement::Capture { pending_id, amount: None } => {
                write!(out, "v1|{kind}|capture|{pending_id}|full")
            }
            Movement::Void { pending_id } => write!(out, "v1|{kind}|void|{pending_id}"),
        };
        if !self.fingerprint_extra.is_empty() {
            out.text("|x:");
            out.text(&self.fingerprint_extra);
        }
    }
}

/// A hold as the canonical text names it.
struct HoldText(Option<Hold>);

impl std::fmt::Display for HoldText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => f.write_str("post"),
            Some(Hold { timeout_seconds: None }) => f.write_str("hold"),
            Some(Hold { timeout_seconds: Some(seconds) }) => write!(f, "hold:{seconds}"),
        }
    }
}

/// See [`TransferRequest::fingerprint`]: 128 bits of hash of a request's canonical text, so
/// that taking one allocates nothing. Stored as `h1:` and 32 hex digits; a fingerprint stored
/// as its text before (`v1|...`) reads as the hash of that text, so a retry of an older
/// request still matches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(u128);

/// The length of `Fingerprint::stored`.
pub const FINGERPRINT_STORED_LEN: usize = 35;

impl Fingerprint {
    /// The fingerprint of a canonical text.
    pub fn of_text(text: &str) -> Fingerprint {
        let mut hasher = FingerprintHasher::default();
        hasher.text(text);
        hasher.finish()
    }

    /// A fingerprint as stored: `h1:` and 32 hex digits, or the canonical text it hashes.
    pub fn from_stored(stored: &str) -> Fingerprint {
        if let Some(hex) = stored.strip_prefix("h1:")
            && hex.len() == 32
            && let Ok(value) = u128::from_str_radix(hex, 16)
        {
            return Fingerprint(value);
        }
        Fingerprint::of_text(stored)
    }

    /// The stored form, written into `buffer`.
    pub fn stored<'b>(&self, buffer: &'b mut [u8; FINGERPRINT_STORED_LEN]) -> &'b str {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        buffer[..3].copy_from_slice(b"h1:");
        for (index, byte) in buffer[3..].iter_mut().enumerate() {
            let nibble = (self.0 >> (124 - 4 * index)) & 0xf;
            *byte = HEX[nibble as usize];
        }
        std::str::from_utf8(buffer).unwrap_or_default()
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.stored(&mut [0; FINGERPRINT_STORED_LEN]))
    }
}

/// Two SipHash-2-4 hashes with fixed keys over the canonical text as it is written: a stable
/// function (the core takes no dependencies, and `DefaultHasher` may change between Rust
/// releases). `SipHasher` is deprecated only in favour of `DefaultHasher`, which is not
/// stable; its `write` depends only on the bytes, not on how they are split.
#[allow(deprecated)]
pub(crate) struct FingerprintHasher(std::hash::SipHasher, std::hash::SipHasher);

#[allow(deprecated)]
impl Default for FingerprintHasher {
    fn default() -> Self {
        FingerprintHasher(
            std::hash::SipHasher::new_with_keys(0x6b6f_7065_6b2d_6670, 0x7631_2d68_6173_6831),
            std::hash::SipHasher::new_with_keys(0x6c65_6467_6572_2d66, 0x7072_696e_742d_3132),
        )
    }
}

impl FingerprintHasher {
    pub(crate) fn text(&mut self, text: &str) {
        use std::hash::Hasher as _;
        self.0.write(text.as_bytes());
        self.1.write(text.as_bytes());
    }

    pub(crate) fn finish(&self) -> Fingerprint {
        use std::hash::Hasher as _;
        Fingerprint(u128::from(self.0.finish()) << 64 | u128::from(self.1.finish()))
    }
}

impl std::fmt::Write for FingerprintHasher {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.text(text);
        Ok(())
    }
}

/// What a stored transfer record did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Post,
    Hold,
    Capture,
    Void,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Post => "post",
            Action::Hold => "hold",
            Action::Capture => "capture",
            Action::Void => "void",
        }
    }

    pub fn parse(text: &str) -> Option<Action> {
        [Action::Post, Action::Hold, Action::Capture, Action::Void]
            .into_iter()
            .find(|action| action.as_str() == text)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TransferStatus {
    /// Money moved (a post, or a capture).
    Posted,
    /// A hold that still reserves funds.
    Pending,
    /// A hold that a capture resolved.
    Captured,
    /// A hold that a void resolved (also the status of the void record itself).
    Voided,
    /// A hold whose timeout passed before it was resolved.
    Expired,
    /// Rejected; kept so that a retry answers the same verdict.
    Declined,
}

impl TransferStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferStatus::Posted => "posted",
            TransferStatus::Pending => "pending",
            TransferStatus::Captured => "captured",
            TransferStatus::Voided => "voided",
            TransferStatus::Expired => "expired",
            TransferStatus::Declined => "declined",
        }
    }

    pub const ALL: [TransferStatus; 6] = [
        TransferStatus::Posted,
        TransferStatus::Pending,
        TransferStatus::Captured,
        TransferStatus::Voided,
        TransferStatus::Expired,
        TransferStatus::Declined,
    ];

    pub fn parse(text: &str) -> Option<TransferStatus> {
        TransferStatus::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

/// A transfer as the ledger keeps it, declined ones included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub id: TransferId,
    pub tenant: Tenant,
    pub idempotency_key: IdempotencyKey,
    pub fingerprint: Fingerprint,
    pub kind: TransferKind,
    pub action: Action,
    /// `None` only for a declined capture or void whose hold was not found.
    pub debit_account: Option<AccountId>,
    pub credit_account: Option<AccountId>,
    /// Minor units: moved (post, capture), reserved (hold), released (void) or asked (declined).
    pub amount: i64,
    pub currency: Option<Currency>,
    /// The hold a capture or void resolves.
    pub pending_id: Option<TransferId>,
    pub status: TransferStatus,
    pub error: Option<Rejection>,
    /// For holds: when the hold lapses.
    pub expires_at: Option<Timestamp>,
    /// For holds: the amount a capture posted (0 until captured).
    pub captured_amount: i64,
    pub details: Details,
    pub effective_at: Timestamp,
    pub committed_at: Timestamp,
    /// Last change of `status`.
    pub updated_at: Timestamp,
    /// For a leg of a cross-currency transfer: its conversion.
    pub fx: Option<Box<FxLeg>>,
}

impl Transfer {
    /// The transfer as its request was first answered. Only holds change after that (they are
    /// captured, voided or expire); a replay answers the original outcome, as Stripe does.
    pub fn as_first_recorded(&self) -> Transfer {
        let mut original = self.clone();
        if self.action == Action::Hold && self.status != TransferStatus::Declined {
            original.status = TransferStatus::Pending;
            original.captured_amount = 0;
            original.updated_at = self.committed_at;
        }
        original
    }

    pub fn error_code(&self) -> Option<ErrorCode> {
        self.error.as_ref().map(|rejection| rejection.code)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Debit,
    Credit,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Debit => "debit",
            Direction::Credit => "credit",
        }
    }

    pub fn parse(text: &str) -> Option<Direction> {
        [Direction::Debit, Direction::Credit]
            .into_iter()
            .find(|direction| direction.as_str() == text)
    }
}

/// One line of an account's statement: a posted debit or credit with the balance after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub transfer_id: TransferId,
    pub account_id: AccountId,
    pub direction: Direction,
    pub amount: i64,
    pub currency: Currency,
    /// The account's posted balance right after this entry, in commit order.
    pub balance_after: i64,
    pub effective_at: Timestamp,
    pub committed_at: Timestamp,
}

impl Entry {
    /// The entry's effect on the posted balance: credits add, debits subtract.
    pub fn signed_amount(&self) -> i64 {
        match self.direction {
            Direction::Credit => self.amount,
            Direction::Debit => -self.amount,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{QuoteId, Ulid};

    fn request(movement: Movement) -> TransferRequest {
        TransferRequest {
            idempotency_key: IdempotencyKey::parse("k1").expect("key"),
            kind: TransferKind::Payment,
            movement,
            details: Details::default(),
            effective_at: None,
            open_if_missing: Vec::new(),
            fingerprint_extra: String::new(),
        }
    }

    fn account(name: &str) -> AccountId {
        AccountId::parse(name).expect("id")
    }

    /// Fingerprints were stored as these texts before they were hashed: a retry of such a
    /// request must still match, so the hash is of exactly these bytes. Pinned verbatim.
    #[test]
    fn a_fingerprint_is_the_hash_of_the_text_stored_before() {
        let usd = Currency::parse("USD").expect("USD");
        let moving = |hold| Movement::Move {
            debit_account: account("alice"),
            credit_account: account("bob"),
            amount: 1250,
            currency: usd,
            hold,
        };
        let pending = TransferId(Ulid::from_u128(42));
        let quote = QuoteId(Ulid::from_u128(7));
        let mut extra = request(moving(None));
        extra.fingerprint_extra = "ts=1|cat=food".to_owned();
        let cases = [
            (request(moving(None)).fingerprint(), "v1|payment|post|alice|bob|1250|USD".to_owned()),
            (
                request(moving(Some(Hold { timeout_seconds: None }))).fingerprint(),
                "v1|payment|hold|alice|bob|1250|USD".to_owned(),
            ),
            (
                request(moving(Some(Hold { timeout_seconds: Some(30) }))).fingerprint(),
                "v1|payment|hold:30|alice|bob|1250|USD".to_owned(),
            ),
            (
                request(moving(None)).fingerprint_linked(),
                "v1|payment|post|alice|bob|1250|USD|linked".to_owned(),
            ),
            (extra.fingerprint(), "v1|payment|post|alice|bob|1250|USD|x:ts=1|cat=food".to_owned()),
            (
                extra.fingerprint_linked(),
                "v1|payment|post|alice|bob|1250|USD|x:ts=1|cat=food|linked".to_owned(),
            ),
            (
                request(Movement::Capture { pending_id: pending, amount: None }).fingerprint(),
                format!("v1|payment|capture|{pending}|full"),
            ),
            (
                request(Movement::Capture {
                    pending_id: pending,
                    amount: Some(Amount::new(300).expect("amount")),
                })
                .fingerprint(),
                format!("v1|payment|capture|{pending}|300"),
            ),
            (
                request(Movement::Void { pending_id: pending }).fingerprint(),
                format!("v1|payment|void|{pending}"),
            ),
            (
                request(Movement::Exchange {
                    debit_account: account("alice"),
                    credit_account: account("bob"),
                    terms: FxTerms::Quote(quote),
                    hold: None,
                })
                .fingerprint(),
                format!("v1|payment|post|alice|bob|fx:quote:{quote}"),
            ),
        ];
        for (fingerprint, stored) in &cases {
            assert_eq!(*fingerprint, Fingerprint::from_stored(stored), "{stored}");
        }
        // Different requests, different fingerprints.
        let distinct: std::collections::BTreeSet<Fingerprint> =
            cases.iter().map(|(fingerprint, _)| *fingerprint).collect();
        assert_eq!(distinct.len(), cases.len());
    }

    /// Fingerprints stored as `h1:` since they are hashes must match their retries forever:
    /// the hash's keys, the order of its halves and the hex form are pinned here.
    #[test]
    fn a_fingerprint_hash_never_changes() {
        assert_eq!(
            Fingerprint::of_text("v1|payment|post|alice|bob|1250|USD").to_string(),
            "h1:0fcb5f176a814fa78924b9ab014391ae"
        );
    }

    /// The stored form reads back as the same fingerprint, and is the canonical hash form.
    #[test]
    fn a_fingerprint_round_trips_through_its_stored_form() {
        for text in ["", "v1|transfer|post|a|b|1|USD", "h1:not hex"] {
            let fingerprint = Fingerprint::of_text(text);
            let stored = fingerprint.to_string();
            assert_eq!(stored.len(), FINGERPRINT_STORED_LEN);
            assert!(stored.starts_with("h1:"), "{stored}");
            assert_eq!(Fingerprint::from_stored(&stored), fingerprint, "{text}");
        }
        // A stored form with a digit changed is another fingerprint, not an error.
        let stored = Fingerprint::of_text("x").to_string();
        let changed = format!("{}{}", &stored[..34], if stored.ends_with('0') { '1' } else { '0' });
        assert_ne!(Fingerprint::from_stored(&changed), Fingerprint::of_text("x"));
    }
}
