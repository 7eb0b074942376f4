//! Arbitrary bytes into Decoder::<ServerMessage>: never panics, never loops.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| imchat_fuzz::decode_server(data));
