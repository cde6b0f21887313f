//! Device selection: CPU always; CUDA when built with the `cuda` feature.
//!
//! A `cuda` build links the NVIDIA driver library (candle's CUDA backend links libcuda.so.1
//! and the CUDA 13 libraries by name), so it starts only where they are installed; there,
//! `--device cuda` without a usable GPU is one error line with the driver's reason.

use candle_core::Device;

use crate::error::{Error, Result};

/// Parses `cpu` or `cuda` (or `cuda:N`) into a device.
pub fn parse(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        n if n == "cuda" || n.starts_with("cuda:") => cuda(n),
        other => Err(Error::Device {
            name: other.to_string(),
            reason: "unknown device; use cpu or cuda".into(),
        }),
    }
}

/// Checks that `name` names a device (`cpu`, `cuda`, `cuda:N`) without opening it: for
/// scripts that will run elsewhere.
pub fn parse_name(name: &str) -> Result<()> {
    let ok = name == "cpu" || name == "cuda" || name.strip_prefix("cuda:").is_some_and(|n| n.parse::<usize>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::Device {
            name: name.to_string(),
            reason: "unknown device; use cpu, cuda or cuda:N".into(),
        })
    }
}

#[cfg(feature = "cuda")]
fn cuda(name: &str) -> Result<Device> {
    let ordinal = match name.strip_prefix("cuda:") {
        Some(n) => n.parse::<usize>().map_err(|_| Error::Device {
            name: name.to_string(),
            reason: "ordinal must be a number".into(),
        })?,
        None => 0,
    };
    // The driver's or cuBLAS's error, first line only: the rest is a backtrace.
    Device::new_cuda(ordinal).map_err(|e| Error::Device {
        name: name.to_string(),
        reason: format!("no CUDA device {ordinal}: {}", e.to_string().lines().next().unwrap_or("unknown error").trim()),
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda(name: &str) -> Result<Device> {
    Err(Error::Device {
        name: name.to_string(),
        reason: "this build has no CUDA support; build one with scripts/cuda-build (cargo build --features cuda)".into(),
    })
}

/// Name of a device for manifests.
pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda".into(),
        Device::Metal(_) => "metal".into(),
    }
}
