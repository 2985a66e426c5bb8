//! Currency conversion arithmetic: exact rates, rates derived from others, and conversion of
//! minor units with half-even rounding. No floating point anywhere.
//!
//! A [`Rate`] from A to B says how many units of B one unit of A buys, as an exact fraction
//! (a decimal as given, `0.9234`, is `9234/10000`). Inverses and products of rates stay
//! exact. Converting `amount` minor units of A gives
//! `amount × rate × 10^digits(B) / 10^digits(A)` minor units of B, rounded half-even (to the
//! nearest; a tie goes to the even neighbour) in B's minor units. Every step is checked: a
//! result past the 64-bit range is refused, never wrapped.

use crate::error::{ErrorCode, Rejection};
use crate::ids::{AccountId, IdempotencyKey, QuoteId, Tenant, TransferId};
use crate::money::Currency;
use crate::time::Timestamp;
use std::fmt;

/// Fractional digits a rate may be given with.
pub const RATE_DIGITS_MAX: u32 = 18;
/// Significant digits a rate may be given with.
const RATE_SIGNIFICANT_MAX: usize = 30;

/// An exchange rate as an exact, reduced, positive fraction.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    numerator: u128,
    denominator: u128,
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn too_large(what: &str) -> Rejection {
    Rejection::new(ErrorCode::InvalidAmount, format!("{what} is too large to convert exactly"))
}

/// `numerator / denominator` rounded half-even; `denominator` is not zero.
fn divide_half_even(numerator: u128, denominator: u128) -> u128 {
    let (quotient, remainder) = (numerator / denominator, numerator % denominator);
    // remainder against denominator - remainder: no doubling, so no overflow.
    let rest = denominator - remainder;
    if remainder > rest || (remainder == rest && quotient % 2 == 1) {
        quotient + 1
    } else {
        quotient
    }
}

impl Rate {
    /// A rate from an exact fraction; `None` when either part is zero.
    pub fn from_fraction(numerator: u128, denominator: u128) -> Option<Rate> {
        if numerator == 0 || denominator == 0 {
            return None;
        }
        let divisor = gcd(numerator, denominator);
        Some(Rate { numerator: numerator / divisor, denominator: denominator / divisor })
    }

