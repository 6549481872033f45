//! Field encryption on the cached path against raw AES-256-GCM on the same bytes, and blind
//! index computations. Needs Postgres (`DATABASE_URL`) to set up the key hierarchy once; the
//! measured loops touch neither Postgres nor the key provider. Run with `./scripts/bench`.
//!
//! Besides Criterion's own report, prints the ratio ours / raw measured by interleaving the
//! two in the same run, since these machines are noisy.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing,
    reason = "a benchmark: a panic is its report, and it prints its figures"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use clinicd_crypto::blind_index::Normalizer;
use clinicd_crypto::field;
use clinicd_crypto::{
    BlindIndexSpec, CacheSettings, FieldLocation, KeyRef, Keyring, LocalKeyProvider, Owner,
    SecretKey, SubjectId,
};
use criterion::{Criterion, Throughput};
use tokio::runtime::Runtime;
use uuid::Uuid;

const SIZES: [(&str, usize); 3] = [("ssn_11B", 11), ("address_64B", 64), ("note_1KiB", 1024)];
const SSN_INDEX: BlindIndexSpec = BlindIndexSpec {
    table: "patients",
    column: "ssn",
    bits: 16,
    normalizer: Normalizer::SsnDigits,
};

struct Setup {
    runtime: Runtime,
    keyring: Keyring,
    subject: SubjectId,
    location: FieldLocation<'static>,
    raw: LessSafeKey,
    rng: SystemRandom,
    /// The associated data our format authenticates for this location (a subject key's
    /// 22-byte header, then the length-prefixed table, column and row id), built once: the
    /// like-for-like raw baseline authenticates the same bytes.
    aad: Vec<u8>,
}

fn setup() -> Setup {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL: run through ./scripts/bench");
    let keyring = runtime.block_on(async {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .unwrap();
        sqlx::migrate!("../../migrations").run(&pool).await.unwrap();
        let provider = LocalKeyProvider::new(SecretKey::random(&SystemRandom::new()).unwrap());
        let keyring = Keyring::new(pool, Arc::new(provider), CacheSettings::default());
        keyring.bootstrap().await.unwrap();
        keyring
    });
    let rng = SystemRandom::new();
    let mut raw_key = [0u8; 32];
    rng.fill(&mut raw_key).unwrap();
    let location = FieldLocation::new("patients", "ssn", Uuid::now_v7());
    let mut aad = vec![1u8; 22];
    for part in [
        location.table.as_bytes(),
        location.column.as_bytes(),
        location.row_id.as_bytes(),
    ] {
        aad.extend_from_slice(&u32::try_from(part.len()).unwrap().to_be_bytes());
        aad.extend_from_slice(part);
    }
    Setup {
        runtime,
        keyring,
        subject: SubjectId(Uuid::now_v7()),
        location,
        raw: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &raw_key).unwrap()),
        rng,
        aad,
    }
}

/// Raw AES-256-GCM as an application would call it: random nonce, output buffer, tag; with
/// `bound`, authenticating the same associated data as our format.
fn raw_seal(setup: &Setup, plaintext: &[u8], bound: bool) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    setup.rng.fill(&mut nonce).unwrap();
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = setup
        .raw
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            aad(setup, bound),
            &mut out[NONCE_LEN..],
        )
        .unwrap();
    out.extend_from_slice(tag.as_ref());
    out
}

fn aad(setup: &Setup, bound: bool) -> Aad<&[u8]> {
    Aad::from(if bound { setup.aad.as_slice() } else { &[] })
}

fn raw_open(setup: &Setup, sealed: &[u8], bound: bool) -> usize {
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let mut buffer = body.to_vec();
    let nonce = Nonce::try_assume_unique_for_key(nonce).unwrap();
    setup
        .raw
        .open_in_place(nonce, aad(setup, bound), &mut buffer)
        .unwrap()
        .len()
}

fn time_ours_encrypt(setup: &Setup, plaintext: &[u8], iters: u64) -> Duration {
    setup.runtime.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(
                setup
                    .keyring
                    .encrypt(Owner::Subject(setup.subject), &setup.location, plaintext)
                    .await
                    .unwrap(),
            );
        }
        start.elapsed()
    })
}

fn time_ours_decrypt(setup: &Setup, sealed: &[u8], iters: u64) -> Duration {
    setup.runtime.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(
                setup
                    .keyring
                    .decrypt(&setup.location, sealed)
                    .await
                    .unwrap(),
            );
        }
        start.elapsed()
    })
}

fn time_raw(iters: u64, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed()
}

/// Interleaves short runs of both so drift on a noisy machine hits them equally.
fn interleaved_ratio(
    rounds: usize,
    iters: u64,
    mut ours: impl FnMut(u64) -> Duration,
    mut raw: impl FnMut(u64) -> Duration,
) -> f64 {
    let (mut ours_total, mut raw_total) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        ours_total += ours(iters);
        raw_total += raw(iters);
    }
    // Throughput ratio: ours per second over raw per second.
    raw_total.as_secs_f64() / ours_total.as_secs_f64()
}

