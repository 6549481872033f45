//! The encrypted object format, version 1: a header authenticated on its own, then AES-256-GCM
//! segments in the STREAM construction. Modelled on the AWS Encryption SDK message format
//! (header authentication, key commitment, framed bodies) and Tink's streaming AEAD (per-message
//! keys derived from a random salt, nonces that encode the segment index and a last-segment
//! flag).
//!
//! ```text
//! header   = magic "CLNF" | version 0x01 | suite 0x01 | segment_size u32 BE
//!          | message_id [32] | context_len u16 BE | context | commitment [32] | header_mac [32]
//! context  = count u16 BE, then per pair sorted by key: key_len u16 | key | value_len u16 | value
//! keys     = HKDF-SHA256(ikm = data key, salt = message_id, info = "clinicd-file-v1" | suite)
//!            -> segment_key [32] | mac_key [32] | commitment [32]
//! header_mac = HMAC-SHA256(mac_key, every header byte before it)
//! segment i  = AES-256-GCM(segment_key, nonce = 0^7 | i u32 BE | last u8, aad = SHA-256(header), plaintext)
//! ```
//!
//! What each part stops:
//! - **key commitment**: the commitment is derived with the keys; a ciphertext opens under
//!   exactly one data key (no "invisible salamander" that decrypts differently under two);
//! - **header MAC**: a changed context, segment size or message id;
//! - **segment AAD = header digest**: a header swapped in from another file, and segments
//!   spliced between files (their keys differ too, by message id);
//! - **index in the nonce**: reordered, dropped or duplicated segments;
//! - **last flag**: truncation at a segment boundary (the final segment, possibly empty, is
//!   the only one with the flag; an empty file is one empty final segment).
//!
//! Every segment is authenticated before any of its plaintext is released.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::{digest, hkdf, hmac, rand};
use zeroize::Zeroizing;

pub const MAGIC: [u8; 4] = *b"CLNF";
pub const VERSION: u8 = 1;
/// AES-256-GCM segments, HKDF-SHA256 key derivation, HMAC-SHA256 header MAC, key commitment.
pub const SUITE: u8 = 1;
pub const DEFAULT_SEGMENT_SIZE: u32 = 64 * 1024;
pub const MIN_SEGMENT_SIZE: u32 = 1024;
pub const MAX_SEGMENT_SIZE: u32 = 4 * 1024 * 1024;
pub const TAG_LEN: usize = 16;
const ID_LEN: usize = 32;
const COMMITMENT_LEN: usize = 32;
const MAC_LEN: usize = 32;
const MAX_CONTEXT_LEN: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not an encrypted object of this format")]
    NotAnObject,
    #[error("unsupported format version or suite")]
    Unsupported,
    #[error("malformed header")]
    Malformed,
    #[error("the header does not authenticate, or the key does not commit to it")]
    HeaderAuthentication,
    #[error("the encryption context is not the expected one")]
    WrongContext,
    #[error("segment {0} does not authenticate (tampered, reordered or from another object)")]
    Segment(u32),
    /// Cut short, or its last segment changed: the two cannot be told apart.
    #[error("the object ends early, or its final segment does not authenticate")]
    Truncated,
    #[error("too many segments")]
    TooLong,
    #[error("the random number generator or key derivation failed")]
    Crypto,
}

/// Key/value pairs bound into the header (for example the file id and the patient id), sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context(Vec<(String, String)>);

impl Context {
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> Self {
        let mut pairs: Vec<(String, String)> =
            pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        pairs.sort();
        pairs.dedup_by(|a, b| a.0 == b.0);
        Self(pairs)
    }

    fn encode(&self) -> Result<Vec<u8>, FormatError> {
        let mut out = Vec::new();
        put_u16(&mut out, self.0.len())?;
        for (key, value) in &self.0 {
            put_u16(&mut out, key.len())?;
            out.extend_from_slice(key.as_bytes());
            put_u16(&mut out, value.len())?;
            out.extend_from_slice(value.as_bytes());
        }
        if out.len() > MAX_CONTEXT_LEN {
            return Err(FormatError::Malformed);
        }
        Ok(out)
    }

    fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut reader = Reader(bytes);
        let count = reader.u16()?;
        let mut pairs = Vec::with_capacity(usize::from(count).min(64));
        for _ in 0..count {
            let key = reader.string()?;
            let value = reader.string()?;
            pairs.push((key, value));
        }
        if !reader.0.is_empty() {
            return Err(FormatError::Malformed);
        }
        let context = Self(pairs);
        // The canonical encoding only: sorted, unique keys.
        if context
            .0
            .windows(2)
            .any(|w| matches!(w, [a, b] if a.0 >= b.0))
        {
            return Err(FormatError::Malformed);
        }
        Ok(context)
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

fn put_u16(out: &mut Vec<u8>, value: usize) -> Result<(), FormatError> {
    let value = u16::try_from(value).map_err(|_| FormatError::Malformed)?;
    out.extend_from_slice(&value.to_be_bytes());
    Ok(())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.0.len() < n {
            return Err(FormatError::Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        self.take(N)?.try_into().map_err(|_| FormatError::Malformed)
    }

    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, FormatError> {
        let len = usize::from(self.u16()?);
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| FormatError::Malformed)
    }
}

/// A parsed, not yet authenticated header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub segment_size: u32,
    pub message_id: [u8; ID_LEN],
    pub context: Context,
    commitment: [u8; COMMITMENT_LEN],
    mac: [u8; MAC_LEN],
    /// Every header byte, as read (the segments' associated data is its digest).
    bytes: Vec<u8>,
}

impl Header {
    /// Parses a header from the start of `bytes`: `Ok(None)` if more bytes are needed,
    /// otherwise the header and its length. Checks structure only; [`Keys::open_header`]
    /// authenticates it.
    pub fn parse(bytes: &[u8]) -> Result<Option<(Header, usize)>, FormatError> {
        const FIXED: usize = 4 + 1 + 1 + 4 + ID_LEN + 2;
        if bytes.get(..MAGIC.len()).is_some_and(|magic| magic != MAGIC) {
            return Err(FormatError::NotAnObject);
        }
        // Every read below is checked (an object's bytes are untrusted until authenticated).
        let Some(fixed) = bytes.get(..FIXED) else {
            return Ok(None);
        };
        let mut reader = Reader(fixed);
        reader.take(MAGIC.len())?;
        if reader.u8()? != VERSION || reader.u8()? != SUITE {
            return Err(FormatError::Unsupported);
        }
        let segment_size = reader.u32()?;
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&segment_size) {
            return Err(FormatError::Malformed);
        }
        let message_id: [u8; ID_LEN] = reader.array()?;
        let context_len = usize::from(reader.u16()?);
        if context_len > MAX_CONTEXT_LEN {
            return Err(FormatError::Malformed);
        }
        let total = FIXED + context_len + COMMITMENT_LEN + MAC_LEN;
        let Some(header_bytes) = bytes.get(..total) else {
            return Ok(None);
        };
        let mut rest = Reader(header_bytes.get(FIXED..).unwrap_or_default());
        let context = Context::decode(rest.take(context_len)?)?;
        let commitment: [u8; COMMITMENT_LEN] = rest.array()?;
        let mac: [u8; MAC_LEN] = rest.array()?;
        Ok(Some((
            Header {
                segment_size,
                message_id,
                context,
                commitment,
                mac,
                bytes: header_bytes.to_vec(),
            },
            total,
        )))
    }

    /// The header's bytes its MAC covers (all but the MAC itself).
    fn authenticated_bytes(&self) -> &[u8] {
        self.bytes
            .get(..self.bytes.len().saturating_sub(MAC_LEN))
            .unwrap_or_default()
    }
}

/// The keys of one object, derived from its data key and message id.
struct Keys {
    segment: LessSafeKey,
    mac: hmac::Key,
    commitment: [u8; COMMITMENT_LEN],
}

struct OutLen(usize);

impl hkdf::KeyType for OutLen {
    fn len(&self) -> usize {
        self.0
    }
}

