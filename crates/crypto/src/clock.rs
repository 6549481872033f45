//! A coarse monotonic clock for the key caches' time-to-live.
//!
//! Every field decryption checks its cached column key's age. `Instant::now` reads the TSC
//! through the vDSO (about 25 ns on these machines, a fifth of decrypting a short field);
//! the kernel's coarse clock is a read of its last tick (a few ns), and a tick (1 to 4 ms) is
//! far finer than a time-to-live of minutes. Neither is wall-clock time, so neither jumps.

use std::time::Duration;

/// Time since an arbitrary fixed point, at the kernel tick's resolution.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn now() -> Duration {
    let time = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    Duration::new(
        u64::try_from(time.tv_sec).unwrap_or(0),
        u32::try_from(time.tv_nsec).unwrap_or(0),
    )
}

/// Elsewhere, the standard monotonic clock since the first call.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn now() -> Duration {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn never_goes_back_and_follows_real_time() {
        // Each coarse read is bracketed by standard ones, so a pause of the test thread
        // between two reads widens the bounds instead of failing the test.
        let (before_start, start, after_start) = (Instant::now(), now(), Instant::now());
        std::thread::sleep(Duration::from_millis(60));
        let (before_end, end, after_end) = (Instant::now(), now(), Instant::now());
        assert!(end >= start);
        let elapsed = end - start;
        // The coarse clock may lag the standard one by up to a kernel tick (at most 10 ms).
        let tick = Duration::from_millis(10);
        assert!(elapsed + tick >= before_end - after_start, "{elapsed:?}");
        assert!(elapsed <= after_end - before_start + tick, "{elapsed:?}");
    }
}
