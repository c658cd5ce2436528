//! Picking the libtorch device.

use super::TrainError;
use tch::Device;

/// Loads `libtorch_cuda.so` so libtorch registers its CUDA backend. The linker drops it
/// (`--as-needed`) because no symbol of it is referenced; on the CPU install it is absent and
/// the failure is harmless.
fn load_cuda_backend() -> bool {
    #[cfg(unix)]
    {
        use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
        static LOADED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *LOADED.get_or_init(|| {
            // SAFETY: loading libtorch's own CUDA library; its initialisers only register
            // kernels with the already-loaded libtorch. The handle is leaked on purpose.
            match unsafe { Library::open(Some("libtorch_cuda.so"), RTLD_NOW | RTLD_GLOBAL) } {
                Ok(lib) => {
                    std::mem::forget(lib);
                    true
                }
                Err(_) => false,
            }
        })
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// `auto` (CUDA when present, else CPU), `cpu` or `cuda` / `cuda:N`.
pub fn select_device(pref: &str) -> Result<Device, TrainError> {
    match pref {
        "cpu" => Ok(Device::Cpu),
        "auto" => {
            load_cuda_backend();
            Ok(if tch::Cuda::is_available() { Device::Cuda(0) } else { Device::Cpu })
        }
        p if p == "cuda" || p.starts_with("cuda:") => {
            let idx: usize = p.strip_prefix("cuda:").map(|s| s.parse()).transpose().map_err(|_| TrainError::Device(format!("bad device '{p}'")))?.unwrap_or(0);
            load_cuda_backend();
            if !tch::Cuda::is_available() {
                return Err(TrainError::Device(
                    "--device cuda asked for, but libtorch sees no CUDA device (the CPU set-up has no CUDA \
                     kernels: run `bash tools/setup-native.sh --gpu` and rebuild)"
                        .into(),
                ));
            }
            if idx as i64 >= tch::Cuda::device_count() {
                return Err(TrainError::Device(format!("cuda:{idx} does not exist ({} devices)", tch::Cuda::device_count())));
            }
            Ok(Device::Cuda(idx))
        }
        o => Err(TrainError::Device(format!("unknown device '{o}' (expected auto, cpu, cuda or cuda:N)"))),
    }
}

/// Readable name of a device for logs and provenance.
pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        o => format!("{o:?}"),
    }
}
