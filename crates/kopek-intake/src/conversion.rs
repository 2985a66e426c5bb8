//! Conversions between currencies as every surface reads them: a price check (`price`) and a
//! quote that locks the terms (`quote`). The surfaces decode their side (`SELL`/`BUY`, or
//! `sell`/`buy`) and pass the rest as sent.

use crate::{Intake, fields};
use kopek_auth::Principal;
use kopek_core::fx::{Side, Terms};
use kopek_core::{Currency, IdempotencyKey, NewQuote, QuoteResult, Rejection, Tenant};

/// A conversion to price: `amount` (or `amount_minor`) is in `from` when selling, in `to`
/// when buying.
#[derive(Clone, Debug)]
pub struct ConversionInput {
    pub from: String,
    pub to: String,
    /// `None`: sell.
    pub side: Option<Side>,
    pub amount: Option<String>,
    pub amount_minor: Option<i64>,
}

/// A conversion to lock as a quote.
#[derive(Clone, Debug)]
pub struct QuoteInput {
    pub idempotency_key: IdempotencyKey,
    pub conversion: ConversionInput,
    /// Lower than the server's spread, in basis points; `None`: the server's.
    pub spread_bp: Option<u32>,
    /// How long the quote lives; `None` (or 0 on gRPC): the server's default.
    pub ttl_seconds: Option<u32>,
}

/// What a conversion request names: its currencies, side and amount.
struct Asked {
    from: Currency,
    to: Currency,
    side: Side,
    amount: i64,
}

fn read(input: &ConversionInput) -> Result<Asked, Rejection> {
    let (from, to) = (Currency::parse(&input.from)?, Currency::parse(&input.to)?);
    let side = input.side.unwrap_or(Side::Sell);
    let currency = if side == Side::Sell { from } else { to };
    let amount = fields::required_money(input.amount_minor, input.amount.as_deref(), currency)?;
    Ok(Asked { from, to, side, amount })
}

impl Intake {
    /// The terms of a conversion at the rates in force now, with the server's spread.
    pub async fn price(
        &self,
        tenant: &Tenant,
        input: &ConversionInput,
    ) -> Result<Terms, Rejection> {
        let asked = read(input)?;
        self.fx.price(tenant, asked.from, asked.to, asked.side, asked.amount, None).await
    }

    /// Prices the conversion and locks its terms as a quote (the same key answers the same
    /// quote).
    pub async fn quote(
        &self,
        caller: &Principal,
        input: QuoteInput,
    ) -> Result<QuoteResult, Rejection> {
        let asked = read(&input.conversion)?;
        let config = self.fx.config();
        if input.spread_bp.is_some_and(|spread| spread > config.spread_bp) {
            return Err(Rejection::invalid(format!(
                "spread_bp may only lower the server's spread of {} basis points",
                config.spread_bp
            )));
        }
        let ttl_seconds =
            input.ttl_seconds.filter(|ttl| *ttl > 0).unwrap_or(config.quote_ttl_seconds);
        let terms = self
            .fx
            .price(&caller.tenant, asked.from, asked.to, asked.side, asked.amount, input.spread_bp)
            .await?;
        let quote = NewQuote { idempotency_key: input.idempotency_key, terms, ttl_seconds };
        self.create_quote(caller, quote).await
    }
}
