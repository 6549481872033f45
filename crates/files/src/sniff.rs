//! What an upload is, decided from its bytes: the client's `Content-Type` and file name are
//! never trusted. A type is recognised by its magic number; plain text by being UTF-8 without
//! control characters throughout (checked over the whole stream, not just its start, so a
//! binary file cannot pass as text by starting with a few letters).

use std::fmt;
use std::str::FromStr;

/// Bytes needed to decide a type by its magic number (the longest magic is PNG's 8).
pub const SNIFF_LEN: usize = 8;

/// The types a clinic uploads; the server's configuration may allow fewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentType {
    Pdf,
    Png,
    Jpeg,
    Tiff,
    Text,
}

impl ContentType {
    pub const ALL: [ContentType; 5] = [Self::Pdf, Self::Png, Self::Jpeg, Self::Tiff, Self::Text];

    /// The configuration name (`CLINICD_FILE_TYPES`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Pdf => "pdf",
            Self::Png => "png",
            Self::Jpeg => "jpeg",
            Self::Tiff => "tiff",
            Self::Text => "text",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            Self::Pdf => "application/pdf",
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Tiff => "image/tiff",
            Self::Text => "text/plain",
        }
    }

    pub fn from_mime(mime: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.mime() == mime)
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Pdf => "pdf",
            Self::Png => "png",
            Self::Jpeg => "jpg",
            Self::Tiff => "tif",
            Self::Text => "txt",
        }
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ContentType {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|t| t.name() == s).ok_or(())
    }
}

/// The type named by `head`'s magic number, if any. `head` is the first [`SNIFF_LEN`] bytes or
/// the whole file if shorter.
pub fn by_magic(head: &[u8]) -> Option<ContentType> {
    const MAGIC: &[(&[u8], ContentType)] = &[
        (b"%PDF-", ContentType::Pdf),
        (b"\x89PNG\r\n\x1a\n", ContentType::Png),
        (b"\xff\xd8\xff", ContentType::Jpeg),
        (b"II*\0", ContentType::Tiff),
        (b"MM\0*", ContentType::Tiff),
    ];
    MAGIC
        .iter()
        .find(|(magic, _)| head.starts_with(magic))
        .map(|&(_, kind)| kind)
}

/// Checks a stream of chunks is plain text: UTF-8 (a character may span chunks) with no
/// control characters but tab, line feed, form feed and carriage return.
#[derive(Debug, Default)]
pub struct TextCheck {
    /// The start of a character cut off at the end of the previous chunk (at most 3 bytes).
    carry: Vec<u8>,
}

impl TextCheck {
    /// `false` as soon as the text is not plain text.
    pub fn push(&mut self, chunk: &[u8]) -> bool {
        let mut joined;
        let bytes = if self.carry.is_empty() {
            chunk
        } else {
            joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(chunk);
            &joined[..]
        };
        let valid = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            // An incomplete character at the very end: keep it for the next chunk.
            Err(e) if e.error_len().is_none() => {
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                self.carry = rest.to_vec();
                // Safe: `valid_up_to` bytes are valid UTF-8 by definition.
                std::str::from_utf8(valid).unwrap_or_default()
            }
            Err(_) => return false,
        };
        !valid
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\x0c'))
    }

    /// `false` if the text ended inside a character.
    pub fn finish(self) -> bool {
        self.carry.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_text(chunks: &[&[u8]]) -> bool {
        let mut check = TextCheck::default();
        chunks.iter().all(|c| check.push(c)) && check.finish()
    }

    #[test]
    fn magic_numbers_name_their_types() {
        assert_eq!(by_magic(b"%PDF-1.7\n"), Some(ContentType::Pdf));
        assert_eq!(by_magic(b"\x89PNG\r\n\x1a\n\0\0"), Some(ContentType::Png));
        assert_eq!(by_magic(b"\xff\xd8\xff\xe0"), Some(ContentType::Jpeg));
        assert_eq!(by_magic(b"II*\0\x08\0"), Some(ContentType::Tiff));
        assert_eq!(by_magic(b"MM\0*\0\0"), Some(ContentType::Tiff));
        assert_eq!(by_magic(b"MZ\x90\0"), None, "an executable");
        assert_eq!(by_magic(b"%PD"), None, "a cut-off magic");
        assert_eq!(by_magic(b"PK\x03\x04"), None, "a zip");
    }

    #[test]
    fn text_is_utf8_without_controls_across_chunks() {
        assert!(is_text(&[b""]));
        assert!(is_text(&[b"Lab result:\tnormal\r\n"]));
        let accented = "Zoë Müller — São Paulo".as_bytes();
        for cut in 0..accented.len() {
            assert!(
                is_text(&[&accented[..cut], &accented[cut..]]),
                "cut at {cut}"
            );
        }
        assert!(!is_text(&[b"abc\0def"]), "NUL");
        assert!(!is_text(&[b"abc\x1b[31m"]), "escape");
        assert!(
            !is_text(&[b"abc", b"\xff"]),
            "invalid UTF-8 in a later chunk"
        );
        assert!(!is_text(&[&accented[..3]]), "ends inside a character");
    }

    #[test]
    fn names_and_mimes_round_trip() {
        for kind in ContentType::ALL {
            assert_eq!(kind.name().parse::<ContentType>(), Ok(kind));
            assert_eq!(ContentType::from_mime(kind.mime()), Some(kind));
        }
    }
}
