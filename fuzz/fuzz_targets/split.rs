//! The same stream fed whole or in fuzzer-chosen pieces decodes the same (both directions).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| imchat_fuzz::split(data));
