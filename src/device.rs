//! Device selection: CPU always; CUDA when built with the `cuda` feature.

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
    Device::new_cuda(ordinal).map_err(|e| Error::Device {
        name: name.to_string(),
        reason: e.to_string().lines().next().unwrap_or("").to_string(),
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda(name: &str) -> Result<Device> {
    Err(Error::Device {
        name: name.to_string(),
        reason: "this build has no CUDA support; rebuild with `--features cuda`".into(),
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
