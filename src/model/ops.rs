//! Fused CPU kernels with their own backward, for the transformer's hot path.
//!
//! candle composes layer norm and softmax from many elementwise ops, each allocating its
//! output (and, in backward, a zeroed gradient buffer); its fused versions have no backward.
//! The ops here are candle custom ops: one f32 pass over contiguous rows forward, one
//! backward, both CPU only, single-threaded (goodhart runs candle on one thread and spends
//! the cores on independent models). The hottest loops (layer norm, attention) have an
//! AVX2+FMA version picked at run time and a portable one, unit-tested against each other.
//! The public functions dispatch: on a CPU device they run the fused kernel, elsewhere
//! (CUDA: no CUDA kernels here, `cuda_fwd` is candle's "no cuda implementation" error) the
//! composed candle ops, so models run on every device.
//!
//! - [`layer_norm`]: over the last dim, with weight and bias.
//! - [`softmax_last_dim`]: softmax over the last dim (−∞ entries give probability 0).
//! - [`causal_softmax`]: `softmax(scale · x + causal mask)` over the last dim of attention
//!   scores `(…, t, t_total)`, query i seeing keys `j ≤ t_total − t + i`; the mask is
//!   implicit.
//! - [`add_bias`]: `x + bias` broadcast over leading dims; its backward sums rows in one
//!   pass (candle's reduction over leading dims does a division per element).
//! - [`linear`]: `x · wᵀ + b` over the last dim, optionally followed by ReLU, as one graph
//!   node: candle's backward gives every node (reshapes included) a zeroed gradient buffer
//!   and an add, so one node instead of five saves as many full-size passes.
//! - [`causal_attention`]: softmax(Q Kᵀ / sqrt(head_dim) + causal mask) V straight from the
//!   qkv projection (b, t, 3d) to (b, t, d), heads side by side: no head split, transpose or
//!   copy nodes; the probabilities are kept for the backward pass. (Generation with a KV
//!   cache keeps candle's matmuls and [`causal_softmax`].)
//!
//! The fused functions (`fused_*`) fail on non-CPU devices; tests compare them against the
//! composed candle ops, and [`with_composed`] turns them off on one thread (tests compare
//! whole models on both paths).

use std::cell::Cell;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, D};

type Result<T> = candle_core::Result<T>;

/// The f32 data of a contiguous CPU tensor, or an error naming `op`.
fn rows<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        other => bail!("{op}: f32 only, got {:?}", other.dtype()),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{op}: needs a contiguous input"),
    }
}

fn is_cpu_f32(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

thread_local! {
    static COMPOSED: Cell<bool> = const { Cell::new(false) };
}

/// Whether the dispatching functions (and the models) take the fused kernels for `x`: an
/// f32 tensor on the CPU, outside [`with_composed`].
pub fn fused_for(x: &Tensor) -> bool {
    is_cpu_f32(x) && !COMPOSED.with(Cell::get)
}

/// Runs `f` with the fused kernels off on this thread: every dispatching function (and so
/// every model forward) takes candle's composed ops, as on a non-CPU device. For tests and
/// benchmarks that compare the two paths; gradients follow the path the forward took.
pub fn with_composed<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            COMPOSED.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(COMPOSED.with(|c| c.replace(true)));
    f()
}

fn check_cpu(x: &Tensor, op: &str) -> Result<()> {
    if !is_cpu_f32(x) {
        bail!("{op}: the fused kernel runs on CPU f32 tensors only (got {:?} on {:?})", x.dtype(), x.device())
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Layer norm

/// Per row: mean, and s = sqrt(var + eps); the same arithmetic in forward and backward.
#[inline(always)]
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let inv_d = (1.0 / x.len() as f64) as f32;
    let mean = x.iter().sum::<f32>() * inv_d;
    let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() * inv_d;
    (mean, (var + eps).sqrt())
}

/// y = (x − mean) / s · w + b per row of x (rows of w.len()).
fn layer_norm_fwd(x: &[f32], w: &[f32], b: &[f32], eps: f32, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { layer_norm_fwd_avx2(x, w, b, eps, y) };
    }
    layer_norm_fwd_portable(x, w, b, eps, y)
}

fn layer_norm_fwd_portable(x: &[f32], w: &[f32], b: &[f32], eps: f32, y: &mut [f32]) {
    let d = w.len();
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let (mean, s) = row_stats(xr, eps);
        for (((y, &v), &w), &b) in yr.iter_mut().zip(xr).zip(w).zip(b) {
            *y = (v - mean) / s * w + b;
        }
    }
}

/// Backward of [`layer_norm_fwd`] into `out` ((rows + 2) · d, zeroed): dx per row, then dw
/// and db.
fn layer_norm_bwd(x: &[f32], w: &[f32], g: &[f32], eps: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { layer_norm_bwd_avx2(x, w, g, eps, out) };
    }
    layer_norm_bwd_portable(x, w, g, eps, out)
}

fn layer_norm_bwd_portable(x: &[f32], w: &[f32], g: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    let n = x.len() / d;
    let inv_d = (1.0 / d as f64) as f32;
    let (dx, dwb) = out.split_at_mut(n * d);
    let (dw, db) = dwb.split_at_mut(d);
    let mut xhat = vec![0f32; d];
    for ((xr, gr), dxr) in x.chunks_exact(d).zip(g.chunks_exact(d)).zip(dx.chunks_exact_mut(d)) {
        let (mean, s) = row_stats(xr, eps);
        let (mut sum_gw, mut sum_gwx) = (0f32, 0f32);
        for j in 0..d {
            let xh = (xr[j] - mean) / s;
            xhat[j] = xh;
            let gw = gr[j] * w[j];
            sum_gw += gw;
            sum_gwx += gw * xh;
            dw[j] += gr[j] * xh;
            db[j] += gr[j];
        }
        let (m1, m2) = (sum_gw * inv_d, sum_gwx * inv_d);
        for j in 0..d {
            dxr[j] = (gr[j] * w[j] - m1 - xhat[j] * m2) / s;
        }
    }
}

