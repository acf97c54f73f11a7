//! Tensor-level elementwise ops with their one device dispatch: fill, add (residuals), mul
//! (gates), add_assign (gradient accumulation), concat/split along the last dimension and along
//! the first (row blocks: device-to-device copies). The CPU arms are
//! the references; the GPU arms launch `kernels/elementwise.cu` (engine::gpu::elementwise) and
//! are exact (no rounding differs: each output is one add or one copy).

use crate::engine::gpu::{self, device_ok, gpu_of};
use crate::engine::tensor::{Storage, Tensor};

/// Every value of `t` set to `v`.
pub fn fill(t: &mut Tensor, v: f32) {
    match &mut t.storage {
        Storage::Cpu(d) => d.iter_mut().for_each(|x| *x = v),
        Storage::Gpu(d) => {
            let g = d.gpu().clone();
            device_ok(gpu::elementwise::fill(&g, d, v), "fill")
        }
    }
}

/// a + b elementwise into a new tensor (residual connections).
pub fn add(a: &Tensor, b: &Tensor) -> Tensor {
    assert_eq!(a.shape, b.shape, "add: shapes differ");
    match (&a.storage, &b.storage) {
        (Storage::Cpu(x), Storage::Cpu(y)) => Tensor::from_vec(&a.shape, x.iter().zip(y).map(|(x, y)| x + y).collect()),
        (Storage::Gpu(x), Storage::Gpu(y)) => {
            let g = gpu_of(a).clone();
            let mut out = device_ok(Tensor::uninit_on(&a.shape, a.device()), "add");
            if let Storage::Gpu(o) = &mut out.storage {
                device_ok(gpu::elementwise::add(&g, o, x, y), "add");
            }
            out
        }
        _ => mixed_devices("add", a, b),
    }
}

/// a ⊙ b elementwise into a new tensor (gates).
pub fn mul(a: &Tensor, b: &Tensor) -> Tensor {
    assert_eq!(a.shape, b.shape, "mul: shapes differ");
    match (&a.storage, &b.storage) {
        (Storage::Cpu(x), Storage::Cpu(y)) => Tensor::from_vec(&a.shape, x.iter().zip(y).map(|(x, y)| x * y).collect()),
        (Storage::Gpu(x), Storage::Gpu(y)) => {
            let g = gpu_of(a).clone();
            let mut out = device_ok(Tensor::uninit_on(&a.shape, a.device()), "mul");
            if let Storage::Gpu(o) = &mut out.storage {
                device_ok(gpu::elementwise::mul(&g, o, x, y), "mul");
            }
            out
        }
        _ => mixed_devices("mul", a, b),
    }
}

/// a += b elementwise (accumulating gradients of a residual's two branches).
pub fn add_assign(a: &mut Tensor, b: &Tensor) {
    assert_eq!(a.shape, b.shape, "add_assign: shapes differ");
    match (&mut a.storage, &b.storage) {
        (Storage::Cpu(x), Storage::Cpu(y)) => x.iter_mut().zip(y).for_each(|(x, y)| *x += y),
        (Storage::Gpu(x), Storage::Gpu(y)) => {
            let g = x.gpu().clone();
            device_ok(gpu::elementwise::axpy(&g, x, y, 1.0), "add_assign")
        }
        _ => mixed_devices("add_assign", a, b),
    }
}

/// Concatenate tensors along the last dimension: (…, C₁), (…, C₂) → (…, C₁ + C₂).
pub fn concat_last(parts: &[&Tensor]) -> Tensor {
    assert!(!parts.is_empty(), "concat_last: nothing to concatenate");
    let lead = &parts[0].shape[..parts[0].shape.len() - 1];
    assert!(parts.iter().all(|p| &p.shape[..p.shape.len() - 1] == lead), "concat_last: leading shapes differ");
    let widths: Vec<usize> = parts.iter().map(|p| *p.shape.last().unwrap()).collect();
    let total: usize = widths.iter().sum();
    let rows: usize = lead.iter().product();
    let mut shape = parts[0].shape.clone();
    *shape.last_mut().unwrap() = total;
    let device = parts[0].device();
    assert!(parts.iter().all(|p| p.device() == device), "concat_last: parts on different devices");
    if !device.is_gpu() {
        let mut data = Vec::with_capacity(rows * total);
        for r in 0..rows {
            for (p, &w) in parts.iter().zip(&widths) {
                data.extend_from_slice(&p.data()[r * w..(r + 1) * w]);
            }
        }
        return Tensor::from_vec(&shape, data);
    }
    let mut out = device_ok(Tensor::uninit_on(&shape, device), "concat_last");
    let g = gpu_of(parts[0]).clone();
    let mut col = 0;
    for (p, &w) in parts.iter().zip(&widths) {
        if let Storage::Gpu(o) = &mut out.storage {
            device_ok(gpu::elementwise::copy_columns(&g, o, total, col, p.gpu_vec(), w, 0, rows, w), "concat_last");
        }
        col += w;
    }
    out
}