    /// Parses a positive decimal (`0.9234`, `150`, `0.000006123`): at most 18 fractional
    /// digits and 30 significant ones, no sign, no exponent.
    pub fn parse(text: &str) -> Result<Rate, Rejection> {
        let invalid = |why: &str| Rejection::invalid(format!("rate {:?} {why}", shorten(text)));
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        if whole.is_empty() || (text.contains('.') && fraction.is_empty()) {
            return Err(invalid("is not a decimal number like 0.9234"));
        }
        if !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(invalid("is not a decimal number like 0.9234"));
        }
        if fraction.len() > RATE_DIGITS_MAX as usize {
            return Err(invalid("has more than 18 digits after the point"));
        }
        let digits = format!("{whole}{fraction}");
        let significant = digits.trim_start_matches('0');
        if significant.len() > RATE_SIGNIFICANT_MAX {
            return Err(invalid("has more than 30 significant digits"));
        }
        let numerator: u128 = if significant.is_empty() {
            0
        } else {
            significant.parse().map_err(|_| invalid("is out of range"))?
        };
        let denominator = 10u128.pow(fraction.len() as u32);
        Rate::from_fraction(numerator, denominator).ok_or_else(|| invalid("must be above zero"))
    }

    pub fn numerator(self) -> u128 {
        self.numerator
    }

    pub fn denominator(self) -> u128 {
        self.denominator
    }

    /// The rate the other way round: B to A from A to B.
    pub fn inverse(self) -> Rate {
        Rate { numerator: self.denominator, denominator: self.numerator }
    }

    /// The rate A to C from A to B (`self`) and B to C (`next`); `None` when the exact
    /// fraction does not fit in 128 bits.
    pub fn then(self, next: Rate) -> Option<Rate> {
        // Cross-reduce first so that the products stay as small as they can.
        let left = gcd(self.numerator, next.denominator);
        let right = gcd(next.numerator, self.denominator);
        let numerator = (self.numerator / left).checked_mul(next.numerator / right)?;
        let denominator = (self.denominator / right).checked_mul(next.denominator / left)?;
        Rate::from_fraction(numerator, denominator)
    }

    /// The rate a customer gets after a spread of `basis_points` (1 bp = 0.01%) taken from
    /// what they receive; `None` when the spread is 10,000 bp or more, or does not fit.
    pub fn less_spread(self, basis_points: u32) -> Option<Rate> {
        if basis_points >= 10_000 {
            return None;
        }
        self.then(Rate::from_fraction(u128::from(10_000 - basis_points), 10_000)?)
    }

    /// The rate as a decimal with at most `digits` fractional digits (18 at most), rounded
    /// half-even, without trailing zeros: exact when the fraction terminates within them.
    pub fn to_decimal(self, digits: u32) -> String {
        let mut whole = self.numerator / self.denominator;
        let mut remainder = self.numerator % self.denominator;
        let mut fraction: Vec<u8> = Vec::new();
        for _ in 0..digits.min(RATE_DIGITS_MAX) {
            // Long division, one digit at a time; the remainder stays below the denominator.
            let Some(shifted) = remainder.checked_mul(10) else { break };
            fraction.push(u8::try_from(shifted / self.denominator).unwrap_or(9));
            remainder = shifted % self.denominator;
        }
        let rest = self.denominator - remainder;
        let last_odd = fraction.last().map_or(whole % 2 == 1, |digit| digit % 2 == 1);
        if remainder > rest || (remainder != 0 && remainder == rest && last_odd) {
            // Round up: carry through trailing nines into the whole part.
            let mut carry = true;
            for digit in fraction.iter_mut().rev() {
                if *digit == 9 {
                    *digit = 0;
                } else {
                    *digit += 1;
                    carry = false;
                    break;
                }
            }
            if carry {
                whole = whole.saturating_add(1);
            }
        }
        while fraction.last() == Some(&0) {
            fraction.pop();
        }
        if fraction.is_empty() {
            return whole.to_string();
        }
        let digits: String = fraction.iter().map(|digit| char::from(b'0' + digit)).collect();
        format!("{whole}.{digits}")
    }

    /// Converts `amount_minor` minor units of `from` into minor units of `to` at this rate,
    /// rounded half-even. The sign is kept (a refund converts like a payment).
    pub fn convert(
        self,
        amount_minor: i64,
        from: Currency,
        to: Currency,
    ) -> Result<i64, Rejection> {
        let scale_to = 10u128.pow(to.minor_digits());
        let scale_from = 10u128.pow(from.minor_digits());
        let magnitude = u128::from(amount_minor.unsigned_abs());
        let numerator = magnitude
            .checked_mul(self.numerator)
            .and_then(|product| product.checked_mul(scale_to))
            .ok_or_else(|| too_large("the amount"))?;
        let denominator =
            self.denominator.checked_mul(scale_from).ok_or_else(|| too_large("the rate"))?;
        let converted = i64::try_from(divide_half_even(numerator, denominator))
            .map_err(|_| too_large("the converted amount"))?;
        Ok(if amount_minor < 0 { -converted } else { converted })
    }

    /// What `target_minor` minor units of `to` cost in minor units of `from` at this rate
    /// (a buy): `target / rate`, rounded half-even in `from`'s minor units.
    pub fn cost(self, target_minor: i64, from: Currency, to: Currency) -> Result<i64, Rejection> {
        self.inverse().convert(target_minor, to, from)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_decimal(RATE_DIGITS_MAX))
    }
}

impl fmt::Debug for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.numerator, self.denominator)
    }
}

/// One leg of a derived rate: the stored pair used, and whether it was used inverted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateStep {
    pub from: Currency,
    pub to: Currency,
    pub inverted: bool,
}

impl fmt::Display for RateStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.inverted {
            write!(f, "1/{}{}", self.to, self.from)
        } else {
            write!(f, "{}{}", self.from, self.to)
        }
    }
}

/// A rate from one currency to another and how it was found: one step for a stored rate or
/// its inverse, two through the base currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DerivedRate {
    pub rate: Rate,
    pub path: Vec<RateStep>,
}

