//! Process heap settings: keep large freed blocks in the process instead of handing them back
//! to the kernel after every training step or prior pass.
//!
//! Why: glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh
//! `mmap` and returns it with `munmap`, and trims the top of the heap back to the kernel. A
//! PixelSNAIL step allocates attention scores of B·heads·(MN)² floats (128 MiB at batch 16 on
//! a 32×32 grid) and frees them a moment later, so every step faulted in every page anew.
//! Measured on 2 cores (`vqad bench-train --presets small`): kernel time equalled user time;
//! with mmap off and trimming off, prior training went from 16 to 33 tables/s and the VQ-VAE
//! from 84 to 127 images/s; `vqad bench` (ONNX Runtime) 7.1 → 9.3 images/s at batch 8. The
//! cost is that memory once used stays with the process (peak, not steady growth).
//! `VQAD_MALLOC=system` keeps glibc's defaults.

/// Applies the settings above (glibc on Linux only; elsewhere nothing). Returns whether they
/// were applied. Call it first thing in `main`, before large allocations.
pub fn keep_large_blocks() -> bool {
    if std::env::var_os("VQAD_MALLOC").is_some_and(|v| v == "system") {
        return false;
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    // SAFETY: mallopt only changes allocator parameters; it is called before other threads
    // exist, and the values are within glibc's documented ranges.
    unsafe { libc::mallopt(libc::M_MMAP_MAX, 0) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}
