//! Dense inner products between two sets of row vectors, through one call
//! to the `gemm` crate (cache-blocked, SIMD kernels chosen at run time:
//! AVX-512 where the CPU has it).
#![allow(unsafe_code)]

/// Sets `out` to the `[m, c]` row-major matrix of inner products `a_i · b_j`
/// between the `m` rows of `a` and the `c` rows of `b` (both row-major with
/// `dim` columns; a trailing partial row is ignored). `out` is resized, so a
/// buffer can be reused across calls without reallocating. One thread: the
/// callers split their work across the thread pool themselves.
pub(crate) fn dot_rows(a: &[f32], b: &[f32], dim: usize, out: &mut Vec<f32>) {
    out.clear();
    if dim == 0 {
        return;
    }
    let (m, c) = (a.len() / dim, b.len() / dim);
    out.resize(m * c, 0.0);
    if m == 0 || c == 0 {
        return;
    }
    // SAFETY: `a` holds at least m×dim floats read with row stride dim,
    // `b` at least c×dim floats read as its transpose (dim×c: row stride 1,
    // column stride dim), and `out` exactly m×c floats written with row
    // stride c (never read: `read_dst` is false); every index the product
    // touches is inside these bounds. (The crate computes
    // `dst = alpha·dst + beta·lhs·rhs`: alpha 0, beta 1.)
    unsafe {
        gemm::gemm(
            m,
            c,
            dim,
            out.as_mut_ptr(),
            1,
            c as isize,
            false,
            a.as_ptr(),
            1,
            dim as isize,
            b.as_ptr(),
            dim as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_naive_products(m in 0usize..9, c in 0usize..9, dim in 1usize..17,
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
            let mut out = vec![7.0; 3];
            dot_rows(&a, &b, dim, &mut out);
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