impl DerivedRate {
    /// The path as text, e.g. `EURUSD` (stored), `1/USDEUR` (inverse),
    /// `EURUSD * USDJPY` (through USD).
    pub fn path_text(&self) -> String {
        self.path.iter().map(ToString::to_string).collect::<Vec<_>>().join(" * ")
    }
}

/// Finds the rate from `from` to `to` among stored rates (`lookup(a, b)` gives the stored
/// rate from a to b, if any): the stored pair, else the inverse of the opposite pair, else
/// through `base` (each leg direct or inverted). `None` when there is no way.
pub fn derive(
    from: Currency,
    to: Currency,
    base: Currency,
    lookup: impl Fn(Currency, Currency) -> Option<Rate>,
) -> Option<DerivedRate> {
    if from == to {
        let one = Rate { numerator: 1, denominator: 1 };
        return Some(DerivedRate { rate: one, path: Vec::new() });
    }
    let leg = |a: Currency, b: Currency| -> Option<(Rate, RateStep)> {
        if let Some(rate) = lookup(a, b) {
            return Some((rate, RateStep { from: a, to: b, inverted: false }));
        }
        lookup(b, a).map(|rate| (rate.inverse(), RateStep { from: a, to: b, inverted: true }))
    };
    if let Some((rate, step)) = leg(from, to) {
        return Some(DerivedRate { rate, path: vec![step] });
    }
    if from == base || to == base {
        return None;
    }
    let (first, first_step) = leg(from, base)?;
    let (second, second_step) = leg(base, to)?;
    Some(DerivedRate { rate: first.then(second)?, path: vec![first_step, second_step] })
}

/// The text a rate is stored as: its exact fraction, `numerator/denominator`.
impl Rate {
    pub fn to_fraction_text(self) -> String {
        format!("{}/{}", self.numerator, self.denominator)
    }

    /// Parses `to_fraction_text`'s form (or a plain decimal).
    pub fn parse_stored(text: &str) -> Option<Rate> {
        match text.split_once('/') {
            Some((numerator, denominator)) => {
                Rate::from_fraction(numerator.parse().ok()?, denominator.parse().ok()?)
            }
            None => Rate::parse(text).ok(),
        }
    }
}

/// Which amount of a conversion the caller fixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The amount is what the payer gives, in the source currency.
    Sell,
    /// The amount is what the payee receives, in the target currency.
    Buy,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Sell => "sell",
            Side::Buy => "buy",
        }
    }

    pub fn parse(text: &str) -> Option<Side> {
        [Side::Sell, Side::Buy].into_iter().find(|side| side.as_str() == text)
    }
}

/// Spread a quote may carry, in basis points (10% at most).
pub const SPREAD_BASIS_POINTS_MAX: u32 = 1_000;
/// Longest a quote may live: one day.
pub const QUOTE_TTL_SECONDS_MAX: u32 = 86_400;
/// The source of a rate whose setter names none.
pub const DEFAULT_RATE_SOURCE: &str = "manual";
/// Bytes of a rate's source name.
pub const RATE_SOURCE_BYTES_MAX: usize = 64;

/// The priced terms of one conversion: both amounts, the rates and how the rate was found.
///
/// `mid_amount` is `sell_amount` at the mid rate; the payee gets `buy_amount` and the rest,
/// `spread_amount = mid_amount - buy_amount`, is the house's revenue, in the target currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terms {
    pub from: Currency,
    pub to: Currency,
    pub side: Side,
    pub sell_amount: i64,
    pub buy_amount: i64,
    pub mid_amount: i64,
    pub spread_amount: i64,
    /// The rate from the stored rates (`path`), before the spread.
    pub mid_rate: Rate,
    /// The rate the customer gets: `mid_rate` less the spread.
    pub rate: Rate,
    pub spread_bp: u32,
    pub path: String,
}

impl Terms {
    /// The amount the caller fixed: sold for a sell, bought for a buy.
    pub fn requested_amount(&self) -> i64 {
        match self.side {
            Side::Sell => self.sell_amount,
            Side::Buy => self.buy_amount,
        }
    }
}