/// Sum of the 8 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn hsum_avx2(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// Mean and s = sqrt(var + eps) of one row, 8 lanes at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn row_stats_avx2(x: &[f32], eps: f32) -> (f32, f32) {
    use std::arch::x86_64::*;
    let d = x.len();
    let (n8, xp) = (d / 8 * 8, x.as_ptr());
    let inv_d = (1.0 / d as f64) as f32;
    let mut acc = _mm256_setzero_ps();
    for c in (0..n8).step_by(8) {
        acc = _mm256_add_ps(acc, _mm256_loadu_ps(xp.add(c)));
    }
    let mut sum = hsum_avx2(acc);
    for &v in &x[n8..] {
        sum += v;
    }
    let mean = sum * inv_d;
    let mv = _mm256_set1_ps(mean);
    let mut acc = _mm256_setzero_ps();
    for c in (0..n8).step_by(8) {
        let dv = _mm256_sub_ps(_mm256_loadu_ps(xp.add(c)), mv);
        acc = _mm256_fmadd_ps(dv, dv, acc);
    }
    let mut var = hsum_avx2(acc);
    for &v in &x[n8..] {
        var += (v - mean) * (v - mean);
    }
    (mean, (var * inv_d + eps).sqrt())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn layer_norm_fwd_avx2(x: &[f32], w: &[f32], b: &[f32], eps: f32, y: &mut [f32]) {
    use std::arch::x86_64::*;
    let d = w.len();
    let n8 = d / 8 * 8;
    let (wp, bp) = (w.as_ptr(), b.as_ptr());
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let (mean, s) = row_stats_avx2(xr, eps);
        let (mv, sv) = (_mm256_set1_ps(mean), _mm256_set1_ps(s));
        let (xp, yp) = (xr.as_ptr(), yr.as_mut_ptr());
        for c in (0..n8).step_by(8) {
            let xh = _mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(xp.add(c)), mv), sv);
            _mm256_storeu_ps(yp.add(c), _mm256_fmadd_ps(xh, _mm256_loadu_ps(wp.add(c)), _mm256_loadu_ps(bp.add(c))));
        }
        for j in n8..d {
            yr[j] = (xr[j] - mean) / s * w[j] + b[j];
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn layer_norm_bwd_avx2(x: &[f32], w: &[f32], g: &[f32], eps: f32, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let d = w.len();
    let n = x.len() / d;
    let n8 = d / 8 * 8;
    let inv_d = (1.0 / d as f64) as f32;
    let (dx, dwb) = out.split_at_mut(n * d);
    let (dw, db) = dwb.split_at_mut(d);
    let (wp, dwp, dbp) = (w.as_ptr(), dw.as_mut_ptr(), db.as_mut_ptr());
    for ((xr, gr), dxr) in x.chunks_exact(d).zip(g.chunks_exact(d)).zip(dx.chunks_exact_mut(d)) {
        let (mean, s) = row_stats_avx2(xr, eps);
        let (mv, sv) = (_mm256_set1_ps(mean), _mm256_set1_ps(s));
        let (xp, gp, dxp) = (xr.as_ptr(), gr.as_ptr(), dxr.as_mut_ptr());
        let (mut a1, mut a2) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for c in (0..n8).step_by(8) {
            let xh = _mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(xp.add(c)), mv), sv);
            let gv = _mm256_loadu_ps(gp.add(c));
            let gw = _mm256_mul_ps(gv, _mm256_loadu_ps(wp.add(c)));
            a1 = _mm256_add_ps(a1, gw);
            a2 = _mm256_fmadd_ps(gw, xh, a2);
            _mm256_storeu_ps(dwp.add(c), _mm256_fmadd_ps(gv, xh, _mm256_loadu_ps(dwp.add(c))));
            _mm256_storeu_ps(dbp.add(c), _mm256_add_ps(gv, _mm256_loadu_ps(dbp.add(c))));
        }
        let (mut sum_gw, mut sum_gwx) = (hsum_avx2(a1), hsum_avx2(a2));
        for j in n8..d {
            let xh = (xr[j] - mean) / s;
            let gw = gr[j] * w[j];
            sum_gw += gw;
            sum_gwx += gw * xh;
            dw[j] += gr[j] * xh;
            db[j] += gr[j];
        }
        let (m1, m2) = (sum_gw * inv_d, sum_gwx * inv_d);
        let (m1v, m2v) = (_mm256_set1_ps(m1), _mm256_set1_ps(m2));
        for c in (0..n8).step_by(8) {
            let xh = _mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(xp.add(c)), mv), sv);
            let gw = _mm256_mul_ps(_mm256_loadu_ps(gp.add(c)), _mm256_loadu_ps(wp.add(c)));
            let num = _mm256_sub_ps(_mm256_sub_ps(gw, m1v), _mm256_mul_ps(xh, m2v));
            _mm256_storeu_ps(dxp.add(c), _mm256_div_ps(num, sv));
        }
        for j in n8..d {
            let xh = (xr[j] - mean) / s;
            dxr[j] = (gr[j] * w[j] - m1 - xh * m2) / s;
        }
    }
}

struct LayerNormOp {
    eps: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "goodhart-layer-norm"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = rows(sx, lx, self.name())?;
        let (w, b) = (rows(sw, lw, self.name())?, rows(sb, lb, self.name())?);
        let mut y = vec![0f32; x.len()];
        layer_norm_fwd(x, w, b, self.eps, &mut y);
        Ok((CpuStorage::F32(y), lx.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = w.elem_count();
        let n = x.elem_count() / d;
        let packed = x.apply_op3_no_bwd(w, &grad.contiguous()?, &LayerNormBwd { eps: self.eps })?;
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dw = packed.narrow(0, n, 1)?.reshape(w.shape())?;
        let db = packed.narrow(0, n + 1, 1)?.reshape(w.shape())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// (x, w, dy) → packed (rows + 2, d): dx rows, then dw, then db.
struct LayerNormBwd {
    eps: f32,
}

impl CustomOp3 for LayerNormBwd {
    fn name(&self) -> &'static str {
        "goodhart-layer-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = rows(sx, lx, self.name())?;
        let (w, g) = (rows(sw, lw, self.name())?, rows(sg, lg, self.name())?);
        let d = w.len();
        let n = x.len() / d;
        let mut out = vec![0f32; (n + 2) * d];
        layer_norm_bwd(x, w, g, self.eps, &mut out);
        Ok((CpuStorage::F32(out), Shape::from((n + 2, d))))
    }
}

/// Fused layer norm over the last dim (CPU f32 only); gradients reach x, weight and bias.
pub fn fused_layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
    check_cpu(x, "layer_norm")?;
    let d = x.dim(D::Minus1)?;
    if weight.dims1()? != d || bias.dims1()? != d {
        bail!("layer_norm: weight {:?} and bias {:?} must be ({d},)", weight.shape(), bias.shape())
    }
    x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, LayerNormOp { eps })
}

