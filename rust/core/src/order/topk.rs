//! Bounded best-k lists, one per row, ordered by similarity descending and
//! then by smaller id.

/// Whether `(s, id)` ranks before `(t, other)`.
#[inline]
fn better(s: f32, id: u32, t: f32, other: u32) -> bool {
    s > t || (s == t && id < other)
}

/// The best `k` candidates seen so far for each of `rows` rows.
#[derive(Clone, Debug)]
pub(crate) struct TopK {
    k: usize,
    sims: Vec<f32>,
    ids: Vec<u32>,
    len: Vec<u32>,
}

impl TopK {
    /// Empty lists for `rows` rows of capacity `k`.
    pub(crate) fn new(rows: usize, k: usize) -> Self {
        TopK {
            k,
            sims: vec![f32::NEG_INFINITY; rows * k],
            ids: vec![u32::MAX; rows * k],
            len: vec![0; rows],
        }
    }

    /// Number of candidates held for row `r` (at most `k`).
    pub(crate) fn len(&self, r: usize) -> usize {
        self.len.get(r).map_or(0, |&l| l as usize)
    }

    /// Row `r`'s ids and similarities, best first.
    pub(crate) fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let (at, len) = (r * self.k, self.len(r));
        (
            self.ids.get(at..at + len).unwrap_or(&[]),
            self.sims.get(at..at + len).unwrap_or(&[]),
        )
    }

    /// Offers candidate `id` with similarity `s` to row `r`.
    #[inline]
    fn push(&mut self, r: usize, s: f32, id: u32) {
        let k = self.k;
        let base = r * k;
        let (Some(len), Some(ids), Some(sims)) = (
            self.len.get_mut(r),
            self.ids.get_mut(base..base + k),
            self.sims.get_mut(base..base + k),
        ) else {
            return;
        };
        let mut pos = if (*len as usize) < k {
            *len += 1;
            *len as usize - 1
        } else if k > 0 && better(s, id, sims[k - 1], ids[k - 1]) {
            k - 1
        } else {
            return;
        };
        while pos > 0 && better(s, id, sims[pos - 1], ids[pos - 1]) {
            sims[pos] = sims[pos - 1];
            ids[pos] = ids[pos - 1];
            pos -= 1;
        }
        sims[pos] = s;
        ids[pos] = id;
    }

    /// The similarity a candidate must reach to enter row `r`.
    #[inline]
    fn bar(&self, r: usize) -> f32 {
        match self.k {
            0 => f32::INFINITY,
            k if self.len(r) < k => f32::NEG_INFINITY,
            k => self
                .sims
                .get(r * k + k - 1)
                .copied()
                .unwrap_or(f32::INFINITY),
        }
    }

    /// Offers the candidates `ids` with similarities `sims` (same length) to
    /// row `r`, whose own id `own` is skipped.
    pub(crate) fn offer_row(&mut self, r: usize, own: u32, sims: &[f32], ids: &[u32]) {
        let mut bar = self.bar(r);
        for (&s, &id) in sims.iter().zip(ids) {
            if s >= bar && id != own {
                self.push(r, s, id);
                bar = self.bar(r);
            }
        }
    }

    /// Offers column `col` of the row-major `matrix` (row stride `stride`) to
    /// row `r`: its entry in row `i` is the similarity to candidate `ids[i]`.
    pub(crate) fn offer_column(
        &mut self,
        r: usize,
        own: u32,
        matrix: &[f32],
        stride: usize,
        col: usize,
        ids: &[u32],
    ) {
        let mut bar = self.bar(r);
        let column = matrix
            .get(col..)
            .unwrap_or(&[])
            .iter()
            .step_by(stride.max(1));
        for (&s, &id) in column.zip(ids) {
            if s >= bar && id != own {
                self.push(r, s, id);
                bar = self.bar(r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn keeps_the_best_k_in_order(k in 1usize..8,
                                     cands in proptest::collection::vec((0u8..20, 0u32..50), 0..60)) {
            let mut top = TopK::new(1, k);
            let (sims, ids): (Vec<f32>, Vec<u32>) =
                cands.iter().map(|&(s, id)| (s as f32, id)).unzip();
            // distinct ids, as the join offers each candidate once
            let mut seen = std::collections::HashSet::new();
            let keep: Vec<usize> = (0..ids.len()).filter(|&i| seen.insert(ids[i])).collect();
            let sims: Vec<f32> = keep.iter().map(|&i| sims[i]).collect();
            let ids: Vec<u32> = keep.iter().map(|&i| ids[i]).collect();
            top.offer_row(0, 7, &sims, &ids);
            let mut want: Vec<(f32, u32)> =
                sims.iter().zip(&ids).map(|(&s, &i)| (s, i)).filter(|&(_, i)| i != 7).collect();
            want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            want.truncate(k);
            let (gi, gs) = top.row(0);
            let got: Vec<(f32, u32)> = gs.iter().zip(gi).map(|(&s, &i)| (s, i)).collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn a_column_is_offered_like_a_row() {
        // 3×2 matrix, column 1 = [0.5, 0.9, 0.1]
        let m = [0.0, 0.5, 0.0, 0.9, 0.0, 0.1];
        let mut top = TopK::new(1, 2);
        top.offer_column(0, 99, &m, 2, 1, &[10, 11, 12]);
        assert_eq!(top.row(0), (&[11u32, 10][..], &[0.9f32, 0.5][..]));
    }
}
