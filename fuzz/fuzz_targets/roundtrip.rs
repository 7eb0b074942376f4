//! Every frame that decodes re-encodes to the same bytes (both directions).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| imchat_fuzz::roundtrip(data));