/// Layer norm over the last dim: fused on CPU, candle's composed ops elsewhere.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
    if fused_for(x) {
        fused_layer_norm(x, weight, bias, eps)
    } else {
        candle_nn::ops::layer_norm_slow(x, weight, bias, eps)
    }
}

// ---------------------------------------------------------------------------------------------
// Softmax

/// Softmax of `scale · x` over the last dim. With `causal`, x is `(…, t, t_total)` and row
/// i (mod t) sees only its first `t_total − t + i + 1` entries; the others get 0.
struct SoftmaxOp {
    scale: f32,
    causal: bool,
}

impl SoftmaxOp {
    fn check(&self, shape: &Shape) -> Result<(usize, usize)> {
        let dims = shape.dims();
        let n = *dims.last().unwrap_or(&0);
        if n == 0 {
            bail!("softmax: empty last dim in {shape:?}")
        }
        let t = if self.causal {
            if dims.len() < 2 || dims[dims.len() - 2] > n {
                bail!("causal_softmax: needs (…, t, t_total) with t ≤ t_total, got {shape:?}")
            }
            dims[dims.len() - 2]
        } else {
            1
        };
        Ok((n, t))
    }

    /// Visible entries of row `r`.
    #[inline(always)]
    fn visible(&self, r: usize, n: usize, t: usize) -> usize {
        if self.causal {
            n - t + r % t + 1
        } else {
            n
        }
    }
}

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "goodhart-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = rows(s, l, self.name())?;
        let (n, t) = self.check(l.shape())?;
        let mut y: Vec<f32> = Vec::with_capacity(x.len());
        for (r, xr) in x.chunks_exact(n).enumerate() {
            let k = self.visible(r, n, t);
            let start = y.len();
            if self.scale == 1.0 {
                y.extend_from_slice(&xr[..k]);
            } else {
                y.extend(xr[..k].iter().map(|&v| v * self.scale));
            }
            let yr = &mut y[start..];
            let max = yr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for v in yr.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            for v in yr.iter_mut() {
                *v /= sum;
            }
            y.resize(start + n, 0.0);
        }
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let bwd = SoftmaxBwd { scale: self.scale };
        Ok(Some(y.apply_op2_no_bwd(&grad.contiguous()?, &bwd)?))
    }
}

/// (y, dy) → dx = scale · y · (dy − ⟨dy, y⟩) per row.
struct SoftmaxBwd {
    scale: f32,
}

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "goodhart-softmax-bwd"
    }

    fn cpu_fwd(&self, sy: &CpuStorage, ly: &Layout, sg: &CpuStorage, lg: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, g) = (rows(sy, ly, self.name())?, rows(sg, lg, self.name())?);
        let n = ly.shape().dims().last().copied().unwrap_or(1).max(1);
        let mut dx = Vec::with_capacity(y.len());
        for (yr, gr) in y.chunks_exact(n).zip(g.chunks_exact(n)) {
            let dot: f32 = yr.iter().zip(gr).map(|(&y, &g)| y * g).sum();
            dx.extend(yr.iter().zip(gr).map(|(&y, &g)| y * (g - dot) * self.scale));
        }
        Ok((CpuStorage::F32(dx), ly.shape().clone()))
    }
}

/// Fused softmax over the last dim (CPU f32 only); −∞ entries get probability 0.
pub fn fused_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    check_cpu(x, "softmax_last_dim")?;
    x.contiguous()?.apply_op1(SoftmaxOp { scale: 1.0, causal: false })
}

/// Softmax over the last dim: fused on CPU, candle's composed ops elsewhere.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if fused_for(x) {
        fused_softmax_last_dim(x)
    } else {
        candle_nn::ops::softmax(x, D::Minus1)
    }
}

/// Fused `softmax(scale · x + causal mask)` over the last dim of `x: (…, t, t_total)`
/// (CPU f32 only): row i of each `(t, t_total)` block sees keys `j ≤ t_total − t + i`.
pub fn fused_causal_softmax(x: &Tensor, scale: f64) -> Result<Tensor> {
    check_cpu(x, "causal_softmax")?;
    x.contiguous()?.apply_op1(SoftmaxOp { scale: scale as f32, causal: true })
}

/// The composed reference of [`fused_causal_softmax`]: `x · scale`, plus the additive
/// causal mask (0 / −∞), then candle's softmax.
pub fn composed_causal_softmax(x: &Tensor, scale: f64) -> Result<Tensor> {
    let (t, total) = (x.dim(D::Minus2)?, x.dim(D::Minus1)?);
    let x = (x * scale)?;
    let x = if t > 1 {
        x.broadcast_add(&causal_mask(t, total - t, x.device())?)?
    } else {
        x
    };
    candle_nn::ops::softmax(&x, D::Minus1)
}

/// `softmax(scale · x + causal mask)`: fused on CPU, composed elsewhere.
pub fn causal_softmax(x: &Tensor, scale: f64) -> Result<Tensor> {
    if fused_for(x) {
        fused_causal_softmax(x, scale)
    } else {
        composed_causal_softmax(x, scale)
    }
}

