//! Dense inner products between two sets of row vectors, through one
//! cache-blocked SIMD matrix product: the `gemm` crate (kernels chosen at
//! run time, AVX-512 where the CPU has it) for outputs at least as tall as
//! wide or at least [`GEMM_ROWS`] rows, `matrixmultiply` (AVX2) for short,
//! wide ones, where `gemm` is the slower of the two on the row-major output
//! asked for here (measured on a 2-core AVX-512 Xeon: `gemm` 1.1-2.3x faster
//! for 256-2,048 × 64-2,048 outputs at 384-1,024 dims; 0.5-0.9x for 16-128
//! rows × 1,024 columns at 768-1,024 dims).
//!
//! Public (hidden from the docs) for the kernel benchmarks in `benches/`,
//! which time both kernels on either side of the threshold.
#![allow(unsafe_code)]

/// Output rows from which `gemm` is used even for a wider output.
pub const GEMM_ROWS: usize = 256;

/// The matrix-product kernel that computes an output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// The `gemm` crate.
    Gemm,
    /// The `matrixmultiply` crate.
    MatrixMultiply,
}

/// The kernel [`dot_rows`] uses for an `[m, c]` output.
pub fn kernel_for(m: usize, c: usize) -> Kernel {
    if m >= c || m >= GEMM_ROWS {
        Kernel::Gemm
    } else {
        Kernel::MatrixMultiply
    }
}

/// Sets `out` to the `[m, c]` row-major matrix of inner products `a_i · b_j`
/// between the `m` rows of `a` and the `c` rows of `b` (both row-major with
/// `dim` columns; a trailing partial row is ignored). `out` is resized, so a
/// buffer can be reused across calls without reallocating. One thread: the
/// callers split their work across the thread pool themselves.
pub fn dot_rows(a: &[f32], b: &[f32], dim: usize, out: &mut Vec<f32>) {
    let m = a.len().checked_div(dim).unwrap_or(0);
    let c = b.len().checked_div(dim).unwrap_or(0);
    dot_rows_with(kernel_for(m, c), a, b, dim, out);
}

/// [`dot_rows`] through the given kernel, whatever the output's shape.
pub fn dot_rows_with(kernel: Kernel, a: &[f32], b: &[f32], dim: usize, out: &mut Vec<f32>) {
    out.clear();
    if dim == 0 {
        return;
    }
    let (m, c) = (a.len() / dim, b.len() / dim);
    out.resize(m * c, 0.0);
    if m == 0 || c == 0 {
        return;
    }
    let (d, cs) = (dim as isize, c as isize);
    // SAFETY: `a` holds at least m×dim floats read with row stride dim,
    // `b` at least c×dim floats read as its transpose (dim×c: row stride 1,
    // column stride dim), and `out` exactly m×c floats written with row
    // stride c; every index either product touches is inside these bounds.
    // (`gemm` computes `dst = alpha·dst + beta·lhs·rhs`, with strides given
    // column first: alpha 0 and `read_dst` false, beta 1.)
    unsafe {
        if kernel == Kernel::Gemm {
            gemm::gemm(
                m,
                c,
                dim,
                out.as_mut_ptr(),
                1,
                cs,
                false,
                a.as_ptr(),
                1,
                d,
                b.as_ptr(),
                d,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        } else {
            matrixmultiply::sgemm(
                m,
                dim,
                c,
                1.0,
                a.as_ptr(),
                d,
                1,
                b.as_ptr(),
                1,
                d,
                0.0,
                out.as_mut_ptr(),
                cs,
                1,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Both kernels, and the one chosen by shape (tall and short-wide
        /// outputs, below and above `GEMM_ROWS` rows), equal direct sums.
        #[test]
        fn matches_naive_products(m in 0usize..300, c in 0usize..300, dim in 1usize..24,
                                  seed in any::<u64>()) {
            let gen = |len: usize, salt: u64| -> Vec<f32> {
                (0..len)
                    .map(|i| {
                        let h = crate::shuffle::mix64(seed ^ salt ^ i as u64);
                        (h % 2001) as f32 / 1000.0 - 1.0
                    })
                    .collect()
            };
            let (a, b) = (gen(m * dim, 1), gen(c * dim, 2));
            let mut outs = vec![vec![7.0; 3]; 3];
            dot_rows(&a, &b, dim, &mut outs[0]);
            dot_rows_with(Kernel::Gemm, &a, &b, dim, &mut outs[1]);
            dot_rows_with(Kernel::MatrixMultiply, &a, &b, dim, &mut outs[2]);
            for out in &outs {
                prop_assert_eq!(out.len(), m * c);
                for i in 0..m {
                    for j in 0..c {
                        let want: f32 = (0..dim).map(|t| a[i * dim + t] * b[j * dim + t]).sum();
                        prop_assert!((out[i * c + j] - want).abs() < 1e-4);
                    }
                }
            }
        }
    }
}
