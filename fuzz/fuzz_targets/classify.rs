//! Fuzzes the inbound classifier: any bytes at all must classify without
//! a panic (the classifier catches its own panics, but libFuzzer's panic
//! hook aborts first, so a panic anywhere inside is still reported).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let c = facteur::inbound::classify::classify(data);
    // the pieces every caller reads must be consistent
    if let Some(first) = c.first() {
        assert!(!first.recipient.is_empty());
        assert!(!first.reason.is_empty());
    }
});