/// Additive mask (t, offset + t): 0 where query i may see key j (j ≤ offset + i), −∞ else.
pub fn causal_mask(t: usize, offset: usize, device: &candle_core::Device) -> Result<Tensor> {
    let total = offset + t;
    let m: Vec<f32> = (0..t)
        .flat_map(|i| (0..total).map(move |j| if j <= offset + i { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Tensor::from_vec(m, (t, total), device)
}

// ---------------------------------------------------------------------------------------------
// Bias add

/// x + bias, bias broadcast over x's leading dims (bias's shape = x's trailing dims).
struct AddBiasOp;

impl CustomOp2 for AddBiasOp {
    fn name(&self) -> &'static str {
        "goodhart-add-bias"
    }

    fn cpu_fwd(&self, sx: &CpuStorage, lx: &Layout, sb: &CpuStorage, lb: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, b) = (rows(sx, lx, self.name())?, rows(sb, lb, self.name())?);
        let mut y = Vec::with_capacity(x.len());
        for xr in x.chunks_exact(b.len()) {
            y.extend(xr.iter().zip(b).map(|(&x, &b)| x + b));
        }
        Ok((CpuStorage::F32(y), lx.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let db = grad.contiguous()?.apply_op1_no_bwd(&SumRows { shape: b.shape().clone() })?;
        Ok((Some(grad.clone()), Some(db)))
    }
}

/// Sums the rows of a contiguous tensor viewed as (rows, shape.elem_count()) into `shape`.
struct SumRows {
    shape: Shape,
}

impl CustomOp1 for SumRows {
    fn name(&self) -> &'static str {
        "goodhart-sum-rows"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = rows(s, l, self.name())?;
        let m = self.shape.elem_count();
        let mut out = vec![0f32; m];
        for gr in g.chunks_exact(m) {
            for (o, &v) in out.iter_mut().zip(gr) {
                *o += v;
            }
        }
        Ok((CpuStorage::F32(out), self.shape.clone()))
    }
}

/// Fused `x + bias` (CPU f32 only), bias's shape being x's trailing dims.
pub fn fused_add_bias(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    check_cpu(x, "add_bias")?;
    let (xd, bd) = (x.dims(), bias.dims());
    if bd.len() > xd.len() || xd[xd.len() - bd.len()..] != *bd || bias.elem_count() == 0 {
        bail!("add_bias: bias {:?} must match the trailing dims of x {:?}", bias.shape(), x.shape())
    }
    x.contiguous()?.apply_op2(&bias.contiguous()?, AddBiasOp)
}

/// `x + bias` broadcast over leading dims: fused on CPU, `broadcast_add` elsewhere.
pub fn add_bias(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if fused_for(x) {
        fused_add_bias(x, bias)
    } else {
        x.broadcast_add(bias)
    }
}

// ---------------------------------------------------------------------------------------------
// Linear (+ ReLU)

/// `relu?(x · wᵀ + b)` over the last dim of a contiguous x; w is (out, in).
struct LinearOp {
    relu: bool,
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        if self.relu {
            "goodhart-linear-relu"
        } else {
            "goodhart-linear"
        }
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (out, k) = lw.shape().dims2()?;
        let n = lx.shape().elem_count() / k.max(1);
        let (Some((x0, _)), Some((w0, _))) = (lx.contiguous_offsets(), lw.contiguous_offsets()) else {
            bail!("{}: needs contiguous x and weight", self.name())
        };
        let b = rows(sb, lb, self.name())?;
        // x as (n, k) times wᵀ, a (k, out) view of w with strides (1, k): no copy.
        let x_l = Layout::contiguous_with_offset((n, k), x0);
        let wt_l = Layout::new(Shape::from((k, out)), vec![1, k], w0);
        let y = sx.matmul(sw, (1, n, out, k), &x_l, &wt_l)?;
        let CpuStorage::F32(mut y) = y else { bail!("{}: f32 only", self.name()) };
        for yr in y.chunks_exact_mut(out) {
            for (v, &b) in yr.iter_mut().zip(b) {
                *v += b;
                if self.relu {
                    *v = v.max(0.0);
                }
            }
        }
        let mut dims = lx.shape().dims().to_vec();
        *dims.last_mut().expect("rank ≥ 1") = out;
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (out, k) = w.dims2()?;
        let rows = x.elem_count() / k.max(1);
        // g: the gradient before the ReLU (zero where it clipped), then db = Σ rows of g.
        let packed = res.apply_op2_no_bwd(&grad.contiguous()?, &ReluMaskSum { relu: self.relu })?;
        let g = packed.narrow(0, 0, rows)?;
        let db = packed.narrow(0, rows, 1)?.reshape(out)?;
        let dx = g.matmul(w)?.reshape(x.shape())?;
        let dw = g.t()?.matmul(&x.reshape((rows, k))?)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// (y, dy) → packed (rows + 1, out): dy masked by y > 0 (with `relu`, else dy itself) in
/// the first rows, its column sums in the last.
struct ReluMaskSum {
    relu: bool,
}

impl CustomOp2 for ReluMaskSum {
    fn name(&self) -> &'static str {
        "goodhart-linear-bwd"
    }

    fn cpu_fwd(&self, sy: &CpuStorage, ly: &Layout, sg: &CpuStorage, lg: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, g) = (rows(sy, ly, self.name())?, rows(sg, lg, self.name())?);
        let out = ly.shape().dims().last().copied().unwrap_or(1).max(1);
        let n = y.len() / out;
        let mut packed = Vec::with_capacity((n + 1) * out);
        if self.relu {
            packed.extend(y.iter().zip(g).map(|(&y, &g)| if y > 0.0 { g } else { 0.0 }));
        } else {
            packed.extend_from_slice(g);
        }
        let mut sum = vec![0f32; out];
        for gr in packed.chunks_exact(out) {
            for (s, &v) in sum.iter_mut().zip(gr) {
                *s += v;
            }
        }
        packed.extend_from_slice(&sum);
        Ok((CpuStorage::F32(packed), Shape::from((n + 1, out))))
    }
}

/// Fused `relu?(x · wᵀ + b)` over the last dim (CPU f32 only): one graph node.
pub fn fused_linear(x: &Tensor, weight: &Tensor, bias: &Tensor, relu: bool) -> Result<Tensor> {
    check_cpu(x, "linear")?;
    let (out, k) = weight.dims2()?;
    if x.dim(D::Minus1)? != k || bias.dims1()? != out {
        bail!("linear: x {:?}, weight {:?}, bias {:?} do not fit", x.shape(), weight.shape(), bias.shape())
    }
    x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, LinearOp { relu })
}

/// The composed reference of [`fused_linear`]: candle-nn's linear layer, then ReLU.
pub fn composed_linear(x: &Tensor, weight: &Tensor, bias: &Tensor, relu: bool) -> Result<Tensor> {
    use candle_core::Module;
    let y = candle_nn::Linear::new(weight.clone(), Some(bias.clone())).forward(x)?;
    if relu {
        y.relu()
    } else {
        Ok(y)
    }
}

