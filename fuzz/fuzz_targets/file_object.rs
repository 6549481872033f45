//! A stored file object (an attacker with write access to the bucket or disk): the header
//! parser, then segment-by-segment decryption in arbitrary chunk sizes. Must never panic and
//! never yield plaintext. Twin: crates/files/src/format.rs, `the_header_parser_never_panics`,
//! `arbitrary_bytes_never_open`.
#![no_main]

use clinicd_files::format::{Context, Decryptor, Header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u16, &[u8])| {
    let (chunk, object) = input;
    let _ = Header::parse(object);
    let mut decryptor = Decryptor::new(&[9; 32], Context::new([("file_id", String::new())]));
    let mut opened = Vec::new();
    for part in object.chunks(usize::from(chunk).max(1)) {
        match decryptor.push(part) {
            Ok(plain) => opened.extend(plain),
            Err(_) => return,
        }
    }
    if let Ok(last) = decryptor.finish() {
        opened.extend(last);
        panic!("arbitrary bytes opened as a file object ({} bytes)", opened.len());
    }
});
