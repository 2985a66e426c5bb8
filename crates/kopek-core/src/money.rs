//! Money: ISO 4217 currencies with their minor digits, positive `Amount`s in minor units, and
//! the exact conversions between decimal major units and minor units.

use crate::error::{ErrorCode, Rejection};
use crate::limits;
use std::fmt;

/// An ISO 4217 currency the ledger knows. Only codes in [`CURRENCIES`] can be constructed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency {
    code: [u8; 3],
    minor_digits: u8,
    /// False for a well-formed code outside ISO 4217, which no account can hold.
    iso: bool,
}

/// Active ISO 4217 codes and their minor digits, sorted by code for binary search.
pub const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("ANG", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BOV", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHE", 2),
    ("CHF", 2),
    ("CHW", 2),
    ("CLF", 4),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("COU", 2),
    ("CRC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MXV", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("USN", 2),
    ("UYI", 0),
    ("UYU", 2),
    ("UYW", 4),
    ("UZS", 2),
    ("VED", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWG", 2),
];

impl Currency {
    /// Parses an ISO 4217 code. Lowercase is accepted and normalised (`usd` is USD).
    pub fn parse(text: &str) -> Result<Currency, Rejection> {
        let upper = text.to_ascii_uppercase();
        match CURRENCIES.binary_search_by(|(code, _)| (*code).cmp(upper.as_str())) {
            Ok(index) => {
                let (code, minor_digits) = CURRENCIES[index];
                let bytes = code.as_bytes();
                Ok(Currency { code: [bytes[0], bytes[1], bytes[2]], minor_digits, iso: true })
            }
            Err(_) => Err(Rejection::new(
                ErrorCode::UnknownCurrency,
                format!("'{}' is not an ISO 4217 currency code", shorten(text)),
            )),
        }
    }

    /// Any three letters: an ISO 4217 code as `parse` gives it, or otherwise a currency no
    /// account can hold, so a transfer in it is declined with `CURRENCY_MISMATCH` and recorded
    /// (the payment contract's order of checks asks for that).
    pub fn parse_code(text: &str) -> Result<Currency, Rejection> {
        if let Ok(currency) = Currency::parse(text) {
            return Ok(currency);
        }
        let upper = text.to_ascii_uppercase();
        match upper.as_bytes() {
            [a, b, c] if upper.bytes().all(|byte| byte.is_ascii_uppercase()) => {
                Ok(Currency { code: [*a, *b, *c], minor_digits: 2, iso: false })
            }
            _ => Err(Rejection::new(
                ErrorCode::UnknownCurrency,
                format!("'{}' is not a three-letter currency code", shorten(text)),
            )),
        }
    }

    pub fn is_iso(self) -> bool {
        self.iso
    }

    pub fn code(&self) -> &str {
        // The bytes are ASCII letters: from the static table or checked by `parse_code`.
        std::str::from_utf8(&self.code).unwrap_or("???")
    }

    pub fn minor_digits(self) -> u32 {
        u32::from(self.minor_digits)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A strictly positive quantity of money in minor units of some currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(i64);

impl Amount {
    pub fn new(minor: i64) -> Result<Amount, Rejection> {
        if minor > limits::AMOUNT_MINOR_MAX {
            return Err(Rejection::new(
                ErrorCode::InvalidAmount,
                format!(
                    "amount must be at most {} minor units, got {minor}",
                    limits::AMOUNT_MINOR_MAX
                ),
            ));
        }
        if minor > 0 {
            Ok(Amount(minor))
        } else {
            Err(Rejection::new(
                ErrorCode::InvalidAmount,
                format!("amount must be positive, got {minor} minor units"),
            ))
        }
    }

    pub fn minor(self) -> i64 {
        self.0
    }

    /// Parses a decimal string in major units (`"19.99"`) exactly. More fractional digits than
    /// the currency has are rejected unless they are zeros.
    pub fn parse_major(text: &str, currency: Currency) -> Result<Amount, Rejection> {
        let minor = parse_decimal_minor(text, currency.minor_digits()).map_err(|reason| {
            Rejection::new(
                ErrorCode::InvalidAmount,
                format!("'{}' is not a valid {currency} amount: {reason}", shorten(text)),
            )
        })?;
        Amount::new(minor)
    }

    /// Converts a float in major units, rounding away only binary representation error: the
    /// float's shortest decimal form (19.99f32 is "19.99") is parsed exactly.
    ///
    /// Past 2^17 a float's step is larger than a cent: there the float may stand for several
    /// amounts in minor units, and unless it is exactly a whole number of them it is refused.
    pub fn from_f32_major(value: f32, currency: Currency) -> Result<Amount, Rejection> {
        let amount =
            Amount::parse_major(&float_text(value.is_finite(), value.to_string()), currency)?;
        let scale = 10f64.powi(currency.minor_digits() as i32);
        let step = f64::from(f32::from_bits(value.to_bits() + 1)) - f64::from(value);
        if step * scale > 1.0 && (f64::from(value) * scale).fract() != 0.0 {
            return Err(Rejection::new(
                ErrorCode::InvalidAmount,
                format!("{value} {currency} is too large for a 32-bit float to carry exactly"),
            ));
        }
        Ok(amount)
    }

    pub fn from_f64_major(value: f64, currency: Currency) -> Result<Amount, Rejection> {
        Amount::parse_major(&float_text(value.is_finite(), value.to_string()), currency)
    }
}

fn float_text(finite: bool, text: String) -> String {
    if finite { text } else { format!("non-finite {text}") }
}

/// Parses an unsigned decimal into minor units with `digits` fractional digits.
pub fn parse_decimal_minor(text: &str, digits: u32) -> Result<i64, &'static str> {
    // No trimming: an amount is its digits, and " 1.00" or "1.00\n" is not one.
    if text.starts_with('-') {
        return Err("amount must be positive");
    }
    let text = text.strip_prefix('+').unwrap_or(text);
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (text, ""),
    };
    let is_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !is_digits(whole) || !is_digits(fraction) {
        return Err("expected a decimal number such as 12.50");
    }
    let digits = digits as usize;
    let significant = fraction.trim_end_matches('0');
    if significant.len() > digits {
        return Err("more fractional digits than the currency has");
    }
    let mut minor: i64 = 0;
    let overflow = "amount is too large";
    for byte in whole.bytes().chain(significant.bytes()) {
        minor = minor
            .checked_mul(10)
            .and_then(|value| value.checked_add(i64::from(byte - b'0')))
            .ok_or(overflow)?;
    }
    for _ in significant.len()..digits {
        minor = minor.checked_mul(10).ok_or(overflow)?;
    }
    Ok(minor)
}

/// Formats signed minor units as a decimal in major units with exactly the currency's digits.
pub fn format_minor(minor: i64, currency: Currency) -> String {
    let digits = currency.minor_digits();
    let sign = if minor < 0 { "-" } else { "" };
    let magnitude = minor.unsigned_abs();
    if digits == 0 {
        return format!("{sign}{magnitude}");
    }
    let scale = 10u64.pow(digits);
    format!("{sign}{}.{:0width$}", magnitude / scale, magnitude % scale, width = digits as usize)
}

fn shorten(text: &str) -> &str {
    match text.char_indices().nth(40) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usd() -> Currency {
        Currency::parse("USD").expect("USD is known")
    }

    #[test]
    fn currency_table_is_sorted_and_digits_are_right() {
        assert!(CURRENCIES.windows(2).all(|pair| pair[0].0 < pair[1].0));
        let digits = |code| Currency::parse(code).map(Currency::minor_digits);
        assert_eq!(digits("usd"), Ok(2));
        assert_eq!(digits("JPY"), Ok(0));
        assert_eq!(digits("BHD"), Ok(3));
        assert_eq!(Currency::parse("XYZ").map_err(|r| r.code), Err(ErrorCode::UnknownCurrency));
    }

    /// Issue 19, finding 8: one rule for currency codes on every surface. Case does not
    /// matter (`usd` is USD), nothing else is forgiven, and the ISO 4217 codes without minor
    /// units (no currency, testing, metals, fund units) are not currencies an account holds.
    #[test]
    fn currency_codes_are_three_letters_of_a_currency_with_minor_units() {
        assert_eq!(Currency::parse("usd").map(|currency| currency.to_string()), Ok("USD".into()));
        for refused in [" USD", "USD ", "USD\n", "US", "USDX", "XXX", "XTS", "XAU", "XDR"] {
            let code = Currency::parse(refused).map_err(|r| r.code);
            assert_eq!(code, Err(ErrorCode::UnknownCurrency), "{refused:?}");
        }
    }

    #[test]
    fn parses_decimals_exactly() {
        let minor = |text| Amount::parse_major(text, usd()).map(Amount::minor);
        assert_eq!(minor("19.99"), Ok(1_999));
        assert_eq!(minor("100"), Ok(10_000));
        assert_eq!(minor("100.0"), Ok(10_000));
        assert_eq!(minor("0.010"), Ok(1));
        assert_eq!(minor(".5"), Ok(50));
        // Issue 19, finding 8: whitespace is not forgiven, " 1.00" and "1.00\n" are refused.
        for bad in [
            "0",
            "0.00",
            "-1",
            "1.001",
            "abc",
            "",
            ".",
            "1e5",
            "92233720368547758.08",
            " 1.00",
            "1.00 ",
            "1.00\n",
            "\t1",
            "1 000",
        ] {
            let code = Amount::parse_major(bad, usd()).map_err(|r| r.code);
            assert_eq!(code, Err(ErrorCode::InvalidAmount), "{bad:?}");
        }
    }

    #[test]
    fn floats_lose_only_representation_error() {
        let minor = |value: f32| Amount::from_f32_major(value, usd()).map(Amount::minor);
        assert_eq!(minor(19.99), Ok(1_999));
        assert_eq!(minor(0.1), Ok(10));
        assert_eq!(minor(50.0), Ok(5_000));
        // 150000.07 is stored as 150000.0625: no whole number of cents.
        assert_eq!(minor(200_000.0), Ok(20_000_000));
        assert_eq!(minor(150_000.25), Ok(15_000_025));
        for bad in [19.995, 0.0, -5.0, f32::NAN, f32::INFINITY, 1e30, 150_000.07, 131_072.01] {
            assert_eq!(minor(bad).map_err(|r| r.code), Err(ErrorCode::InvalidAmount), "{bad}");
        }
        let jpy = Currency::parse("JPY").expect("JPY");
        assert_eq!(
            Amount::from_f32_major(1.5, jpy).map_err(|r| r.code),
            Err(ErrorCode::InvalidAmount)
        );
    }

    #[test]
    fn formats_with_the_currency_digits() {
        assert_eq!(format_minor(1_200, usd()), "12.00");
        assert_eq!(format_minor(-5, usd()), "-0.05");
        assert_eq!(format_minor(7, Currency::parse("JPY").expect("JPY")), "7");
        assert_eq!(format_minor(1_234, Currency::parse("BHD").expect("BHD")), "1.234");
        assert_eq!(format_minor(i64::MIN, usd()), "-92233720368547758.08");
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(minor in 1..=limits::AMOUNT_MINOR_MAX, index in 0..CURRENCIES.len()) {
            let currency = Currency::parse(CURRENCIES[index].0).expect("table entry");
            let text = format_minor(minor, currency);
            prop_assert_eq!(Amount::parse_major(&text, currency).map(Amount::minor), Ok(minor));
        }

        #[test]
        fn cents_survive_f32_when_exactly_representable_as_shortest(cents in 1i64..1_000_000) {
            let text = format_minor(cents, usd());
            let value: f32 = text.parse().expect("decimal parses as f32");
            prop_assert_eq!(Amount::from_f32_major(value, usd()).map(Amount::minor), Ok(cents));
        }
    }
}
