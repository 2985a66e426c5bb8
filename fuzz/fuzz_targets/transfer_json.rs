//! The REST transfer request, from arbitrary bytes through JSON decoding to the core's
//! request: never a panic; whatever is accepted is a valid request with a positive amount.
#![no_main]

use kopek_api_http::dto::NewTransferDto;
use kopek_api_http::rest::transfer_request;
use kopek_core::{IdempotencyKey, Movement, Tenant};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dto) = serde_json::from_slice::<NewTransferDto>(data) else { return };
    let key = IdempotencyKey::parse("fuzz").expect("a valid key");
    let tenant = Tenant::parse("fuzz").expect("a valid tenant");
    if let Ok(request) = transfer_request(dto, key, &tenant) {
        assert!(request.validate().is_ok(), "transfer_request returned an invalid request");
        if let Movement::Move { amount, .. } = request.movement {
            assert!(amount > 0);
        }
    }
});
