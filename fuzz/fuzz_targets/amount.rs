//! Decimal amounts: parsing never panics, and whatever parses formats back to the same value.
#![no_main]

use kopek_core::{Amount, Currency, format_minor, money::parse_decimal_minor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, &str, f64)| {
    let (pick, text, float) = input;
    let code = ["USD", "JPY", "BHD", "EUR"][usize::from(pick % 4)];
    let currency = Currency::parse(code).expect("a known currency");
    if let Ok(minor) = parse_decimal_minor(text, currency.minor_digits()) {
        assert!(minor >= 0, "{text:?} parsed to a negative amount");
        let formatted = format_minor(minor, currency);
        assert_eq!(parse_decimal_minor(&formatted, currency.minor_digits()), Ok(minor), "{text:?}");
    }
    if let Ok(amount) = Amount::parse_major(text, currency) {
        assert!(amount.minor() > 0, "an Amount is positive: {text:?}");
        let again = Amount::parse_major(&format_minor(amount.minor(), currency), currency);
        assert_eq!(again.map(Amount::minor).ok(), Some(amount.minor()));
    }
    if let Ok(amount) = Amount::from_f64_major(float, currency) {
        assert!(amount.minor() > 0 && float.is_finite());
    }
});