/// Prices a conversion of `amount` minor units (of `from` for a sell, of `to` for a buy) at
/// `mid` less `spread_bp`. Amounts round half-even in the minor units of the currency they
/// are in; a conversion that rounds to nothing, or past the largest amount, is refused.
pub fn price(
    from: Currency,
    to: Currency,
    side: Side,
    amount: i64,
    mid: &DerivedRate,
    spread_bp: u32,
) -> Result<Terms, Rejection> {
    if from == to {
        return Err(Rejection::invalid(format!(
            "a conversion needs two currencies, not {from} twice"
        )));
    }
    if spread_bp > SPREAD_BASIS_POINTS_MAX {
        return Err(Rejection::invalid(format!(
            "a spread is at most {SPREAD_BASIS_POINTS_MAX} basis points"
        )));
    }
    let amount = crate::money::Amount::new(amount)?.minor();
    let rate = mid.rate.less_spread(spread_bp).ok_or_else(|| too_large("the rate"))?;
    let (sell_amount, buy_amount) = match side {
        Side::Sell => (amount, rate.convert(amount, from, to)?),
        Side::Buy => (rate.cost(amount, from, to)?, amount),
    };
    // The pool pays out the sold amount at the mid rate; with no spread, exactly what the
    // payee gets (rounding a buy's cost may land a minor unit either side of it).
    let mid_amount = if spread_bp == 0 {
        buy_amount
    } else {
        mid.rate.convert(sell_amount, from, to)?.max(buy_amount)
    };
    for (value, currency) in [(sell_amount, from), (buy_amount, to), (mid_amount, to)] {
        if value < 1 {
            return Err(Rejection::new(
                ErrorCode::InvalidAmount,
                format!(
                    "{} {from} converts to less than one minor unit of {currency}",
                    crate::money::format_minor(amount, if side == Side::Sell { from } else { to })
                ),
            ));
        }
        if value > crate::limits::AMOUNT_MINOR_MAX {
            return Err(too_large("the converted amount"));
        }
    }
    Ok(Terms {
        from,
        to,
        side,
        sell_amount,
        buy_amount,
        mid_amount,
        spread_amount: mid_amount - buy_amount,
        mid_rate: mid.rate,
        rate,
        spread_bp,
        path: mid.path_text(),
    })
}

/// A stored rate: one `base` buys `rate` of `quote` from `valid_from` on, until the pair's
/// next rate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FxRate {
    pub tenant: Tenant,
    pub base: Currency,
    pub quote: Currency,
    pub rate: Rate,
    /// Who gave the rate: free text such as `ecb` or `manual`.
    pub source: String,
    pub valid_from: Timestamp,
    pub set_at: Timestamp,
}

/// A request to set a pair's rate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateSet {
    pub base: Currency,
    pub quote: Currency,
    pub rate: Rate,
    pub source: String,
    /// `None`: from the commit time.
    pub valid_from: Option<Timestamp>,
}

impl RateSet {
    pub fn validate(&self) -> Result<(), Rejection> {
        for currency in [self.base, self.quote] {
            if !currency.is_iso() {
                return Err(Rejection::new(
                    ErrorCode::UnknownCurrency,
                    format!("'{currency}' is not an ISO 4217 currency code"),
                ));
            }
        }
        if self.base == self.quote {
            return Err(Rejection::invalid(format!(
                "a rate needs two currencies, not {} twice",
                self.base
            )));
        }
        if self.source.is_empty()
            || self.source.len() > RATE_SOURCE_BYTES_MAX
            || self.source.chars().any(char::is_control)
        {
            return Err(Rejection::invalid(format!(
                "a rate's source must be 1 to {RATE_SOURCE_BYTES_MAX} bytes of printable text"
            )));
        }
        Ok(())
    }
}

/// A quote: terms locked until `expires_at`, used by at most one transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quote {
    pub id: QuoteId,
    pub tenant: Tenant,
    /// The key the quote was asked with; `None` for the quote a transfer priced itself.
    pub idempotency_key: Option<IdempotencyKey>,
    pub terms: Terms,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// The transfer that used the quote.
    pub used_by: Option<TransferId>,
    pub used_at: Option<Timestamp>,
}