impl Keys {
    #[expect(
        clippy::indexing_slicing,
        reason = "constant bounds within a fixed 96-byte array"
    )]
    fn derive(data_key: &[u8; 32], message_id: &[u8; ID_LEN]) -> Result<Self, FormatError> {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, message_id);
        let prk = salt.extract(data_key);
        let info: [&[u8]; 2] = [b"clinicd-file-v1", &[SUITE]];
        let okm = prk
            .expand(&info, OutLen(96))
            .map_err(|_| FormatError::Crypto)?;
        let mut material = Zeroizing::new([0u8; 96]);
        okm.fill(material.as_mut())
            .map_err(|_| FormatError::Crypto)?;
        let segment =
            UnboundKey::new(&AES_256_GCM, &material[..32]).map_err(|_| FormatError::Crypto)?;
        let mut commitment = [0u8; COMMITMENT_LEN];
        commitment.copy_from_slice(&material[64..96]);
        Ok(Self {
            segment: LessSafeKey::new(segment),
            mac: hmac::Key::new(hmac::HMAC_SHA256, &material[32..64]),
            commitment,
        })
    }
}

fn nonce(index: u32, last: bool) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[7..11].copy_from_slice(&index.to_be_bytes());
    bytes[11] = u8::from(last);
    Nonce::assume_unique_for_key(bytes)
}

/// Encrypts a stream: feed plaintext with [`Encryptor::push`], end with [`Encryptor::finish`].
/// Output is produced a segment at a time; memory holds at most one segment.
pub struct Encryptor {
    keys: Keys,
    aad: [u8; 32],
    segment_size: usize,
    index: u32,
    pending: Vec<u8>,
    header: Option<Vec<u8>>,
}

impl std::fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryptor")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl Encryptor {
    pub fn new(
        data_key: &[u8; 32],
        context: &Context,
        segment_size: u32,
    ) -> Result<Self, FormatError> {
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&segment_size) {
            return Err(FormatError::Malformed);
        }
        let mut message_id = [0u8; ID_LEN];
        rand::fill(&mut message_id).map_err(|_| FormatError::Crypto)?;
        let keys = Keys::derive(data_key, &message_id)?;
        let encoded = context.encode()?;
        let mut header = Vec::with_capacity(128 + encoded.len());
        header.extend_from_slice(&MAGIC);
        header.push(VERSION);
        header.push(SUITE);
        header.extend_from_slice(&segment_size.to_be_bytes());
        header.extend_from_slice(&message_id);
        put_u16(&mut header, encoded.len())?;
        header.extend_from_slice(&encoded);
        header.extend_from_slice(&keys.commitment);
        let mac = hmac::sign(&keys.mac, &header);
        header.extend_from_slice(mac.as_ref());
        let mut aad = [0u8; 32];
        aad.copy_from_slice(digest::digest(&digest::SHA256, &header).as_ref());
        Ok(Self {
            keys,
            aad,
            segment_size: segment_size as usize,
            index: 0,
            pending: Vec::with_capacity(segment_size as usize + TAG_LEN),
            header: Some(header),
        })
    }

    /// Encrypts what completes whole segments; returns the bytes to write (the header first).
    pub fn push(&mut self, mut plaintext: &[u8]) -> Result<Vec<u8>, FormatError> {
        let mut out = self.header.take().unwrap_or_default();
        // Room for all this call can seal, so `out` never grows by copying what it holds.
        let held = self.pending.len() + plaintext.len();
        out.reserve(held + (held / self.segment_size + 1) * TAG_LEN);
        // A full pending segment is sealed only once more data shows it is not the last.
        while !plaintext.is_empty() {
            if self.pending.len() == self.segment_size {
                self.seal_pending(false, &mut out)?;
            }
            if self.pending.is_empty() && plaintext.len() > self.segment_size {
                // A whole segment with more after it: sealed straight into the output, one
                // copy instead of two (through `pending`, then out of it).
                let (segment, rest) = plaintext.split_at(self.segment_size);
                self.seal_into(segment, false, &mut out)?;
                plaintext = rest;
                continue;
            }
            let room = self.segment_size.saturating_sub(self.pending.len());
            let (now, later) = plaintext.split_at(room.min(plaintext.len()));
            self.pending.extend_from_slice(now);
            plaintext = later;
        }
        Ok(out)
    }

    /// Seals the final segment (possibly empty); returns the last bytes to write.
    pub fn finish(mut self) -> Result<Vec<u8>, FormatError> {
        let mut out = self.header.take().unwrap_or_default();
        self.seal_pending(true, &mut out)?;
        Ok(out)
    }

    fn seal_pending(&mut self, last: bool, out: &mut Vec<u8>) -> Result<(), FormatError> {
        let pending = std::mem::take(&mut self.pending);
        let sealed = self.seal_into(&pending, last, out);
        self.pending = pending;
        self.pending.clear();
        sealed
    }

    /// Appends `segment` to `out` and seals it there, in place, followed by its tag.
    fn seal_into(
        &mut self,
        segment: &[u8],
        last: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        let start = out.len();
        out.extend_from_slice(segment);
        let body = out.get_mut(start..).ok_or(FormatError::Crypto)?;
        let tag = self
            .keys
            .segment
            .seal_in_place_separate_tag(nonce(self.index, last), Aad::from(self.aad), body)
            .map_err(|_| FormatError::Crypto)?;
        out.extend_from_slice(tag.as_ref());
        self.index = self.index.checked_add(1).ok_or(FormatError::TooLong)?;
        Ok(())
    }
}

