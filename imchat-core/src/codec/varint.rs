//! Variable-length numbers: unsigned LEB128 in its shortest form, and
//! zigzag coding for wrapping differences. The wire format writes the ids
//! and times of a `Presence` batch this way, and a server may use the same
//! for what it stores (imchat-server's history file does).

/// Why [`read`] found no number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    /// The bytes end inside the number.
    CutShort,
    /// Longer than 64 bits, or not in its shortest form.
    Malformed,
}

/// Appends `v`: 7 bits a byte, least significant first, the top bit set on
/// every byte but the last; 1 to 10 bytes, shortest form.
pub fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a number [`put`] wrote from the front of `buf`, and moves `buf`
/// past it.
///
/// # Errors
///
/// [`VarintError`] when `buf` ends inside it, or it is longer than 64
/// bits or not in its shortest form (every `u64` has exactly one form).
pub fn read(buf: &mut &[u8]) -> Result<u64, VarintError> {
    let mut v = 0u64;
    for i in 0..10 {
        let Some((&b, rest)) = buf.split_first() else {
            return Err(VarintError::CutShort);
        };
        *buf = rest;
        // The tenth byte holds the top bit only.
        if i == 9 && b > 1 {
            return Err(VarintError::Malformed);
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            // A last byte of 0 after others is a longer form of a shorter number.
            if b == 0 && i > 0 {
                return Err(VarintError::Malformed);
            }
            return Ok(v);
        }
    }
    Err(VarintError::Malformed)
}

/// A wrapping difference (`b.wrapping_sub(a)`) as a zigzag number: small
/// steps forward and back both give small numbers (0, -1, 1, -2… as 0, 1,
/// 2, 3…).
#[must_use]
pub fn zigzag(delta: u64) -> u64 {
    let signed = delta as i64;
    ((signed << 1) ^ (signed >> 63)) as u64
}

/// The wrapping difference [`zigzag`] was given.
#[must_use]
pub fn unzigzag(v: u64) -> u64 {
    (v >> 1) ^ (v & 1).wrapping_neg()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_in_their_one_shortest_form() {
        for v in [
            0,
            1,
            0x7f,
            0x80,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put(&mut b, v);
            let mut rest = &b[..];
            assert_eq!(read(&mut rest), Ok(v));
            assert!(rest.is_empty());
            assert_eq!(
                b.len(),
                (64 - v.leading_zeros() as usize).div_ceil(7).max(1)
            );
        }
        assert_eq!(read(&mut &[0x80u8][..]), Err(VarintError::CutShort));
        assert_eq!(read(&mut &[0x80u8, 0x00][..]), Err(VarintError::Malformed));
        let too_long = [0xffu8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(read(&mut &too_long[..]), Err(VarintError::Malformed));
        for d in [0u64, 1, u64::MAX, 2, u64::MAX - 1, 1 << 63] {
            assert_eq!(unzigzag(zigzag(d)), d);
        }
        assert_eq!(zigzag(u64::MAX), 1, "-1 is small");
        assert_eq!(zigzag(1), 2);
    }
}