/// `relu?(x · wᵀ + b)`: fused on CPU, candle-nn's linear (and ReLU) elsewhere.
pub fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor, relu: bool) -> Result<Tensor> {
    if fused_for(x) {
        fused_linear(x, weight, bias, relu)
    } else {
        composed_linear(x, weight, bias, relu)
    }
}

// ---------------------------------------------------------------------------------------------
// Causal self-attention

/// Rounds up to a multiple of 8 (one AVX vector of f32), at least 8.
fn pad8(n: usize) -> usize {
    n.div_ceil(8).max(1) * 8
}

/// The attention kernels' vector primitives, so that the bodies compile once portably and
/// once for AVX2 + FMA (picked at run time).
trait Kernels {
    /// y += a · x over the common length.
    fn axpy(y: &mut [f32], a: f32, x: &[f32]);
    /// out[c] = Σ_e a[e] · m[e · stride + c] for c < out.len() (a multiple of 8): a row
    /// vector times a matrix whose rows are `stride` apart, accumulated in registers.
    fn vecmat(out: &mut [f32], a: &[f32], m: &[f32], stride: usize);
    /// s[..k] = softmax(scale · s[..k]); s[k..] = 0 (the masked future). s.len() is a
    /// multiple of 8.
    fn softmax_prefix(s: &mut [f32], k: usize, scale: f32);
}

struct Portable;

impl Kernels for Portable {
    #[inline(always)]
    fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y += a * x;
        }
    }

    #[inline(always)]
    fn vecmat(out: &mut [f32], a: &[f32], m: &[f32], stride: usize) {
        out.iter_mut().for_each(|x| *x = 0.0);
        let n = out.len();
        for (e, &ae) in a.iter().enumerate() {
            Self::axpy(out, ae, &m[e * stride..e * stride + n]);
        }
    }

    #[inline(always)]
    fn softmax_prefix(s: &mut [f32], k: usize, scale: f32) {
        let row = &mut s[..k];
        let mut max = f32::NEG_INFINITY;
        for x in row.iter_mut() {
            *x *= scale;
            max = max.max(*x);
        }
        let mut sum = 0f32;
        for x in row.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        row.iter_mut().for_each(|x| *x /= sum);
        s[k..].iter_mut().for_each(|x| *x = 0.0);
    }
}

#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Kernels for Avx2 {
    #[inline(always)]
    fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        // SAFETY: only reached from the `*_avx2` entry points, which run after detection.
        unsafe { axpy_avx2(y, a, x) }
    }

    #[inline(always)]
    fn vecmat(out: &mut [f32], a: &[f32], m: &[f32], stride: usize) {
        assert!(out.len() % 8 == 0 && (a.is_empty() || m.len() >= (a.len() - 1) * stride + out.len()));
        // SAFETY: as above; the bounds are checked just above.
        unsafe {
            let mut c = 0;
            while c < out.len() {
                match (out.len() - c) / 8 {
                    1 => vecmat_block_avx2::<1>(out, a, m, stride, c),
                    2 => vecmat_block_avx2::<2>(out, a, m, stride, c),
                    3 => vecmat_block_avx2::<3>(out, a, m, stride, c),
                    _ => vecmat_block_avx2::<4>(out, a, m, stride, c),
                }
                c += 32;
            }
        }
    }

    #[inline(always)]
    fn softmax_prefix(s: &mut [f32], k: usize, scale: f32) {
        assert!(s.len() % 8 == 0 && k >= 1 && k <= s.len());
        // SAFETY: as above; lengths checked just above.
        unsafe { softmax_prefix_avx2(s, k, scale) }
    }
}

/// exp of 8 lanes: Cephes' expf (range reduction by ln 2 in two parts, degree-5 polynomial,
/// 2ⁿ through the exponent bits), within a few ulp of `f32::exp` on [−87, 88]; below that
/// it returns ≈ 1e−38 instead of a subnormal or 0. NaN propagates.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn exp_avx2(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    // min/max with x second: a NaN x comes through.
    let x = _mm256_min_ps(_mm256_set1_ps(88.376_26), x);
    let x = _mm256_max_ps(_mm256_set1_ps(-88.376_26), x);
    let fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E), _mm256_set1_ps(0.5)));
    let x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693_359_4), x);
    let x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.121_944_4e-4), x);
    let mut y = _mm256_set1_ps(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5.000_000_1e-1] {
        y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(c));
    }
    let y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0)));
    let pow2n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(0x7f)), 23);
    _mm256_mul_ps(y, _mm256_castsi256_ps(pow2n))
}

/// Max of the 8 lanes (NaN-propagating like the lanes' order allows; softmax of a NaN row
/// is NaN either way).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn hmax_avx2(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    _mm_cvtss_f32(m)
}

/// [`Kernels::softmax_prefix`] on 8 lanes at a time: lanes at or past k are masked to −∞
/// before the max and to 0 after the exp.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn softmax_prefix_avx2(s: &mut [f32], k: usize, scale: f32) {
    use std::arch::x86_64::*;
    let chunks = k.div_ceil(8);
    let p = s.as_mut_ptr();
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let sv = _mm256_set1_ps(scale);
    let neg_inf = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut mx = neg_inf;
    for c in 0..chunks {
        let keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((k - 8 * c) as i32), lane));
        let x = _mm256_blendv_ps(neg_inf, _mm256_mul_ps(_mm256_loadu_ps(p.add(8 * c)), sv), keep);
        _mm256_storeu_ps(p.add(8 * c), x);
        mx = _mm256_max_ps(x, mx);
    }
    let mv = _mm256_set1_ps(hmax_avx2(mx));
    let mut acc = _mm256_setzero_ps();
    for c in 0..chunks {
        let keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((k - 8 * c) as i32), lane));
        let e = _mm256_and_ps(exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(p.add(8 * c)), mv)), keep);
        _mm256_storeu_ps(p.add(8 * c), e);
        acc = _mm256_add_ps(acc, e);
    }
    let sum = _mm256_set1_ps(hsum_avx2(acc));
    for c in 0..chunks {
        _mm256_storeu_ps(p.add(8 * c), _mm256_div_ps(_mm256_loadu_ps(p.add(8 * c)), sum));
    }
    s[8 * chunks..].iter_mut().for_each(|x| *x = 0.0);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn axpy_avx2(y: &mut [f32], a: f32, x: &[f32]) {
    use std::arch::x86_64::*;
    let n = y.len().min(x.len());
    let (yp, xp) = (y.as_mut_ptr(), x.as_ptr());
    let av = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 8 <= n {
        let v = _mm256_fmadd_ps(av, _mm256_loadu_ps(xp.add(i)), _mm256_loadu_ps(yp.add(i)));
        _mm256_storeu_ps(yp.add(i), v);
        i += 8;
    }
    while i < n {
        *yp.add(i) += a * *xp.add(i);
        i += 1;
    }
}

