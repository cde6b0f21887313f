//! `matmul_peak`: this CPU's f32 matmul throughput through candle (one 1024×1024×1024
//! sgemm, the gemm crate candle calls), the ceiling the scoring workloads are held against.
//! Throughput is in FLOPs (2·n³), so criterion's Gelem/s is GFLOP/s. At
//! `GOODHART_BENCH_THREADS=1` it is the single-thread peak; at N it is the gemm crate's
//! N-thread peak (this bench alone lets candle's matmul use the work pool's N threads).

#[macro_use]
mod common;

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, Criterion, Throughput};

fn matmul_peak(c: &mut Criterion) {
    // candle's matmul reads its thread count from RAYON_NUM_THREADS at every call; the
    // start-up set it to 1 as a run does.
    std::env::set_var("RAYON_NUM_THREADS", common::threads().to_string());
    let n = 1024;
    let a = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu).unwrap();
    let b = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu).unwrap();
    assert_eq!(a.dtype(), DType::F32);
    let mut g = common::group(c);
    g.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
    g.bench_function("matmul_peak", |bencher| bencher.iter(|| a.matmul(&b).unwrap()));
    g.finish();
}

criterion_group!(benches, matmul_peak);
bench_main!(benches);