/// A request to lock priced terms for `ttl_seconds`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewQuote {
    pub idempotency_key: IdempotencyKey,
    pub terms: Terms,
    pub ttl_seconds: u32,
}

impl NewQuote {
    pub fn validate(&self) -> Result<(), Rejection> {
        if self.ttl_seconds == 0 || self.ttl_seconds > QUOTE_TTL_SECONDS_MAX {
            return Err(Rejection::invalid(format!(
                "a quote lives 1 to {QUOTE_TTL_SECONDS_MAX} seconds"
            )));
        }
        Ok(())
    }
}

/// What a leg of a cross-currency transfer does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LegRole {
    /// Payer -> `fx:<FROM>`, in the source currency: the transfer the caller sees.
    Debit,
    /// `fx:<TO>` -> payee, in the target currency.
    Credit,
    /// `fx:<TO>` -> `fx-revenue:<TO>`: the spread.
    Spread,
}

impl LegRole {
    pub fn as_str(self) -> &'static str {
        match self {
            LegRole::Debit => "debit",
            LegRole::Credit => "credit",
            LegRole::Spread => "spread",
        }
    }

    pub fn parse(text: &str) -> Option<LegRole> {
        [LegRole::Debit, LegRole::Credit, LegRole::Spread]
            .into_iter()
            .find(|role| role.as_str() == text)
    }
}

/// The conversion a transfer record belongs to, kept on every leg (and on the captures and
/// voids of held legs): the quote, its terms and the two customers' accounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FxLeg {
    pub quote_id: QuoteId,
    pub role: LegRole,
    pub payer: AccountId,
    pub payee: AccountId,
    pub terms: Terms,
}

/// How a cross-currency transfer is priced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FxTerms {
    /// A quote taken before: its terms, if it is still live and unused.
    Quote(QuoteId),
    /// Priced at the current rate by the surface (an implicit quote), recorded as a quote the
    /// transfer uses at once.
    Market(Box<Terms>),
}

/// The liquidity account of a currency: `fx:<CUR>` (`fx:<tenant>:<CUR>` in other tenants).
pub fn liquidity_account(tenant: &Tenant, currency: Currency) -> AccountId {
    AccountId::parse(&format!("fx:{}{currency}", tenant.qualifier()))
        .expect("a valid account id")
        .in_tenant(tenant)
}

/// The account a conversion's spread is booked to: `fx-revenue:<CUR>`.
pub fn revenue_account(tenant: &Tenant, currency: Currency) -> AccountId {
    AccountId::parse(&format!("fx-revenue:{}{currency}", tenant.qualifier()))
        .expect("a valid account id")
        .in_tenant(tenant)
}

