//! The encrypted object format's stages alone, in process: encrypting and decrypting a stream in
//! 64 KiB pushes, against single-core `openssl speed -evp aes-256-gcm` on 16 KiB blocks run in
//! the same process's lifetime (target: at least 0.8 of it). Run with `./scripts/bench format`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing,
    reason = "a benchmark: a panic is its report, and it prints its figures"
)]

use std::hint::black_box;
use std::time::Instant;

use clinicd_files::format::{Context, DEFAULT_SEGMENT_SIZE, Decryptor, Encryptor};
use criterion::{Criterion, Throughput};

const KEY: [u8; 32] = [5; 32];
const TOTAL: usize = 64 * 1024 * 1024;
const PUSH: usize = 64 * 1024;

fn context() -> Context {
    Context::new([("file_id", "bench".to_owned())])
}

fn encrypt(plain: &[u8]) -> Vec<u8> {
    let mut encryptor = Encryptor::new(&KEY, &context(), DEFAULT_SEGMENT_SIZE).unwrap();
    let mut out = Vec::with_capacity(plain.len() + plain.len() / 1000 + 256);
    for chunk in plain.chunks(PUSH) {
        out.extend(encryptor.push(chunk).unwrap());
    }
    out.extend(encryptor.finish().unwrap());
    out
}

/// The encryption stage alone: each push's output is dropped, as a stream to S3 would send it
/// on (collecting 64 MiB would measure page faults, not encryption).
fn encrypt_stream(plain: &[u8]) -> usize {
    let mut encryptor = Encryptor::new(&KEY, &context(), DEFAULT_SEGMENT_SIZE).unwrap();
    let mut n = 0;
    for chunk in plain.chunks(PUSH) {
        n += encryptor.push(chunk).unwrap().len();
    }
    n + encryptor.finish().unwrap().len()
}

fn decrypt(object: &[u8]) -> usize {
    let mut decryptor = Decryptor::new(&KEY, context());
    let mut n = 0;
    for chunk in object.chunks(PUSH) {
        n += decryptor.push(chunk).unwrap().len();
    }
    n + decryptor.finish().unwrap().len()
}

/// Bytes per second of `work` over `bytes`, best of three.
fn rate(bytes: usize, mut work: impl FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let started = Instant::now();
            work();
            bytes as f64 / started.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

fn main() {
    let plain: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
    let object = encrypt(&plain);
    let ceiling = clinicd_test_kit::openssl_aes_gcm();
    let enc = rate(TOTAL, || {
        black_box(encrypt_stream(black_box(&plain)));
    });
    let dec = rate(TOTAL, || {
        black_box(decrypt(black_box(&object)));
    });
    let ceiling_after = clinicd_test_kit::openssl_aes_gcm();
    let gb = |r: f64| r / 1e9;
    println!("64 MiB in 64 KiB pushes, 64 KiB segments, one core:");
    println!("  encrypt {:.2} GB/s, decrypt {:.2} GB/s", gb(enc), gb(dec));
    match (ceiling, ceiling_after) {
        (Some(before), Some(after)) => {
            let ceiling = (before + after) / 2.0;
            println!(
                "  openssl speed -evp aes-256-gcm, 16 KiB: {:.2} GB/s (before {:.2}, after {:.2})",
                gb(ceiling),
                gb(before),
                gb(after)
            );
            println!(
                "  ratio (target >= 0.8): encrypt {:.2}, decrypt {:.2}",
                enc / ceiling,
                dec / ceiling
            );
        }
        _ => println!("  openssl not found: no ratio"),
    }

    let mut criterion = Criterion::default().configure_from_args().sample_size(10);
    let mut group = criterion.benchmark_group("object_format");
    group.throughput(Throughput::Bytes(TOTAL as u64));
    group.bench_function("encrypt_64MiB", |b| {
        b.iter(|| encrypt_stream(black_box(&plain)))
    });
    group.bench_function("decrypt_64MiB", |b| b.iter(|| decrypt(black_box(&object))));
    group.finish();
    criterion.final_summary();
}
