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

/// What `vqad serve` needs instead: bounded memory before throughput. Blocks of 4 MiB and more
/// (request bodies, decoded images) get their own mapping again and go back to the kernel when
/// freed; smaller ones (a prior pass's arrays at the paper shape are 2 MiB) stay in the heap as
/// above. Without this, freed request buffers stayed in whichever of glibc's per-thread arenas
/// served them, and a burst of large frames held within a 256 MiB in-flight budget left the
/// server 293 MiB above its warm peak (`tools/bench-hostile.sh`). A fixed threshold also turns
/// off glibc's dynamic one, which would otherwise climb to 32 MiB after the first large free.
/// `VQAD_MALLOC=system` keeps glibc's defaults.
pub fn for_serving() -> bool {
    if std::env::var_os("VQAD_MALLOC").is_some_and(|v| v == "system") {
        return false;
    }
    apply_serving()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply_serving() -> bool {
    // SAFETY: mallopt only changes allocator parameters (glibc takes its own lock); the values
    // are within glibc's documented ranges (65536 is its default M_MMAP_MAX).
    unsafe { libc::mallopt(libc::M_MMAP_MAX, 65536) == 1 && libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply_serving() -> bool {
    false
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
