//! The CPU a run computed on, and which kernels its arithmetic took there, for
//! `manifest.json` and the report's title line.
//!
//! Three things pick a CPU kernel at run time, so one binary rounds differently on different
//! machines:
//!
//! - candle's matmuls go through the `gemm` crate, which takes its AVX2+FMA kernel when the
//!   CPU has FMA (`is_x86_feature_detected!`) and its scalar one (a multiply, then an add:
//!   two roundings) otherwise. Its AVX-512 kernel is behind gemm's `x86-v4` cargo feature,
//!   which nothing here enables: AVX-512 is never used. gemm also sums a product's inner
//!   dimension in blocks whose length it derives from the L1 data cache it reads from
//!   `/sys/devices/system/cpu` (sets × ways): a product larger than 64 × 64 over more than
//!   512 terms is summed in blocks of up to [`Cpu::matmul_k_block`] terms, so two CPUs with
//!   the same instruction set but another L1 geometry add the partial sums differently.
//! - goodhart's fused kernels (`model::ops`): AVX2+FMA when the CPU has both, else portable.
//! - candle's sums over the last dimensions: AVX2 (8 lanes × 4) when the CPU has it, else
//!   one running sum.
//!
//! Runs whose `kernels` strings (and C libraries, whose `exp` and `log` also pick an FMA
//! variant at run time) agree compute the same numbers.

use serde_json::{json, Value};

/// What [`describe`] reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Cpu {
    /// The CPU's model name (`/proc/cpuinfo`), or `unknown`.
    pub model: String,
    /// `std::env::consts::ARCH`.
    pub arch: &'static str,
    /// The x86-64 extensions the kernels could use, as `is_x86_feature_detected!` sees them
    /// (empty on other architectures).
    pub features: Vec<&'static str>,
    /// gemm's kernel: `avx2+fma` or `scalar` (x86-64), `neon` or `scalar` (aarch64).
    pub matmul: &'static str,
    /// The longest block gemm sums a large product's inner dimension in (x86-64 only).
    pub matmul_k_block: Option<usize>,
    /// goodhart's fused kernels: `avx2+fma` or `portable`.
    pub fused: &'static str,
    /// candle's sums over the last dimensions: `avx2`, `neon` or `scalar`.
    pub sums: &'static str,
    /// The caches as gemm sees them: (name, bytes, ways, line bytes) for L1 data, L2, L3.
    pub caches: Vec<(&'static str, usize, usize, usize)>,
    /// The C library (its `exp`, `log`, `tanh` are the ones `f32::exp` etc. call).
    pub libc: String,
}

impl Cpu {
    /// One line to compare between runs: equal strings (with equal C libraries) mean the same
    /// kernels and blocking.
    pub fn kernels(&self) -> String {
        let block = self.matmul_k_block.map(|k| format!(" in k blocks ≤ {k}")).unwrap_or_default();
        format!("matmul {}{block}, fused {}, sums {}", self.matmul, self.fused, self.sums)
    }

    /// The manifest's `cpu` object.
    pub fn to_json(&self) -> Value {
        let caches: serde_json::Map<String, Value> = self
            .caches
            .iter()
            .map(|&(name, bytes, ways, line)| (name.to_string(), json!({ "bytes": bytes, "ways": ways, "line_bytes": line })))
            .collect();
        json!({
            "model": self.model,
            "arch": self.arch,
            "features": self.features,
            "matmul_kernel": self.matmul,
            "matmul_k_block": self.matmul_k_block,
            "fused_kernels": self.fused,
            "sum_kernel": self.sums,
            "kernels": self.kernels(),
            "caches": caches,
            "libc": self.libc,
        })
    }
}

/// This machine's CPU and the kernels this process takes on it.
pub fn describe() -> Cpu {
    let info = *gemm_common::cache::CACHE_INFO;
    let caches = ["l1d", "l2", "l3"]
        .into_iter()
        .zip(info)
        .map(|(name, c)| (name, c.cache_bytes, c.associativity, c.cache_line_bytes))
        .collect();
    Cpu {
        model: model_name().unwrap_or_else(|| "unknown".into()),
        arch: std::env::consts::ARCH,
        features: features(),
        matmul: matmul_kernel(),
        matmul_k_block: matmul_k_block(),
        fused: if crate::model::ops::fused_avx2() { "avx2+fma" } else { "portable" },
        sums: if candle_core::utils::with_avx() {
            "avx2"
        } else if candle_core::utils::with_neon() {
            "neon"
        } else {
            "scalar"
        },
        caches,
        libc: libc_version(),
    }
}

fn model_name() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| matches!(k.trim(), "model name" | "Model" | "cpu model"))
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

#[cfg(target_arch = "x86_64")]
fn features() -> Vec<&'static str> {
    macro_rules! detected {
        ($($f:tt),*) => { [$(($f, std::is_x86_feature_detected!($f))),*] };
    }
    detected!("sse2", "sse3", "ssse3", "sse4.1", "sse4.2", "avx", "avx2", "fma", "f16c", "avx512f")
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect()
}

#[cfg(not(target_arch = "x86_64"))]
fn features() -> Vec<&'static str> {
    Vec::new()
}

/// gemm 0.19's own rule (`gemm_common::gemm_def!`'s `init_gemm_fn`, without its `x86-v4`
/// feature).
fn matmul_kernel() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("fma") {
            "avx2+fma"
        } else {
            "scalar"
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            "neon"
        } else {
            "scalar"
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "scalar"
    }
}

/// gemm's inner-dimension block for a large f32 product, from its own blocking rule and
/// cache view, with the micro-kernel shape of the kernel it takes here (f32: AVX2+FMA
/// 16 × 6, scalar 2 × 4).
fn matmul_k_block() -> Option<usize> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    let (mr, nr) = if matmul_kernel() == "avx2+fma" { (16, 6) } else { (2, 4) };
    // k a multiple of any power-of-two block, so the block comes back whole.
    Some(gemm_common::cache::kernel_params(4096, 4096, 1 << 16, mr, nr, std::mem::size_of::<f32>()).kc)
}

fn libc_version() -> String {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: glibc returns a static NUL-terminated string.
        let v = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
        format!("glibc {}", v.to_string_lossy())
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        "unknown".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_this_machine_consistently() {
        let cpu = describe();
        assert_eq!(cpu.arch, std::env::consts::ARCH);
        assert_eq!(cpu.caches.len(), 3);
        let (_, l1, ways, line) = cpu.caches[0];
        assert!((4 << 10..=1 << 20).contains(&l1) && ways >= 1 && line >= 16, "{:?}", cpu.caches);
        assert!(cpu.caches[1].1 >= l1, "{:?}", cpu.caches);
        #[cfg(target_arch = "x86_64")]
        {
            assert!(cpu.features.contains(&"sse2"), "{:?}", cpu.features);
            let fma = std::is_x86_feature_detected!("fma");
            assert_eq!(cpu.matmul == "avx2+fma", fma);
            assert_eq!(cpu.features.contains(&"fma"), fma);
            let kc = cpu.matmul_k_block.expect("x86-64 has a k block");
            assert!(kc >= 512, "{kc}");
            assert!(cpu.kernels().contains(&format!("k blocks ≤ {kc}")), "{}", cpu.kernels());
        }
        let j = cpu.to_json();
        for key in ["model", "arch", "features", "matmul_kernel", "fused_kernels", "sum_kernel", "kernels", "caches", "libc"] {
            assert!(!j[key].is_null(), "cpu.{key} missing: {j}");
        }
        assert_eq!(j["caches"]["l1d"]["bytes"], l1);
    }
}
