//! The server's Hub driven by a list of arbitrary operations: never panics,
//! drains in bounded steps, keeps its invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| imchat_fuzz::hub(data));
