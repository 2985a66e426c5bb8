//! The kopek.v1 transfer as JSON (`POST /v1/transfers`, a batch item, a broker message), and
//! its reading as a [`TransferInput`]. With the `schema` feature the shapes describe
//! themselves for OpenAPI.

use crate::transfer::{Action, TransferInput};
use kopek_core::{IdempotencyKey, Rejection, TransferKind};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HoldDto {
    /// Seconds until the hold expires on its own; absent: never.
    pub timeout_seconds: Option<u32>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewTransferDto {
    /// Required in a batch; a single transfer takes the Idempotency-Key header instead.
    pub idempotency_key: Option<String>,
    /// `transfer` (default), `deposit`, `withdrawal`, `payment`, `purchase`, `fee`, `reversal`, `fx_leg`.
    pub kind: Option<String>,
    /// The payer; a deposit defaults to `world:<CUR>`.
    pub debit_account_id: Option<String>,
    /// The payee; a withdrawal defaults to `world:<CUR>`.
    pub credit_account_id: Option<String>,
    /// Decimal in major units, e.g. `"12.50"`; or give `amount_minor`.
    pub amount: Option<String>,
    pub amount_minor: Option<i64>,
    /// ISO 4217. Required, except with `quote_id` (the quote's source currency; if given it
    /// must be the quote's).
    pub currency: Option<String>,
    /// Reserve the amount instead of moving it (two-phase: capture or void later).
    pub hold: Option<HoldDto>,
    pub category: Option<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// RFC 3339; absent: the commit time.
    pub effective_at: Option<String>,
    /// Convert at this quote's terms: the payer (in the quote's source currency) pays what
    /// the quote sells, the payee (in its target currency) gets what it buys. `amount` may
    /// be left out; if given it must be the quote's.
    pub quote_id: Option<String>,
    /// Convert `amount` of `currency` into this currency at the rate in force now (a quote
    /// the transfer takes itself), when the server allows it (`--fx-implicit-quotes`).
    pub to_currency: Option<String>,
}

impl NewTransferDto {
    /// The request in the intake's words, under `key` (the header's, or the item's own).
    pub fn into_input(self, key: IdempotencyKey) -> Result<TransferInput, Rejection> {
        let kind = match crate::fields::given(self.kind.as_deref()) {
            None => TransferKind::Transfer,
            Some(text) => TransferKind::parse(text)
                .ok_or_else(|| Rejection::invalid(format!("unknown transfer kind '{text}'")))?,
        };
        let action = match self.hold {
            None => Action::Post,
            Some(hold) => Action::Hold { timeout_seconds: hold.timeout_seconds },
        };
        Ok(TransferInput {
            idempotency_key: key,
            kind,
            action,
            debit_account_id: self.debit_account_id,
            credit_account_id: self.credit_account_id,
            amount: self.amount,
            amount_minor: self.amount_minor,
            currency: self.currency,
            category: self.category,
            description: self.description,
            metadata: self.metadata,
            effective_at: self.effective_at,
            quote_id: self.quote_id,
            to_currency: self.to_currency,
        })
    }
}
