//! Fuzzes the inbound classifier: any bytes at all must classify without
//! a panic.
//!
//! libFuzzer's panic hook aborts on every panic, even one that is caught.
//! The classifier contains one known panic of its MIME parser (mail-parser
//! 0.11.9, "Invalid part ID" on parts after a closing boundary) and reads
//! such messages another way, so the hook set here lets panics raised
//! inside mail-parser unwind to that containment and aborts on any other.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        std::panic::set_hook(Box::new(|info| {
            let in_parser = info
                .location()
                .is_some_and(|l| l.file().contains("mail-parser"));
            if !in_parser {
                eprintln!("{info}");
                std::process::abort();
            }
        }));
    },
    |data: &[u8]| {
        let c = facteur::inbound::classify::classify(data);
        // the pieces every caller reads must be consistent
        for r in &c.recipients {
            assert!(r.recipient.contains('@'), "{r:?}");
            assert!(!r.reason.is_empty());
            if r.hard == Some(true) {
                assert_eq!(r.permanent, Some(true), "{r:?}");
            }
        }
    }
);
