//! A cache prefetch hint, for walks whose next memory access is known a few
//! steps ahead (graph traversal, pair lookups over random rows).
#![allow(unsafe_code)]

/// Asks the CPU to bring the cache line holding `x` closer; does nothing on
/// other architectures. Never faults and never changes what a program computes.
#[inline(always)]
pub(crate) fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` only hints the cache and cannot fault; the
    // pointer comes from a live reference, and SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (x as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}