/// Decrypts a stream: feed ciphertext with [`Decryptor::push`] (it returns only authenticated
/// plaintext), end with [`Decryptor::finish`], which fails unless the final segment arrived.
pub struct Decryptor {
    data_key: Zeroizing<[u8; 32]>,
    expected: Context,
    state: State,
    buffer: Vec<u8>,
}

enum State {
    Header,
    Body {
        keys: Box<Keys>,
        aad: [u8; 32],
        segment_size: usize,
        index: u32,
    },
}

impl std::fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decryptor").finish_non_exhaustive()
    }
}

impl Decryptor {
    /// `expected` is the context the caller knows the object must carry (its file id, its
    /// patient): an object moved to another file's place does not open.
    pub fn new(data_key: &[u8; 32], expected: Context) -> Self {
        Self {
            data_key: Zeroizing::new(*data_key),
            expected,
            state: State::Header,
            buffer: Vec::new(),
        }
    }

    pub fn push(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, FormatError> {
        self.buffer.extend_from_slice(ciphertext);
        let mut out = Vec::new();
        loop {
            match &mut self.state {
                State::Header => {
                    let Some((header, len)) = Header::parse(&self.buffer)? else {
                        return Ok(out);
                    };
                    let keys = Keys::derive(&self.data_key, &header.message_id)?;
                    let committed = aws_lc_rs::constant_time::verify_slices_are_equal(
                        &keys.commitment,
                        &header.commitment,
                    )
                    .is_ok();
                    let authentic =
                        hmac::verify(&keys.mac, header.authenticated_bytes(), &header.mac).is_ok();
                    if !committed || !authentic {
                        return Err(FormatError::HeaderAuthentication);
                    }
                    if header.context != self.expected {
                        return Err(FormatError::WrongContext);
                    }
                    let mut aad = [0u8; 32];
                    aad.copy_from_slice(digest::digest(&digest::SHA256, &header.bytes).as_ref());
                    self.buffer.drain(..len);
                    self.state = State::Body {
                        keys: Box::new(keys),
                        aad,
                        segment_size: header.segment_size as usize,
                        index: 0,
                    };
                }
                State::Body {
                    keys,
                    aad,
                    segment_size,
                    index,
                } => {
                    // A whole segment that is followed by more data is not the last one.
                    let full = *segment_size + TAG_LEN;
                    if self.buffer.len() <= full {
                        return Ok(out);
                    }
                    let mut segment: Vec<u8> = self.buffer.drain(..full).collect();
                    let plain = keys
                        .segment
                        .open_in_place(nonce(*index, false), Aad::from(*aad), &mut segment)
                        .map_err(|_| FormatError::Segment(*index))?;
                    out.extend_from_slice(plain);
                    *index = index.checked_add(1).ok_or(FormatError::TooLong)?;
                }
            }
        }
    }

    /// Opens the final segment; fails if the object was cut short. (Data after the final
    /// segment fails earlier: it makes the final segment look like a middle one.)
    pub fn finish(mut self) -> Result<Vec<u8>, FormatError> {
        let State::Body {
            keys, aad, index, ..
        } = &self.state
        else {
            return Err(FormatError::Truncated);
        };
        if self.buffer.len() < TAG_LEN {
            return Err(FormatError::Truncated);
        }
        let plain = keys
            .segment
            .open_in_place(nonce(*index, true), Aad::from(*aad), &mut self.buffer)
            .map_err(|_| FormatError::Truncated)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 32] = [9; 32];
    const SEGMENT: u32 = MIN_SEGMENT_SIZE;

    fn context() -> Context {
        Context::new([
            ("file_id", "f-1".to_owned()),
            ("patient_id", "p-1".to_owned()),
        ])
    }

    fn encrypt(plain: &[u8], chunk: usize) -> Vec<u8> {
        let mut encryptor = Encryptor::new(&KEY, &context(), SEGMENT).unwrap();
        let mut out = Vec::new();
        for part in plain.chunks(chunk.max(1)) {
            out.extend(encryptor.push(part).unwrap());
        }
        out.extend(encryptor.finish().unwrap());
        out
    }

    fn decrypt_with(
        key: &[u8; 32],
        expected: Context,
        object: &[u8],
        chunk: usize,
    ) -> Result<Vec<u8>, FormatError> {
        let mut decryptor = Decryptor::new(key, expected);
        let mut out = Vec::new();
        for part in object.chunks(chunk.max(1)) {
            out.extend(decryptor.push(part)?);
        }
        out.extend(decryptor.finish()?);
        Ok(out)
    }

    fn decrypt(object: &[u8]) -> Result<Vec<u8>, FormatError> {
        decrypt_with(&KEY, context(), object, 777)
    }

    fn header_len(object: &[u8]) -> usize {
        Header::parse(object).unwrap().unwrap().1
    }

    #[test]
    fn round_trips_at_every_interesting_size() {
        let seg = SEGMENT as usize;
        for size in [0, 1, seg - 1, seg, seg + 1, 2 * seg, 3 * seg + 5, 300_000] {
            let plain: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            for chunk in [1, 100, seg, 65_536] {
                if size > 10_000 && chunk == 1 {
                    continue;
                }
                let object = encrypt(&plain, chunk);
                let segments = size.div_ceil(seg).max(1);
                assert_eq!(
                    object.len(),
                    header_len(&object) + size + segments * TAG_LEN,
                    "{size}"
                );
                assert_eq!(
                    decrypt_with(&KEY, context(), &object, chunk).unwrap(),
                    plain,
                    "{size}/{chunk}"
                );
            }
        }
    }

    #[test]
    fn the_same_plaintext_never_encrypts_the_same_way() {
        assert_ne!(encrypt(b"same", 4), encrypt(b"same", 4));
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let plain: Vec<u8> = (0..(2 * SEGMENT as usize + 10)).map(|i| i as u8).collect();
        let object = encrypt(&plain, 4096);
        for i in 0..object.len() {
            let mut bad = object.clone();
            bad[i] ^= 0x01;
            assert!(decrypt(&bad).is_err(), "byte {i} flipped and still opened");
        }
    }

    #[test]
    fn truncation_at_any_length_is_refused() {
        let plain: Vec<u8> = vec![7; 3 * SEGMENT as usize];
        let object = encrypt(&plain, 4096);
        for len in 0..object.len() {
            assert!(
                decrypt(&object[..len]).is_err(),
                "cut to {len} and still opened"
            );
        }
        let seg = SEGMENT as usize + TAG_LEN;
        let h = header_len(&object);
        // Exactly at a segment boundary, dropping the final segment.
        assert_eq!(decrypt(&object[..h + 2 * seg]), Err(FormatError::Truncated));
        // The same when every segment was sealed straight from one large push: none but the
        // last is marked last.
        let whole = encrypt(&plain, plain.len());
        assert_eq!(decrypt(&whole).unwrap(), plain);
        for segments in 1..3 {
            assert_eq!(
                decrypt(&whole[..h + segments * seg]),
                Err(FormatError::Truncated)
            );
        }
    }

    #[test]
    fn swapped_or_repeated_segments_are_refused() {
        let plain: Vec<u8> = (0..(3 * SEGMENT as usize + 1))
            .map(|i| (i / 1024) as u8)
            .collect();
        let object = encrypt(&plain, 4096);
        let h = header_len(&object);
        let seg = SEGMENT as usize + TAG_LEN;
        let mut swapped = object.clone();
        swapped[h..h + seg].copy_from_slice(&object[h + seg..h + 2 * seg]);
        swapped[h + seg..h + 2 * seg].copy_from_slice(&object[h..h + seg]);
        assert_eq!(decrypt(&swapped), Err(FormatError::Segment(0)));
        let mut repeated = object[..h + seg].to_vec();
        repeated.extend_from_slice(&object[h..]);
        assert!(decrypt(&repeated).is_err());
        let mut appended = object.clone();
        appended.extend_from_slice(&object[h..h + seg]);
        assert!(decrypt(&appended).is_err(), "data after the final segment");
    }

    #[test]
    fn a_header_or_segment_from_another_object_is_refused() {
        let a = encrypt(&[1; 2000], 4096);
        let b = encrypt(&[2; 2000], 4096);
        let (ha, hb) = (header_len(&a), header_len(&b));
        let mut header_swapped = b[..hb].to_vec();
        header_swapped.extend_from_slice(&a[ha..]);
        assert!(decrypt(&header_swapped).is_err());
        let mut spliced = a[..ha].to_vec();
        spliced.extend_from_slice(&b[hb..hb + SEGMENT as usize + TAG_LEN]);
        spliced.extend_from_slice(&a[ha + SEGMENT as usize + TAG_LEN..]);
        assert_eq!(decrypt(&spliced), Err(FormatError::Segment(0)));
    }

    #[test]
    fn a_wrong_key_or_context_is_refused() {
        let object = encrypt(b"insurance card", 64);
        assert_eq!(
            decrypt_with(&[8; 32], context(), &object, 64),
            Err(FormatError::HeaderAuthentication),
            "the key commits: another key fails at the header"
        );
        let other = Context::new([
            ("file_id", "f-2".to_owned()),
            ("patient_id", "p-1".to_owned()),
        ]);
        assert_eq!(
            decrypt_with(&KEY, other, &object, 64),
            Err(FormatError::WrongContext)
        );
        assert_eq!(
            decrypt_with(&KEY, Context::default(), &object, 64),
            Err(FormatError::WrongContext)
        );
    }

    #[test]
    fn headers_that_are_not_ours_are_refused_early() {
        assert_eq!(Header::parse(b"%PDF-1.7"), Err(FormatError::NotAnObject));
        let object = encrypt(b"x", 1);
        let mut version = object.clone();
        version[4] = 2;
        assert_eq!(Header::parse(&version), Err(FormatError::Unsupported));
        assert_eq!(Header::parse(&object[..20]), Ok(None), "needs more bytes");
    }

    proptest! {
        #[test]
        fn the_header_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Header::parse(&bytes);
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&[VERSION, SUITE, 0, 0, 4, 0]);
            with_magic.extend_from_slice(&bytes);
            let _ = Header::parse(&with_magic);
        }

        #[test]
        fn headers_round_trip(pairs in proptest::collection::btree_map("[a-z_]{1,12}", "[ -~]{0,40}", 0..6)) {
            let context = Context::new(pairs.iter().map(|(k, v)| (k.as_str(), v.clone())));
            let mut encryptor = Encryptor::new(&KEY, &context, SEGMENT).unwrap();
            let mut object = encryptor.push(b"").unwrap();
            object.extend(encryptor.finish().unwrap());
            let (header, len) = Header::parse(&object).unwrap().unwrap();
            prop_assert_eq!(header.context, context);
            prop_assert_eq!(len + TAG_LEN, object.len());
        }

        #[test]
        fn arbitrary_bytes_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
            prop_assert!(decrypt(&bytes).is_err());
        }
    }
}
