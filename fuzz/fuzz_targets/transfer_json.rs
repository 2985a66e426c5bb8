//! The kopek.v1 JSON transfer (REST, batch items, broker messages), from arbitrary bytes
//! through JSON decoding and the intake's rules to the core's request: never a panic; whatever
//! is accepted is a valid request, and its amount is positive unless the caller sent that
//! very amount in minor units (docs/api.md: the ledger declines, and records, a zero or
//! negative `amount_minor`; a decimal `amount` that is not positive is refused).
#![no_main]

use kopek_core::{IdempotencyKey, Movement, Tenant};
use kopek_intake::json::NewTransferDto;
use kopek_intake::{Found, transfer_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dto) = serde_json::from_slice::<NewTransferDto>(data) else { return };
    let key = IdempotencyKey::parse("fuzz").expect("a valid key");
    let tenant = Tenant::parse("fuzz").expect("a valid tenant");
    let sent_minor = dto.amount_minor;
    let Ok(input) = dto.into_input(key) else { return };
    if let Ok(request) = transfer_request(&tenant, input, &Found::default()) {
        assert!(request.validate().is_ok(), "transfer_request returned an invalid request");
        if let Movement::Move { amount, .. } = request.movement {
            assert!(
                amount > 0 || sent_minor == Some(amount),
                "amount {amount} from {sent_minor:?}"
            );
        }
    }
});
