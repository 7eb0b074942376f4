//! Arbitrary bytes into Decoder::<ClientMessage>: never panics, never loops.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| imchat_fuzz::decode_client(data));
