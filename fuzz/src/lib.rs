// The checks the fuzz targets run. `imchat-core/tests/fuzz_corpus.rs`
// includes this very file with `#[path]`, so plain `cargo test` replays the
// committed corpus through exactly the code the fuzzer runs (the test cannot
// depend on this crate, which is outside the workspace). Keep it free of
// inner attributes and of dependencies other than `imchat_core` and `std`.

use std::fmt::Debug;

use imchat_core::{
    ClientMessage, Decode, DecodeError, Decoder, Encode, ServerMessage, DEFAULT_MAX_FRAME,
    HEADER_LEN,
};

/// What a decoder yields for a stream: its messages, then at most one error.
pub type Outcome<M> = Vec<Result<M, DecodeError>>;

/// The smallest frame: a length header and a type byte.
const MIN_FRAME: usize = HEADER_LEN + 1;

/// Takes messages until the decoder needs more bytes or fails, appending them
/// to `out`. Returns true when it failed. Panics if the decoder breaks its
/// contract: more messages than the buffered bytes can hold, bytes consumed
/// by "need more", or an error that does not stick.
pub fn drain<M: Decode + PartialEq + Debug>(dec: &mut Decoder<M>, out: &mut Outcome<M>) -> bool {
    // Every message consumes at least MIN_FRAME bytes, so this many calls
    // must end in `Ok(None)` or an error.
    let max_steps = dec.buffered() / MIN_FRAME + 1;
    for _ in 0..max_steps {
        let before = dec.buffered();
        match dec.next_message() {
            Ok(Some(m)) => {
                assert!(
                    before - dec.buffered() >= MIN_FRAME,
                    "a message from too few bytes"
                );
                out.push(Ok(m));
            }
            Ok(None) => {
                assert_eq!(dec.buffered(), before, "\"need more\" consumed bytes");
                return false;
            }
            Err(e) => {
                assert!(dec.is_failed());
                assert_eq!(
                    dec.next_message(),
                    Err(e.clone()),
                    "the error did not stick"
                );
                out.push(Err(e));
                return true;
            }
        }
    }
    panic!("the decoder yielded more messages than {MIN_FRAME}-byte frames fit in its buffer");
}

/// Feeds `data` whole into a decoder with the default frame limit and drains it.
pub fn decode_all<M: Decode + PartialEq + Debug>(data: &[u8]) -> Outcome<M> {
    let mut dec = Decoder::<M>::new(DEFAULT_MAX_FRAME);
    dec.feed(data);
    let mut out = Vec::new();
    drain(&mut dec, &mut out);
    out
}

/// Target `decode_client`: arbitrary bytes into the server's decoder.
pub fn decode_client(data: &[u8]) {
    decode_all::<ClientMessage>(data);
}

/// Target `decode_server`: arbitrary bytes into the client's decoder.
pub fn decode_server(data: &[u8]) {
    decode_all::<ServerMessage>(data);
}

/// Every frame of `data` that decodes re-encodes to exactly its own bytes
/// (the encoding is canonical), and the re-encoded frame decodes to the same
/// message.
pub fn check_canonical<M: Decode + Encode + PartialEq + Debug>(data: &[u8]) {
    let mut dec = Decoder::<M>::new(DEFAULT_MAX_FRAME);
    dec.feed(data);
    let mut pos = 0;
    for _ in 0..data.len() / MIN_FRAME + 1 {
        let before = dec.buffered();
        let Ok(Some(m)) = dec.next_message() else {
            return;
        };
        let used = before - dec.buffered();
        let frame = &data[pos..pos + used];
        let again = m.to_frame();
        assert_eq!(again, frame, "re-encoding {m:?} changed its bytes");
        assert_eq!(M::decode_frame(&again[HEADER_LEN..]).as_ref(), Ok(&m));
        pos += used;
    }
    panic!("the decoder yielded more messages than the input can hold");
}

/// Target `roundtrip`: canonical re-encoding, both directions.
pub fn roundtrip(data: &[u8]) {
    check_canonical::<ClientMessage>(data);
    check_canonical::<ServerMessage>(data);
}

/// Splits a `split` input into piece sizes and the stream. Layout: one byte
/// `k` (taken modulo 16), then `k` bytes each giving the size of a piece
/// (used in turn, cyclically; 0 feeds an empty slice), then the stream. With
/// no non-zero size the stream is fed whole.
pub fn split_input(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((&k, rest)) = data.split_first() else {
        return (&[], &[]);
    };
    rest.split_at(usize::from(k % 16).min(rest.len()))
}

/// Feeding `stream` in pieces of the given sizes yields the same messages and
/// error as feeding it whole.
pub fn check_split<M: Decode + PartialEq + Debug>(sizes: &[u8], stream: &[u8]) {
    let whole = decode_all::<M>(stream);
    let mut dec = Decoder::<M>::new(DEFAULT_MAX_FRAME);
    let mut pieces = Vec::new();
    let mut offset = 0;
    let mut turn = 0;
    let chunked = sizes.iter().any(|&s| s != 0);
    while offset < stream.len() {
        let size = if chunked {
            usize::from(sizes[turn % sizes.len()])
        } else {
            stream.len()
        };
        turn += 1;
        let end = (offset + size).min(stream.len());
        dec.feed(&stream[offset..end]);
        offset = end;
        if drain(&mut dec, &mut pieces) {
            break;
        }
    }
    assert_eq!(whole, pieces, "split at {sizes:?} decoded differently");
}

/// Target `split`: whole and split feeding agree, both directions.
pub fn split(data: &[u8]) {
    let (sizes, stream) = split_input(data);
    check_split::<ClientMessage>(sizes, stream);
    check_split::<ServerMessage>(sizes, stream);
}