/// Where a decryption's time goes, in ns per call: ours through the keyring, the format alone
/// (parse and open under a column key held by the caller, no cache), raw with the same AAD.
fn decrypt_costs(
    setup: &Setup,
    name: &str,
    plaintext: &[u8],
    sealed: &[u8],
    bound_sealed: &[u8],
) -> String {
    let root = SecretKey::random(&setup.rng).unwrap();
    let cipher = field::derive_column_key(&root, "patients", "ssn").unwrap();
    let key = KeyRef::Subject(setup.subject, 1);
    let own = field::seal(&cipher, key, &setup.location, plaintext, &setup.rng).unwrap();
    let n = 200_000;
    let per_call = |elapsed: Duration| elapsed.as_nanos() as f64 / n as f64;
    let (mut ours, mut format, mut raw) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for _ in 0..10 {
        ours += time_ours_decrypt(setup, sealed, n);
        format += time_raw(n, || {
            let parsed = field::parse(&own).unwrap();
            black_box(field::open(&cipher, parsed, &setup.location, &own).unwrap());
        });
        raw += time_raw(n, || {
            black_box(raw_open(setup, bound_sealed, true));
        });
    }
    format!(
        "{name:<12} keyring {:.0} ns, format alone {:.0} ns, raw same AAD {:.0} ns",
        per_call(ours / 10),
        per_call(format / 10),
        per_call(raw / 10)
    )
}

fn main() {
    let setup = setup();
    let mut criterion = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let mut report = Vec::new();
    let mut costs = Vec::new();

    for (name, size) in SIZES {
        let plaintext = vec![0x41u8; size];
        let sealed = setup
            .runtime
            .block_on(setup.keyring.encrypt(
                Owner::Subject(setup.subject),
                &setup.location,
                &plaintext,
            ))
            .unwrap();
        let raw_sealed = raw_seal(&setup, &plaintext, false);
        let bound_sealed = raw_seal(&setup, &plaintext, true);

        let mut group = criterion.benchmark_group(format!("field/{name}"));
        group.throughput(Throughput::Elements(1));
        group.bench_function("raw_aes_gcm_encrypt", |b| {
            b.iter(|| black_box(raw_seal(&setup, &plaintext, false)))
        });
        group.bench_function("encrypt", |b| {
            b.iter_custom(|iters| time_ours_encrypt(&setup, &plaintext, iters))
        });
        group.bench_function("raw_aes_gcm_decrypt", |b| {
            b.iter(|| black_box(raw_open(&setup, &raw_sealed, false)))
        });
        group.bench_function("decrypt", |b| {
            b.iter_custom(|iters| time_ours_decrypt(&setup, &sealed, iters))
        });
        group.finish();

        let ratio = |bound: bool| {
            let sealed_raw = if bound { &bound_sealed } else { &raw_sealed };
            let encrypt = interleaved_ratio(
                20,
                20_000,
                |n| time_ours_encrypt(&setup, &plaintext, n),
                |n| {
                    time_raw(n, || {
                        black_box(raw_seal(&setup, &plaintext, bound));
                    })
                },
            );
            let decrypt = interleaved_ratio(
                20,
                20_000,
                |n| time_ours_decrypt(&setup, &sealed, n),
                |n| {
                    time_raw(n, || {
                        black_box(raw_open(&setup, sealed_raw, bound));
                    })
                },
            );
            (encrypt, decrypt)
        };
        costs.push(decrypt_costs(
            &setup,
            name,
            &plaintext,
            &sealed,
            &bound_sealed,
        ));
        let (encrypt, decrypt) = ratio(false);
        let (bound_encrypt, bound_decrypt) = ratio(true);
        report.push(format!(
            "{name:<12} encrypt {encrypt:.2}   decrypt {decrypt:.2}   | same AAD: encrypt {bound_encrypt:.2}   decrypt {bound_decrypt:.2}"
        ));
    }

    let mut group = criterion.benchmark_group("blind_index");
    group.throughput(Throughput::Elements(1));
    group.bench_function("ssn_16_bits", |b| {
        b.iter_custom(|iters| {
            setup.runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(
                        setup
                            .keyring
                            .blind_index(&SSN_INDEX, "123-45-6789")
                            .await
                            .unwrap(),
                    );
                }
                start.elapsed()
            })
        })
    });
    group.finish();
    let index_rate = {
        let n = 200_000;
        let elapsed = setup.runtime.block_on(async {
            let start = Instant::now();
            for _ in 0..n {
                black_box(
                    setup
                        .keyring
                        .blind_index(&SSN_INDEX, "123-45-6789")
                        .await
                        .unwrap(),
                );
            }
            start.elapsed()
        });
        n as f64 / elapsed.as_secs_f64()
    };

    criterion.final_summary();
    println!(
        "\nField encryption on the cached path, throughput as a ratio to raw AES-256-GCM (aws-lc-rs,"
    );
    println!(
        "random nonce, same bytes), interleaved in one run (target >= 0.80); left against raw with no"
    );
    println!(
        "associated data, right against raw authenticating the same associated data as ours (the"
    );
    println!("header and the value's table, column and row):");
    for line in report {
        println!("  {line}");
    }
    println!(
        "Decryption per call (the keyring's cache and lookup, the format's parse, AAD and wipe):"
    );
    for line in costs {
        println!("  {line}");
    }
    println!(
        "Blind index (SSN, normalise + HMAC-SHA256 + truncate): {:.0} per second on one core",
        index_rate
    );
}
