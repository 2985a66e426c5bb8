//! The parse rules of single fields, the same on every surface. A field that is absent and a
//! field that is empty mean the same (proto3 cannot tell them apart, so JSON does not either).

use kopek_core::{AccountId, Amount, Currency, ErrorCode, Overdraft, Rejection, Timestamp, limits};

/// Items a page holds when the caller does not say.
pub const PAGE_SIZE_DEFAULT: usize = 100;

/// `Some(text)` unless it is absent or empty.
pub fn given(text: Option<&str>) -> Option<&str> {
    text.filter(|text| !text.is_empty())
}

/// An account id a request names. An id that no account can have (outside the alphabet
/// `AccountId::parse` allows) is refused with `INVALID_ARGUMENT`; a well-formed id that names
/// no account is the ledger's to decline with `ACCOUNT_NOT_FOUND`.
pub fn account_id(text: &str) -> Result<AccountId, Rejection> {
    AccountId::parse(text)
}

/// A currency a request names (required where this is called).
pub fn currency(text: Option<&str>) -> Result<Currency, Rejection> {
    match given(text) {
        None => Err(Rejection::invalid("currency is required")),
        Some(text) => Currency::parse(text),
    }
}

/// An amount in `currency` from its two forms: minor units, the decimal `amount` in major
/// units, or both if they agree. `None` when neither is given. A malformed decimal is refused
/// here; a zero or negative `amount_minor` goes on to the ledger, which declines it (and
/// records the decline) with `INVALID_AMOUNT`.
pub fn money(
    minor: Option<i64>,
    text: Option<&str>,
    currency: Currency,
) -> Result<Option<i64>, Rejection> {
    let text = given(text);
    let from_text =
        text.map(|text| Amount::parse_major(text, currency).map(Amount::minor)).transpose()?;
    match (minor, from_text) {
        (Some(minor), Some(parsed)) if minor != parsed => Err(Rejection::new(
            ErrorCode::InvalidAmount,
            format!("amount_minor {minor} and amount '{}' disagree", text.unwrap_or_default()),
        )),
        (minor, parsed) => Ok(minor.or(parsed)),
    }
}

/// `money` for a request that must state an amount.
pub fn required_money(
    minor: Option<i64>,
    text: Option<&str>,
    currency: Currency,
) -> Result<i64, Rejection> {
    money(minor, text, currency)?.ok_or_else(|| {
        Rejection::new(ErrorCode::InvalidAmount, "amount is required: give amount or amount_minor")
    })
}

/// An overdraft limit from its decimal or minor-unit form (both must agree); zero is a valid
/// limit, though not a valid amount. `None` when neither is given.
pub fn overdraft(
    text: Option<&str>,
    minor: Option<i64>,
    currency: Currency,
) -> Result<Option<Overdraft>, Rejection> {
    let from_text = given(text)
        .map(|text| {
            kopek_core::money::parse_decimal_minor(text, currency.minor_digits()).map_err(
                |reason| {
                    Rejection::new(
                        ErrorCode::InvalidAmount,
                        format!("overdraft limit '{text}': {reason}"),
                    )
                },
            )
        })
        .transpose()?;
    match (minor, from_text) {
        (Some(minor), Some(text)) if minor != text => Err(Rejection::invalid(format!(
            "overdraft_limit_minor {minor} and overdraft_limit disagree"
        ))),
        (minor, text) => minor.or(text).map(Overdraft::limited).transpose(),
    }
}

/// An RFC 3339 time; `field` names it in the refusal.
pub fn timestamp(text: Option<&str>, field: &str) -> Result<Option<Timestamp>, Rejection> {
    given(text)
        .map(|text| {
            Timestamp::parse_rfc3339(text)
                .map_err(|error| Rejection::invalid(format!("{field}: {error}")))
        })
        .transpose()
}

/// The size of a page: the default when not given (or 0), at most `PAGE_SIZE_MAX`.
pub fn page_size(requested: Option<usize>) -> usize {
    match requested {
        None | Some(0) => PAGE_SIZE_DEFAULT,
        Some(size) => size.min(limits::PAGE_SIZE_MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_takes_either_form_or_both_when_they_agree() {
        let usd = Currency::parse("USD").expect("USD");
        assert_eq!(money(None, None, usd), Ok(None));
        assert_eq!(money(Some(1250), None, usd), Ok(Some(1250)));
        assert_eq!(money(None, Some("12.50"), usd), Ok(Some(1250)));
        assert_eq!(money(None, Some(""), usd), Ok(None), "empty is absent");
        assert_eq!(money(Some(1250), Some("12.50"), usd), Ok(Some(1250)));
        let disagree = money(Some(1), Some("12.50"), usd).expect_err("disagree");
        assert_eq!(disagree.code, ErrorCode::InvalidAmount);
        let malformed = money(None, Some("12.505"), usd).expect_err("three digits");
        assert_eq!(malformed.code, ErrorCode::InvalidAmount);
        assert_eq!(money(Some(-5), None, usd), Ok(Some(-5)), "the ledger declines it");
    }

    #[test]
    fn page_sizes_default_and_cap() {
        assert_eq!(page_size(None), PAGE_SIZE_DEFAULT);
        assert_eq!(page_size(Some(0)), PAGE_SIZE_DEFAULT);
        assert_eq!(page_size(Some(7)), 7);
        assert_eq!(page_size(Some(1_000_000)), limits::PAGE_SIZE_MAX);
    }

    #[test]
    fn ids_no_account_can_have_are_invalid_not_missing() {
        assert_eq!(account_id("alice").map(|id| id.name().to_owned()), Ok("alice".to_owned()));
        for bad in ["", "a b", "naïve", "x/y", &"a".repeat(limits::ACCOUNT_ID_BYTES_MAX + 1)] {
            assert_eq!(account_id(bad).expect_err(bad).code, ErrorCode::InvalidArgument, "{bad}");
        }
    }
}
