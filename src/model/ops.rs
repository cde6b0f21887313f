//! Fused CPU kernels with their own backward, for the transformer's hot path.
//!
//! candle composes layer norm and softmax from many elementwise ops, each allocating its
//! output (and, in backward, a zeroed gradient buffer); its fused versions have no backward.
//! The ops here are candle custom ops: one f32 loop over contiguous rows forward, one
//! backward, both CPU only. The public functions dispatch: on a CPU device they run the
//! fused kernel, elsewhere (CUDA) the composed candle ops, so models run on every device.
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
        let d = w.len();
        let mut y = Vec::with_capacity(x.len());
        for xr in x.chunks_exact(d) {
            let (mean, s) = row_stats(xr, self.eps);
            y.extend(xr.iter().zip(w).zip(b).map(|((&v, &w), &b)| (v - mean) / s * w + b));
        }
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
        let inv_d = (1.0 / d as f64) as f32;
        let mut out = Vec::with_capacity((n + 2) * d);
        let mut dw = vec![0f32; d];
        let mut db = vec![0f32; d];
        let mut xhat = vec![0f32; d];
        for (xr, gr) in x.chunks_exact(d).zip(g.chunks_exact(d)) {
            let (mean, s) = row_stats(xr, self.eps);
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
            out.extend((0..d).map(|j| (gr[j] * w[j] - m1 - xhat[j] * m2) / s));
        }
        out.extend_from_slice(&dw);
        out.extend_from_slice(&db);
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
