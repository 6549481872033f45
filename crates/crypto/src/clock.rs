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

    #[test]
    fn never_goes_back_and_follows_real_time() {
        let start = now();
        let real = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(60));
        let later = now();
        assert!(later >= start);
        // Within a few kernel ticks of the standard clock.
        let drift = (later - start).abs_diff(real.elapsed());
        assert!(drift < Duration::from_millis(25), "drift {drift:?}");
    }
}