/// Columns c0 .. c0 + 8W of [`Kernels::vecmat`] (fewer when out ends first: then W covers
/// what is left, at most 4 vectors).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn vecmat_block_avx2<const W: usize>(out: &mut [f32], a: &[f32], m: &[f32], stride: usize, c0: usize) {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); W];
    let mp = m.as_ptr().add(c0);
    for (e, &ae) in a.iter().enumerate() {
        let av = _mm256_set1_ps(ae);
        let row = mp.add(e * stride);
        for (w, acc) in acc.iter_mut().enumerate() {
            *acc = _mm256_fmadd_ps(av, _mm256_loadu_ps(row.add(8 * w)), *acc);
        }
    }
    let op = out.as_mut_ptr().add(c0);
    for (w, acc) in acc.iter().enumerate() {
        _mm256_storeu_ps(op.add(8 * w), *acc);
    }
}

/// Whether the fused kernels take their AVX2+FMA versions on this CPU (else the portable
/// ones): for the manifest.
pub fn fused_avx2() -> bool {
    has_avx2()
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Shapes of one attention call: qkv (b, t, 3d) with d = heads · hd.
#[derive(Debug, Clone, Copy)]
struct AttnDims {
    b: usize,
    t: usize,
    d: usize,
    heads: usize,
    hd: usize,
    /// hd and t rounded up to multiples of 8 (scratch row lengths).
    hp: usize,
    tp: usize,
}

impl AttnDims {
    fn new(shape: &Shape, heads: usize) -> Result<Self> {
        let (b, t, d3) = shape.dims3()?;
        if heads == 0 || d3 % (3 * heads) != 0 {
            bail!("causal_attention: qkv {shape:?} is not (b, t, 3 · heads · head_dim) for {heads} heads")
        }
        let d = d3 / 3;
        let hd = d / heads;
        Ok(Self { b, t, d, heads, hd, hp: pad8(hd), tp: pad8(t) })
    }

    /// Copies head `h` of part `part` (0 q, 1 k, 2 v) of batch row `bi` of a (b, t, width)
    /// tensor whose parts start at `part · d`: rows of `hp` (zero-padded) into `dst`.
    #[inline(always)]
    fn gather_rows(&self, src: &[f32], width: usize, bi: usize, part: usize, h: usize, dst: &mut [f32]) {
        for j in 0..self.t {
            let s = (bi * self.t + j) * width + part * self.d + h * self.hd;
            dst[j * self.hp..j * self.hp + self.hd].copy_from_slice(&src[s..s + self.hd]);
        }
    }

    /// As [`gather_rows`](Self::gather_rows), transposed: `hd` rows of `tp` (zero-padded).
    #[inline(always)]
    fn gather_cols(&self, src: &[f32], width: usize, bi: usize, part: usize, h: usize, dst: &mut [f32]) {
        for j in 0..self.t {
            let s = (bi * self.t + j) * width + part * self.d + h * self.hd;
            for e in 0..self.hd {
                dst[e * self.tp + j] = src[s + e];
            }
        }
    }
}

/// softmax(scale · Q Kᵀ + causal mask) V per head, over qkv (b, t, 3d) → (b, t, d) with
/// heads side by side (the layout the output projection reads). Keeps the probabilities
/// (b, heads, t, t) for the backward pass.
struct AttentionOp {
    heads: usize,
    scale: f32,
    probs: std::sync::OnceLock<std::sync::Arc<Vec<f32>>>,
}

#[inline(always)]
fn attention_fwd_body<K: Kernels>(qkv: &[f32], dm: AttnDims, scale: f32, y: &mut [f32], probs: &mut [f32]) {
    let AttnDims { b, t, d, heads, hd, hp, tp } = dm;
    let mut q = vec![0f32; t * hp];
    let mut kt = vec![0f32; hd * tp];
    let mut v = vec![0f32; t * hp];
    let mut s = vec![0f32; tp];
    let mut yrow = vec![0f32; hp];
    for bi in 0..b {
        for h in 0..heads {
            dm.gather_rows(qkv, 3 * d, bi, 0, h, &mut q);
            dm.gather_cols(qkv, 3 * d, bi, 1, h, &mut kt);
            dm.gather_rows(qkv, 3 * d, bi, 2, h, &mut v);
            let p_bh = &mut probs[(bi * heads + h) * t * t..(bi * heads + h + 1) * t * t];
            for i in 0..t {
                // Scores of query i against every key (the future ones are dropped below).
                K::vecmat(&mut s, &q[i * hp..i * hp + hd], &kt, tp);
                let k = i + 1;
                K::softmax_prefix(&mut s, k, scale);
                let p = &mut p_bh[i * t..(i + 1) * t];
                p.copy_from_slice(&s[..t]);
                K::vecmat(&mut yrow, &p[..k], &v, hp);
                let o = (bi * t + i) * d + h * hd;
                y[o..o + hd].copy_from_slice(&yrow[..hd]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attention_fwd_avx2(qkv: &[f32], dm: AttnDims, scale: f32, y: &mut [f32], probs: &mut [f32]) {
    attention_fwd_body::<Avx2>(qkv, dm, scale, y, probs)
}

fn attention_fwd(qkv: &[f32], dm: AttnDims, scale: f32, y: &mut [f32], probs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { attention_fwd_avx2(qkv, dm, scale, y, probs) };
    }
    attention_fwd_body::<Portable>(qkv, dm, scale, y, probs)
}

impl CustomOp1 for AttentionOp {
    fn name(&self) -> &'static str {
        "goodhart-causal-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = rows(s, l, self.name())?;
        let dm = AttnDims::new(l.shape(), self.heads)?;
        let mut y = vec![0f32; dm.b * dm.t * dm.d];
        let mut probs = vec![0f32; dm.b * dm.heads * dm.t * dm.t];
        attention_fwd(qkv, dm, self.scale, &mut y, &mut probs);
        let _ = self.probs.set(std::sync::Arc::new(probs));
        Ok((CpuStorage::F32(y), Shape::from((dm.b, dm.t, dm.d))))
    }

    fn bwd(&self, qkv: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let Some(probs) = self.probs.get() else {
            bail!("{}: backward before forward", self.name())
        };
        let bwd = AttentionBwd { heads: self.heads, scale: self.scale, probs: probs.clone() };
        Ok(Some(qkv.apply_op2_no_bwd(&grad.contiguous()?, &bwd)?))
    }
}

/// (qkv, dy) → d qkv, from the kept probabilities.
struct AttentionBwd {
    heads: usize,
    scale: f32,
    probs: std::sync::Arc<Vec<f32>>,
}

#[inline(always)]
fn attention_bwd_body<K: Kernels>(qkv: &[f32], dy: &[f32], probs: &[f32], dm: AttnDims, scale: f32, dqkv: &mut [f32]) {
    let AttnDims { b, t, d, heads, hd, hp, tp } = dm;
    let mut q = vec![0f32; t * hp];
    let mut k = vec![0f32; t * hp];
    let mut vt = vec![0f32; hd * tp];
    let mut g = vec![0f32; t * hp];
    let mut dq = vec![0f32; t * hp];
    let mut dk = vec![0f32; t * hp];
    let mut dv = vec![0f32; t * hp];
    let mut dp = vec![0f32; tp];
    let mut ds = vec![0f32; tp];
    // Pᵀ and dSᵀ (row j: column j over the queries i ≥ j), so that dK and dV are row
    // vectors times matrices like everything else.
    let mut pt = vec![0f32; t * tp];
    let mut dst = vec![0f32; t * tp];
    for bi in 0..b {
        for h in 0..heads {
            dm.gather_rows(qkv, 3 * d, bi, 0, h, &mut q);
            dm.gather_rows(qkv, 3 * d, bi, 1, h, &mut k);
            dm.gather_cols(qkv, 3 * d, bi, 2, h, &mut vt);
            dm.gather_rows(dy, d, bi, 0, h, &mut g);
            let p_bh = &probs[(bi * heads + h) * t * t..(bi * heads + h + 1) * t * t];
            for i in 0..t {
                let p = &p_bh[i * t..i * t + i + 1];
                // dP_i = dY_i Vᵀ, then dS_i = scale · P_i ∘ (dP_i − ⟨P_i, dP_i⟩).
                K::vecmat(&mut dp, &g[i * hp..i * hp + hd], &vt, tp);
                let dot: f32 = p.iter().zip(&dp).map(|(&p, &x)| p * x).sum();
                for (j, (dsj, (&pj, &dpj))) in ds.iter_mut().zip(p.iter().zip(&dp)).enumerate() {
                    *dsj = pj * (dpj - dot) * scale;
                    dst[j * tp + i] = *dsj;
                    pt[j * tp + i] = pj;
                }
                K::vecmat(&mut dq[i * hp..(i + 1) * hp], &ds[..=i], &k, hp);
            }
            // dK_j = Σ_{i ≥ j} dS_ij Q_i, dV_j = Σ_{i ≥ j} P_ij dY_i.
            for j in 0..t {
                K::vecmat(&mut dk[j * hp..(j + 1) * hp], &dst[j * tp + j..j * tp + t], &q[j * hp..], hp);
                K::vecmat(&mut dv[j * hp..(j + 1) * hp], &pt[j * tp + j..j * tp + t], &g[j * hp..], hp);
            }
            for j in 0..t {
                let o = (bi * t + j) * 3 * d + h * hd;
                dqkv[o..o + hd].copy_from_slice(&dq[j * hp..j * hp + hd]);
                dqkv[o + d..o + d + hd].copy_from_slice(&dk[j * hp..j * hp + hd]);
                dqkv[o + 2 * d..o + 2 * d + hd].copy_from_slice(&dv[j * hp..j * hp + hd]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attention_bwd_avx2(qkv: &[f32], dy: &[f32], probs: &[f32], dm: AttnDims, scale: f32, dqkv: &mut [f32]) {
    attention_bwd_body::<Avx2>(qkv, dy, probs, dm, scale, dqkv)
}

fn attention_bwd(qkv: &[f32], dy: &[f32], probs: &[f32], dm: AttnDims, scale: f32, dqkv: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { attention_bwd_avx2(qkv, dy, probs, dm, scale, dqkv) };
    }
    attention_bwd_body::<Portable>(qkv, dy, probs, dm, scale, dqkv)
}

impl CustomOp2 for AttentionBwd {
    fn name(&self) -> &'static str {
        "goodhart-causal-attention-bwd"
    }

    fn cpu_fwd(&self, sq: &CpuStorage, lq: &Layout, sg: &CpuStorage, lg: &Layout) -> Result<(CpuStorage, Shape)> {
        let (qkv, dy) = (rows(sq, lq, self.name())?, rows(sg, lg, self.name())?);
        let dm = AttnDims::new(lq.shape(), self.heads)?;
        if dy.len() != dm.b * dm.t * dm.d || self.probs.len() != dm.b * dm.heads * dm.t * dm.t {
            bail!("{}: gradient or probabilities do not fit qkv {:?}", self.name(), lq.shape())
        }
        let mut dqkv = vec![0f32; qkv.len()];
        attention_bwd(qkv, dy, &self.probs, dm, self.scale, &mut dqkv);
        Ok((CpuStorage::F32(dqkv), lq.shape().clone()))
    }
}

/// Fused causal self-attention (CPU f32 only): qkv (b, t, 3d), the queries, keys and values
/// side by side, each `heads` heads of d / heads; returns softmax(Q Kᵀ / sqrt(head_dim) +
/// causal mask) V as (b, t, d), heads side by side. One graph node.
pub fn fused_causal_attention(qkv: &Tensor, heads: usize) -> Result<Tensor> {
    check_cpu(qkv, "causal_attention")?;
    let dm = AttnDims::new(qkv.shape(), heads)?;
    let scale = (1.0 / (dm.hd as f64).sqrt()) as f32;
    qkv.contiguous()?.apply_op1(AttentionOp { heads, scale, probs: std::sync::OnceLock::new() })
}

/// The composed reference of [`fused_causal_attention`]: split heads, scores, the scale and
/// additive mask, candle's softmax, values, heads merged.
pub fn composed_causal_attention(qkv: &Tensor, heads: usize) -> Result<Tensor> {
    let dm = AttnDims::new(qkv.shape(), heads)?;
    let AttnDims { b, t, d, hd, .. } = dm;
    let split = |i: usize| -> Result<Tensor> {
        qkv.narrow(2, i * d, d)?.reshape((b, t, heads, hd))?.transpose(1, 2)?.contiguous()
    };
    let (q, k, v) = (split(0)?, split(1)?, split(2)?);
    let att = q.matmul(&k.t()?.contiguous()?)?;
    let att = composed_causal_softmax(&att, 1.0 / (hd as f64).sqrt())?;
    att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))
}

/// Causal self-attention over qkv (b, t, 3d): fused on CPU, composed elsewhere.
pub fn causal_attention(qkv: &Tensor, heads: usize) -> Result<Tensor> {
    if fused_for(qkv) {
        fused_causal_attention(qkv, heads)
    } else {
        composed_causal_attention(qkv, heads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u32) -> Vec<f32> {
        // A small LCG: deterministic values in [-2, 2).
        let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(1664525).wrapping_add(1013904223);
                (x >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
            })
            .collect()
    }

    /// The portable attention bodies agree with the ones the machine dispatches to (AVX2 +
    /// FMA where available), so the fallback is checked on every machine.
    #[test]
    fn portable_attention_kernels_match_the_dispatched_ones() {
        for (b, t, d, heads) in [(2, 22, 40, 4), (3, 7, 8, 2), (1, 13, 48, 4), (2, 1, 16, 1)] {
            let dm = AttnDims::new(&Shape::from((b, t, 3 * d)), heads).unwrap();
            let scale = 1.0 / (dm.hd as f32).sqrt();
            let qkv = noise(b * t * 3 * d, 1);
            let dy = noise(b * t * d, 2);
            let (mut y1, mut p1) = (vec![0f32; b * t * d], vec![0f32; b * heads * t * t]);
            let (mut y2, mut p2) = (y1.clone(), p1.clone());
            attention_fwd_body::<Portable>(&qkv, dm, scale, &mut y1, &mut p1);
            attention_fwd(&qkv, dm, scale, &mut y2, &mut p2);
            let close = |u: &[f32], v: &[f32], what: &str| {
                let diff = u.iter().zip(v).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                assert!(diff < 1e-5, "{what} (b{b} t{t} d{d} heads{heads}): {diff}");
            };
            close(&y1, &y2, "y");
            close(&p1, &p2, "probabilities");
            let (mut g1, mut g2) = (vec![0f32; qkv.len()], vec![0f32; qkv.len()]);
            attention_bwd_body::<Portable>(&qkv, &dy, &p1, dm, scale, &mut g1);
            attention_bwd(&qkv, &dy, &p1, dm, scale, &mut g2);
            close(&g1, &g2, "dqkv");
        }
    }

    /// The dispatched row softmax (its own exp on AVX2) agrees with the portable one (std's
    /// exp) to a few ulp, masks the future to exactly 0 and keeps NaN.
    #[test]
    fn dispatched_softmax_prefix_matches_portable() {
        let dispatched = |s: &mut [f32], k: usize, scale: f32| {
            #[cfg(target_arch = "x86_64")]
            if has_avx2() {
                return Avx2::softmax_prefix(s, k, scale);
            }
            Portable::softmax_prefix(s, k, scale)
        };
        for (n, spread) in [(8, 1.0), (24, 5.0), (32, 40.0), (16, 200.0)] {
            for k in 1..=n {
                let row: Vec<f32> = noise(n, (n * 100 + k) as u32).iter().map(|v| v * spread).collect();
                let (mut a, mut b) = (row.clone(), row.clone());
                Portable::softmax_prefix(&mut a, k, 0.3);
                dispatched(&mut b, k, 0.3);
                for (x, y) in a.iter().zip(&b) {
                    assert!((x - y).abs() <= 1e-6 + 8.0 * f32::EPSILON * x.abs(), "n{n} k{k}: {x} vs {y}");
                }
                assert!(b[k..].iter().all(|&v| v == 0.0));
            }
        }
        let mut row = vec![0.5f32; 8];
        row[2] = f32::NAN;
        dispatched(&mut row, 5, 1.0);
        assert!(row[..5].iter().all(|v| v.is_nan()), "{row:?}");
    }

    /// The portable layer-norm loops agree with the dispatched ones, widths with and without
    /// a remainder past the last multiple of 8.
    #[test]
    fn portable_layer_norm_kernels_match_the_dispatched_ones() {
        for (n, d) in [(7, 40), (5, 13), (3, 8), (4, 3), (2, 64)] {
            let x: Vec<f32> = noise(n * d, 3).iter().map(|v| 2.0 * v + 1.0).collect();
            let w: Vec<f32> = noise(d, 4).iter().map(|v| 1.0 + 0.3 * v).collect();
            let (b, g) = (noise(d, 5), noise(n * d, 6));
            let close = |u: &[f32], v: &[f32], what: &str| {
                let diff = u.iter().zip(v).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                assert!(diff < 1e-5, "{what} (n{n} d{d}): {diff}");
            };
            let (mut y1, mut y2) = (vec![0f32; n * d], vec![0f32; n * d]);
            layer_norm_fwd_portable(&x, &w, &b, 1e-5, &mut y1);
            layer_norm_fwd(&x, &w, &b, 1e-5, &mut y2);
            close(&y1, &y2, "y");
            let (mut o1, mut o2) = (vec![0f32; (n + 2) * d], vec![0f32; (n + 2) * d]);
            layer_norm_bwd_portable(&x, &w, &g, 1e-5, &mut o1);
            layer_norm_bwd(&x, &w, &g, 1e-5, &mut o2);
            close(&o1, &o2, "dx, dw, db");
        }
    }
}