/// The backward of `concat_last`: split (…, Σ Cᵢ) into (…, Cᵢ) pieces.
pub fn split_last(t: &Tensor, widths: &[usize]) -> Vec<Tensor> {
    let total: usize = widths.iter().sum();
    assert_eq!(t.shape.last().copied(), Some(total), "split_last: {:?} does not end in {total}", t.shape);
    let rows = t.numel() / total.max(1);
    let shape_of = |w: usize| {
        let mut s = t.shape.clone();
        *s.last_mut().unwrap() = w;
        s
    };
    if !t.device().is_gpu() {
        let mut out: Vec<Vec<f32>> = widths.iter().map(|w| Vec::with_capacity(rows * w)).collect();
        for row in t.data().chunks_exact(total.max(1)).take(rows) {
            let mut off = 0;
            for (o, &w) in out.iter_mut().zip(widths) {
                o.extend_from_slice(&row[off..off + w]);
                off += w;
            }
        }
        return out.into_iter().zip(widths).map(|(d, &w)| Tensor::from_vec(&shape_of(w), d)).collect();
    }
    let g = gpu_of(t).clone();
    let mut col = 0;
    widths
        .iter()
        .map(|&w| {
            let mut piece = device_ok(Tensor::uninit_on(&shape_of(w), t.device()), "split_last");
            if let Storage::Gpu(o) = &mut piece.storage {
                device_ok(gpu::elementwise::copy_columns(&g, o, w, 0, t.gpu_vec(), total, col, rows, w), "split_last");
            }
            col += w;
            piece
        })
        .collect()
}

/// Concatenate tensors along the first dimension: (R₁, …), (R₂, …) → (R₁ + R₂, …).
pub fn concat_rows(parts: &[&Tensor]) -> Tensor {
    assert!(!parts.is_empty(), "concat_rows: nothing to concatenate");
    let tail = &parts[0].shape[1..];
    assert!(parts.iter().all(|p| &p.shape[1..] == tail), "concat_rows: trailing shapes differ");
    let device = parts[0].device();
    assert!(parts.iter().all(|p| p.device() == device), "concat_rows: parts on different devices");
    let mut shape = parts[0].shape.clone();
    shape[0] = parts.iter().map(|p| p.shape[0]).sum();
    if !device.is_gpu() {
        let mut data = Vec::with_capacity(shape.iter().product());
        parts.iter().for_each(|p| data.extend_from_slice(p.data()));
        return Tensor::from_vec(&shape, data);
    }
    let mut out = device_ok(Tensor::uninit_on(&shape, device), "concat_rows");
    let g = gpu_of(parts[0]).clone();
    let mut at = 0;
    for p in parts {
        if let Storage::Gpu(o) = &mut out.storage {
            device_ok(g.copy(o, at, p.gpu_vec(), 0, p.numel()), "concat_rows");
        }
        at += p.numel();
    }
    out
}

/// The backward of `concat_rows`: split (Σ Rᵢ, …) into (Rᵢ, …) pieces.
pub fn split_rows(t: &Tensor, rows: &[usize]) -> Vec<Tensor> {
    assert_eq!(rows.iter().sum::<usize>(), t.shape[0], "split_rows: {rows:?} rows from {:?}", t.shape);
    let row_len: usize = t.shape[1..].iter().product();
    let mut at = 0;
    rows.iter()
        .map(|&r| {
            let mut shape = t.shape.clone();
            shape[0] = r;
            let piece = match &t.storage {
                Storage::Cpu(d) => Tensor::from_vec(&shape, d[at..at + r * row_len].to_vec()),
                Storage::Gpu(d) => {
                    let mut piece = device_ok(Tensor::uninit_on(&shape, t.device()), "split_rows");
                    if let Storage::Gpu(o) = &mut piece.storage {
                        device_ok(d.gpu().copy(o, 0, d, at, r * row_len), "split_rows");
                    }
                    piece
                }
            };
            at += r * row_len;
            piece
        })
        .collect()
}

pub(crate) fn mixed_devices(op: &str, a: &Tensor, b: &Tensor) -> ! {
    panic!("{op}: operands on different devices ({} and {})", a.device(), b.device())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_rows_then_split_rows_round_trips_and_mul_multiplies() {
        let a = Tensor::from_vec(&[1, 2], vec![1.0, 2.0]);
        let b = Tensor::from_vec(&[2, 2], vec![3.0, 4.0, 5.0, 6.0]);
        let empty = Tensor::zeros(&[0, 2]);
        let c = concat_rows(&[&a, &empty, &b]);
        assert_eq!((c.shape.clone(), c.data()), (vec![3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0][..]));
        let parts = split_rows(&c, &[1, 0, 2]);
        assert_eq!((parts[0].data(), parts[1].shape.clone(), parts[2].data()), (a.data(), vec![0, 2], b.data()));
        assert_eq!(mul(&b, &b).data(), &[9.0, 16.0, 25.0, 36.0]);
    }
}