fn shorten(text: &str) -> String {
    text.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn currency(code: &str) -> Currency {
        Currency::parse(code).expect("a currency")
    }

    fn rate(text: &str) -> Rate {
        Rate::parse(text).expect("a rate")
    }

    #[test]
    fn rates_parse_exactly_and_refuse_what_is_not_a_positive_decimal() {
        assert_eq!(format!("{:?}", rate("0.9234")), "4617/5000");
        assert_eq!(format!("{:?}", rate("150")), "150/1");
        assert_eq!(format!("{:?}", rate("0150.50")), "301/2");
        assert_eq!(rate("0.000000000000000001").to_string(), "0.000000000000000001");
        assert_eq!(
            rate("123456789012345678901234567890").to_string(),
            "123456789012345678901234567890"
        );
        for bad in [
            "",
            ".",
            "1.",
            ".5",
            "-1",
            "+1",
            "0",
            "0.000",
            "1e3",
            "1,5",
            "NaN",
            " 1",
            "1 ",
            "0.0000000000000000001",
            "1234567890123456789012345678901",
        ] {
            assert!(Rate::parse(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(Rate::parse("0").map_err(|r| r.code), Err(ErrorCode::InvalidArgument));
    }

    #[test]
    fn conversion_rounds_half_even_in_the_target_minor_units() {
        let (usd, eur, jpy, bhd) =
            (currency("USD"), currency("EUR"), currency("JPY"), currency("BHD"));
        // (amount minor, from, to, rate, expected minor)
        let table: &[(i64, Currency, Currency, &str, i64)] = &[
            (10_000, usd, eur, "0.9234", 9_234), // 100.00 USD -> 92.34 EUR exactly
            (1, usd, eur, "0.9234", 1),          // 0.01 -> 0.009234 -> 0.01
            (1, usd, eur, "0.5", 0),             // 0.005 -> tie -> 0.00 (even)
            (3, usd, eur, "0.5", 2),             // 0.015 -> tie -> 0.02 (even)
            (5, usd, eur, "0.5", 2),             // 0.025 -> tie -> 0.02 (even)
            (7, usd, eur, "0.5", 4),             // 0.035 -> tie -> 0.04 (even)
            (1, usd, eur, "0.51", 1),            // 0.0051 -> just above half -> 0.01
            (1, usd, eur, "0.49", 0),            // 0.0049 -> 0.00
            (-5, usd, eur, "0.5", -2),           // negative ties like positive ones
            (-7, usd, eur, "0.5", -4),
            (100, usd, jpy, "151.237", 151), // 1.00 USD -> 151.237 JPY -> 151 JPY
            (150, usd, jpy, "151.237", 227), // 1.50 USD -> 226.8555 -> 227
            (1, usd, jpy, "150", 2),         // 0.01 USD -> 1.5 JPY -> tie -> 2 (even)
            (1, usd, jpy, "250", 2),         // 0.01 USD -> 2.5 JPY -> tie -> 2 (even)
            (151, jpy, usd, "0.006612", 100), // 151 JPY -> 0.998412 USD -> 1.00
            (1, jpy, bhd, "0.0025", 2),      // 1 JPY -> 0.0025 BHD -> 2.5 fils -> 2
            (3, jpy, bhd, "0.0025", 8),      // 7.5 fils -> tie -> 8 (even)
            (1_000, usd, bhd, "0.376", 3_760), // 10.00 USD -> 3.760 BHD
            (1_234, bhd, usd, "2.6596", 328), // 1.234 BHD -> 3.2819... USD -> 3.28
            (1, bhd, jpy, "397.1", 0),       // 0.001 BHD -> 0.3971 JPY -> 0
            (2, bhd, jpy, "397.1", 1),       // 0.7942 JPY -> 1
            (i64::MAX, usd, usd, "1", i64::MAX), // the largest amount at par
            (i64::MAX / 2, usd, eur, "2", i64::MAX - 1),
        ];
        for &(amount, from, to, text, expected) in table {
            let converted = rate(text).convert(amount, from, to);
            assert_eq!(converted, Ok(expected), "{amount} {from} -> {to} at {text}");
        }
        // Past the 64-bit range: refused, never wrapped.
        let refused = rate("2").convert(i64::MAX, usd, eur).map_err(|r| r.code);
        assert_eq!(refused, Err(ErrorCode::InvalidAmount));
        let refused = rate("1000").convert(i64::MAX, bhd, jpy);
        assert!(refused.is_ok(), "BHD to JPY shrinks the minor units: {refused:?}");
        let huge = rate("123456789012345678901234567890").convert(i64::MAX, usd, bhd);
        assert_eq!(huge.map_err(|r| r.code), Err(ErrorCode::InvalidAmount));
    }

    #[test]
    fn a_buy_costs_the_target_divided_by_the_rate() {
        let (usd, eur, jpy) = (currency("USD"), currency("EUR"), currency("JPY"));
        // 92.34 EUR cost 100.00 USD at 0.9234.
        assert_eq!(rate("0.9234").cost(9_234, usd, eur), Ok(10_000));
        // 1,000 JPY at 151.237 cost 6.612... USD -> 6.61.
        assert_eq!(rate("151.237").cost(1_000, usd, jpy), Ok(661));
    }

    #[test]
    fn inverse_and_chained_rates_stay_exact() {
        let eur_usd = rate("1.0830");
        assert_eq!(eur_usd.inverse().inverse(), eur_usd);
        assert_eq!(eur_usd.then(eur_usd.inverse()), Rate::from_fraction(1, 1));
        let usd_jpy = rate("151.237");
        let eur_jpy = eur_usd.then(usd_jpy).expect("fits");
        assert_eq!(eur_jpy.to_string(), "163.789671");
        assert_eq!(eur_usd.inverse().to_decimal(6), "0.923361");
        assert_eq!(rate("3").inverse().to_decimal(4), "0.3333");
        assert_eq!(rate("1.5").inverse().to_decimal(4), "0.6667");
        assert_eq!(rate("0.99996").to_decimal(4), "1", "rounding carries into the whole part");
        assert_eq!(rate("0.00025").to_decimal(4), "0.0002", "a tie goes to the even digit");
        assert_eq!(rate("0.00035").to_decimal(4), "0.0004");
        assert_eq!(rate("2.5").to_decimal(0), "2");
        let max = rate("123456789012345678901234567890");
        assert_eq!(max.then(max), None, "does not fit in 128 bits");
        assert_eq!(rate("1").less_spread(50).map(|r| r.to_string()), Some("0.995".into()));
        assert_eq!(rate("1").less_spread(10_000), None);
    }

    proptest::proptest! {
        #[test]
        fn conversion_is_monotonic_and_off_by_at_most_half_a_minor_unit(
            a in 0i64..1_000_000_000_000,
            b in 0i64..1_000_000_000_000,
            numerator in 1u128..10_000_000_000,
            digits in 0u32..=12,
        ) {
            let (usd, jpy) = (currency("USD"), currency("JPY"));
            let rate = Rate::from_fraction(numerator, 10u128.pow(digits)).expect("positive");
            let (Ok(x), Ok(y), Ok(sum)) =
                (rate.convert(a, usd, jpy), rate.convert(b, usd, jpy), rate.convert(a + b, usd, jpy))
            else {
                return Ok(()); // past 64 bits: refused, which the table test covers
            };
            proptest::prop_assert!(a > b || x <= y, "monotonic");
            proptest::prop_assert!((x + y - sum).abs() <= 1, "{x} + {y} vs {sum}");
            // The exact value lies within half a minor unit: |x * den * 100 - a * num| <= den * 100 / 2.
            let exact = i128::try_from(u128::from(a.unsigned_abs()) * numerator).expect("fits");
            let scaled = i128::from(x) * i128::try_from(10u128.pow(digits) * 100).expect("fits");
            let half = i128::try_from(10u128.pow(digits) * 50).expect("fits");
            proptest::prop_assert!((scaled - exact).abs() <= half, "{x} for {a} at {numerator}/10^{digits}");
        }
    }

    #[test]
    fn derived_rates_record_their_path() {
        let (usd, eur, jpy, gbp) =
            (currency("USD"), currency("EUR"), currency("JPY"), currency("GBP"));
        let stored = [(eur, usd, rate("1.08")), (usd, jpy, rate("150"))];
        let lookup = |a: Currency, b: Currency| {
            stored.iter().find(|(from, to, _)| *from == a && *to == b).map(|(_, _, r)| *r)
        };
        let direct = derive(eur, usd, usd, lookup).expect("stored");
        assert_eq!((direct.rate.to_string(), direct.path_text()), ("1.08".into(), "EURUSD".into()));
        let inverse = derive(usd, eur, usd, lookup).expect("inverse");
        assert_eq!(inverse.path_text(), "1/EURUSD");
        assert_eq!(inverse.rate.to_decimal(6), "0.925926");
        let cross = derive(eur, jpy, usd, lookup).expect("through USD");
        assert_eq!(
            (cross.rate.to_string(), cross.path_text()),
            ("162".into(), "EURUSD * USDJPY".into())
        );
        let back = derive(jpy, eur, usd, lookup).expect("through USD, both inverted");
        assert_eq!(back.path_text(), "1/USDJPY * 1/EURUSD");
        assert_eq!(back.rate, cross.rate.inverse());
        assert_eq!(derive(eur, gbp, usd, lookup), None, "no GBP rate at all");
        assert_eq!(derive(eur, eur, usd, lookup).map(|d| d.path.len()), Some(0));
    }
}
