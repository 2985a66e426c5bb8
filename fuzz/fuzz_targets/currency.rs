//! Currency codes: parsing never panics, accepts only three ASCII letters, and round-trips.
#![no_main]

use kopek_core::Currency;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(currency) = Currency::parse(text) {
        let code = currency.code();
        assert_eq!(code.len(), 3, "{text:?}");
        assert!(code.bytes().all(|byte| byte.is_ascii_uppercase()), "{text:?} -> {code}");
        assert_eq!(Currency::parse(code), Ok(currency));
        assert!(currency.minor_digits() <= 4);
    }
});
